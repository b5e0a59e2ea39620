"""IMPRESS purification (Cao et al., NeurIPS 2023, §4.2, eq. 4.3, Alg. 1).

The exploiter looks for an image close to the protected one whose reconstruction by the latent
diffusion model's autoencoder is itself (the consistency condition):

    min_x  ‖x − D(E(x))‖² + α · max(LPIPS(x, x_ptb) − Δ, 0),   x ∈ [0, 1]

starting from x_ptb + N(0, s²), clamped to the pixel range after every step. ``E`` returns the
posterior mean (no sampling), ``D`` decodes it; the model is the purifier's (by default the
audited one: ``model: audited``).

As the authors' released ``impress.py`` (not Alg. 1's plain gradient steps): Adam with a
cosine schedule from ``lr`` down to ``lr_floor`` over the iterations, the start not clamped
before the first step. All values are in [0, 1] pixel units, the authors' code works in
[−1, 1]: ``lr``, ``noise_std`` and ``lr_floor`` are half of theirs, Adam's ``eps`` is twice
theirs (2e-5 for their 1e-5), and the consistency term is written as 4 × the [0, 1] mean
squared error (the [0, 1] MSE is a quarter of theirs), so the loss values equal theirs and the
optimisation is the same one (tests/test_impress.py checks this against a [−1, 1] version).

Where we differ from the authors' code:

* fp32, not fp16. In fp16 Adam's second moment underflows at 512 px (the consistency
  gradient's median is ≈ 2e-7 there): most pixels never move.
* All images in one optimisation (their batch is 1). The loss is the sum of the per-image
  losses and Adam is element-wise, so each image follows the trajectory it would alone.
* The output is rounded to the nearest 8-bit level; their save truncates (−0.5 level on average).
* LPIPS is lpips' VGG16 (as theirs) when torchvision's ``vgg16-397923af.pth`` is found (in
  ``$PROTECTION_AUDIT_WEIGHTS`` or torch hub's checkpoint folder); otherwise 1 − SSIM (piq,
  data range 1) takes its place with the same Δ, and the case's record says "IMPRESS with
  1 − SSIM instead of LPIPS". ``perceptual: lpips`` refuses the substitute.

Adam's eps exceeds the gradients: the consistency term is a mean over the 3·H·W values, so a
pixel's gradient shrinks with the image's area, and while it is below eps a step is ≈ lr·g/eps
rather than lr. At 64 px (the smoke tier) the gradients are 64× those at 512 px, so the same
settings move pixels further per iteration than the authors' 512-px runs did: a 64-px run with
the papers' settings purifies more strongly than the paper's, not less.

Cost: ≈ 0.5 s per image per iteration on the tiny model at 64 px on 2 busy CPU cores
(benchmarks/bench_purifiers.py), so the scenarios' 1000 and 3000 iterations take hours there.
The smoke tier caps them (``max_iterations``, recorded with its origin, the tier); the cosine
schedule then runs over the capped count.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field

from audit.parts.transforms.context import AUDITED, TransformContext, TransformUnavailable, quantize
from audit.parts.transforms.corruptions import TransformParams

Distance = Callable[
    [torch.Tensor, torch.Tensor], torch.Tensor
]  # (x, x_ptb) in [0,1] → one value per image


class ImpressParams(TransformParams):
    """IMPRESS's settings in [0, 1] units; the defaults are the authors' Glaze script (Δ 0.1,
    lr 0.01, 3000 it, α 0.1, noise 0.1 in [−1, 1])."""

    iterations: int = Field(3000, ge=1, le=100_000, description="Adam steps")
    max_iterations: int | None = Field(
        None, ge=1, description="a tier's cap on iterations (the smoke tier's; None: none)")
    lr: float = Field(0.005, gt=0, le=1, description="peak learning rate, [0,1] units (theirs ×½)")
    lr_floor: float = Field(
        5e-6, ge=0, le=1, description="cosine schedule's final lr, [0,1] units (their 1e-5 ×½)"
    )
    adam_eps: float = Field(2e-5, gt=0, description="Adam's eps in [0,1] units (their 1e-5 ×2)")
    alpha: float = Field(0.1, ge=0, description="weight of the perceptual hinge")
    delta: float = Field(0.1, ge=0, le=1, description="perceptual budget Δ (LPIPS units)")
    noise_std: float = Field(
        0.05, ge=0, le=1, description="std of the starting noise, [0,1] units (theirs ×½)"
    )
    perceptual: Literal["auto", "lpips", "1-ssim"] = Field(
        "auto", description="auto: LPIPS-VGG when its weights are here, else 1 − SSIM (recorded)"
    )
    model: str = Field(
        AUDITED, description="the purifier's model: 'audited', a diffusers folder or a hub id"
    )


def vae_reconstruction(vae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """x in [0,1] → D(E(x)) in [0,1] through the posterior mean, in fp32."""
    if next(vae.parameters()).dtype != torch.float32:
        vae = copy.deepcopy(vae).float()

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(x * 2 - 1).latent_dist.mean
        return (vae.decode(latents).sample + 1) / 2

    return reconstruct


def one_minus_ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 − SSIM per image (piq, data range 1, kernel 11 or the largest odd size that fits)."""
    import piq

    side = min(x.shape[-2:])
    kernel = min(11, side - (1 - side % 2))
    return 1 - piq.ssim(
        x.clamp(0, 1), reference, data_range=1.0, reduction="none", kernel_size=kernel
    )


def lpips_distance(device: torch.device) -> Distance:
    """lpips' LPIPS-VGG (the toolkit's imperceptibility metric's network), inputs in [0,1]."""
    from audit.parts.metrics.imperceptibility import _lpips

    network = _lpips().to(device)
    for p in network.parameters():
        p.requires_grad_(False)
    return lambda x, ref: network(x, ref, normalize=True).flatten()


def perceptual_distance(
    choice: str, device: torch.device, context: TransformContext | None
) -> Distance:
    """The hinge's distance: LPIPS-VGG when available (or required), else 1 − SSIM, noted."""
    from audit.parts.metrics.imperceptibility import lpips_missing

    if choice == "1-ssim":
        return one_minus_ssim
    why = lpips_missing()
    if why is None:
        return lpips_distance(device)
    if choice == "lpips":
        raise TransformUnavailable(f"unavailable: LPIPS weights not found for IMPRESS — {why}")
    if context is not None:
        context.note(
            "IMPRESS with 1 − SSIM instead of LPIPS (LPIPS-VGG's weights not found here: put "
            "torchvision's vgg16-397923af.pth in $PROTECTION_AUDIT_WEIGHTS or torch hub's "
            "checkpoints folder)"
        )
    return one_minus_ssim


def impress_loss(
    x: torch.Tensor,
    x_ptb: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    distance: Distance,
    alpha: float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed loss, per-image consistency in [−1, 1] units, per-image perceptual distance)."""
    consistency = 4 * (x - reconstruct(x)).pow(2).flatten(1).mean(1)  # = their MSE in [−1, 1]
    dist = distance(x, x_ptb)
    return (
        (consistency + alpha * torch.relu(dist - delta)).sum(),
        consistency.detach(),
        dist.detach(),
    )


def impress_optimise(
    x_ptb: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    distance: Distance,
    params: ImpressParams,
    generator: torch.Generator,
    history: list[dict[str, list[float]]] | None = None,
) -> torch.Tensor:
    """Alg. 1 as the authors' code runs it, all images at once; ``history`` (when given)
    receives each step's per-image loss terms. Returns the purified images in [0,1] (float,
    not yet rounded)."""
    x_ptb = x_ptb.float()
    noise = torch.randn(x_ptb.shape, generator=generator).to(x_ptb.device)
    x = (x_ptb + params.noise_std * noise).requires_grad_(
        True
    )  # not clamped before the first step (as theirs)
    steps = min(params.iterations, params.max_iterations or params.iterations)
    optimizer = torch.optim.Adam([x], lr=params.lr, eps=params.adam_eps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=params.lr_floor
    )
    for _ in range(steps):
        loss, consistency, dist = impress_loss(
            x, x_ptb, reconstruct, distance, params.alpha, params.delta
        )
        (x.grad,) = torch.autograd.grad(loss, x)  # no gradients accumulate in the model's weights
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        if history is not None:
            history.append(
                {
                    "consistency": consistency.tolist(),
                    "distance": dist.tolist(),
                    "loss": [float(loss.detach())],
                }
            )
    return x.detach()


def impress(
    images: torch.Tensor,
    params: ImpressParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """Purify a batch (N×3×H×W, [0,1]) with IMPRESS through the context's model (module doc)."""
    if context is None or context.model is None:
        raise TransformUnavailable(
            "unavailable: IMPRESS needs the purifier's model (a latent diffusion model's VAE); "
            "run it through the audit engine, which passes the audited model"
        )
    device = context.device
    vae = context.model.vae
    distance = perceptual_distance(params.perceptual, device, context)
    reconstruct = vae_reconstruction(vae)
    with torch.enable_grad():
        out = impress_optimise(images.to(device), reconstruct, distance, params, generator)
    return quantize(out).cpu()


def impress_differentiable(
    images: torch.Tensor,
    params: ImpressParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """IMPRESS's differentiable surrogate for an adaptive protector: the purifier model's
    reconstruction D(E(x + s·ε)) of the noised start, ε ~ N(0, I) from ``generator`` (the
    reconstruction is the consistent image IMPRESS's optimisation moves towards, eq. 4.3's
    first term at its minimum; its perceptual hinge keeps the result near x, which this
    surrogate ignores). Differentiable in x; fp32; not rounded (the protector's gradient goes
    through it)."""
    if context is None or context.model is None:
        raise TransformUnavailable(
            "unavailable: IMPRESS's surrogate needs the purifier's model (a latent diffusion "
            "model's VAE); run it through the audit engine, which passes the audited model"
        )
    x = images.to(context.device)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    reconstruct = vae_reconstruction(context.model.vae)
    return reconstruct(x + params.noise_std * noise).clamp(0, 1)


impress.differentiable = impress_differentiable  # type: ignore[attr-defined]
