"""Total variation minimisation (TVM) purification, DiffShortcut's recipe (App. C.1 item 2).

DiffShortcut (after Guo et al., ICLR 2018 "Countering adversarial images using input
transformations", and Wang et al. 2020) resizes each image to 64×64, drops each value with
probability 2 % (a Bernoulli mask X over H×W×C) and solves

    min_Z  ‖(1 − X) ⊙ (Z − x)‖₂  +  λ_TV · TV₂(Z),      λ_TV = 0.01,

TV₂(Z) = Σ_rows ‖Z[i+1, :] − Z[i, :]‖₂ + Σ_cols ‖Z[:, j+1] − Z[:, j]‖₂ (Guo et al.'s TV_p with
p = 2), then upsamples to 512×512.

How this implementation differs from the reference code (``defenses/tvm.py`` of DiffShortcut):

* **Solver.** The reference calls cvxpy with MOSEK, a commercial interior-point solver. Here the
  same convex problem is solved with the first-order primal-dual algorithm of Chambolle & Pock
  (J. Math. Imaging Vis. 2011) in torch, a fixed number of iterations (``iterations``), so the
  result is an approximation of the minimiser whose accuracy is set by the iteration count
  (tests check that more iterations stop changing the result and that it lowers the objective).
* **TV per channel.** The reference reshapes H×W×C to H×(W·C), so its column differences run
  across the interleaved colour channels (R−G, G−B, B−next R). Here each channel's rows and
  columns are differenced separately, as Guo et al. define TV_p.
* **Upsampling.** The paper upsamples 64 → 512 with two super-resolution models; the released
  code stores the 64×64 result, which DreamBooth's data loader resizes (bilinear). Here it is
  resized back to the input size with bicubic interpolation; no super-resolution model is used.
* **Size.** Images larger than ``work_size`` are resized (bicubic, antialiased; the reference
  uses Pillow's Lanczos) so their longer side is ``work_size``; smaller images are processed at
  their own size (on the smoke tier's 64-px images TVM runs at full resolution). The reference's
  final ``uint8(Z·255)`` without clipping wraps out-of-range values; here Z is clamped to [0, 1].

The mask is drawn from the seeded generator: the transform is random, deterministic per seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.parts.registry import Params


class TvmParams(Params):
    """DiffShortcut App. C.1: 64×64, 2 % dropped, λ_TV 0.01."""

    work_size: int = Field(64, ge=8, le=4096, description="longer side (px) TVM runs at; larger "
                                                          "images are resized down")
    drop_rate: float = Field(0.02, ge=0, lt=1, description="probability that a value is dropped "
                                                           "from the fidelity term")
    tv_weight: float = Field(0.01, gt=0, le=100, description="λ_TV")
    iterations: int = Field(1000, ge=1, le=100_000, description="Chambolle-Pock iterations")


def _grad(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of C×H×W along rows (C×(H−1)×W) and columns (C×H×(W−1))."""
    return z[:, 1:, :] - z[:, :-1, :], z[:, :, 1:] - z[:, :, :-1]


def _grad_adjoint(rows: torch.Tensor, cols: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The adjoint of ``_grad`` (minus the divergence)."""
    out = torch.zeros(shape, dtype=rows.dtype)
    out[:, 1:, :] += rows
    out[:, :-1, :] -= rows
    out[:, :, 1:] += cols
    out[:, :, :-1] -= cols
    return out


def _project(groups: torch.Tensor, dim: int, radius: float) -> torch.Tensor:
    """Each group (a vector along ``dim``) projected onto the ℓ2 ball of ``radius``."""
    norm = groups.norm(dim=dim, keepdim=True)
    return groups / torch.clamp(norm / radius, min=1.0)


def tvm_objective(z: torch.Tensor, x: torch.Tensor, keep: torch.Tensor, tv_weight: float) -> float:
    """‖keep ⊙ (z − x)‖₂ + λ·TV₂(z) for one C×H×W image (TV₂ per channel, Guo et al.)."""
    rows, cols = _grad(z)
    tv = rows.norm(dim=2).sum() + cols.norm(dim=1).sum()
    return float((keep * (z - x)).norm() + tv_weight * tv)


def tvm_solve(
        x: torch.Tensor, keep: torch.Tensor, tv_weight: float, iterations: int) -> torch.Tensor:
    """Approximate minimiser of ``tvm_objective`` for one C×H×W image by Chambolle-Pock.

    K z = (rows, cols, keep ⊙ z); the dual variables are projected onto the ℓ2 balls of the
    conjugates (radius λ per row / column group, radius 1 for the fidelity norm, shifted by
    keep ⊙ x). Steps τ = σ = 0.99/‖K‖ with ‖K‖² ≤ 4 + 4 + 1. Float64 throughout; dropped
    values start at the mean of the kept ones, so the solver never sees them.
    """
    x = x.double()
    keep = keep.double()
    target = keep * x
    fill = target.sum() / keep.sum().clamp(min=1)
    z = target + (1 - keep) * fill
    z_bar = z.clone()
    step = 0.99 / 3.0
    rows_dual = torch.zeros_like(z[:, 1:, :])
    cols_dual = torch.zeros_like(z[:, :, 1:])
    fid_dual = torch.zeros_like(z)
    for _ in range(iterations):
        rows, cols = _grad(z_bar)
        rows_dual = _project(rows_dual + step * rows, dim=2, radius=tv_weight)
        cols_dual = _project(cols_dual + step * cols, dim=1, radius=tv_weight)
        shifted = fid_dual + step * (keep * z_bar) - step * target
        fid_dual = shifted / torch.clamp(shifted.norm(), min=1.0)
        z_next = z - step * (_grad_adjoint(rows_dual, cols_dual, z.shape) + keep * fid_dual)
        z_bar = 2 * z_next - z
        z = z_next
    return z


def tvm(images: torch.Tensor, params: TvmParams, generator: torch.Generator) -> torch.Tensor:
    """Resize to ``work_size`` (if larger), drop ``drop_rate`` of the values (Bernoulli mask
    from ``generator``), TV-regularised reconstruction by ``tvm_solve``, resize back (bicubic),
    clamp to [0, 1]."""
    h, w = images.shape[-2:]
    scale = min(1.0, params.work_size / max(h, w))
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    work = images.detach().cpu().float()
    if small != (h, w):
        work = F.interpolate(
            work, size=small, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    out = []
    for image in work:
        keep = (torch.rand(image.shape, generator=generator, dtype=torch.float64)
                >= params.drop_rate).double()
        out.append(tvm_solve(image, keep, params.tv_weight, params.iterations).float())
    result = torch.stack(out)
    if small != (h, w):
        result = F.interpolate(result, size=(h, w), mode="bicubic", align_corners=False)
    return result.clamp(0, 1).to(images.device)
