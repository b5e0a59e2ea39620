"""Does PID's mechanism act on a VAE? Measured in seconds, before any fine-tune (issue 18).

    ./dev python benchmarks/bench_miniature.py [--vae audit/models/weights/tiny] [--device cpu]
        [--steps 100] [--json probe.json]

PID (Li et al., ICML 2024) works on Stable Diffusion because an ℓ∞ perturbation of ε = 0.05
moves the VAE encoder's posterior strongly: §4 and Fig. 4 ("the gap between the variance of
clean images and that of perturbed images ranges from approximately 2^-15 to 2^12"), §5.1 and
Fig. 5 (under L_add-log the mean moves by an averaged ℓ2 distance of 3.5 and the variance by
0.06; Fig. 5b plots log σ²(x+δ) − log σ²(x)), §6.4 ("PID causes the variance of the latent
distribution to increase dramatically"). This probe measures the same on a candidate VAE, on
the bundled subject (``audit.data.subjects.bundled_subject`` at the VAE's ``sample_size``, 4 images), for three perturbations:

- ``pid``: PGD on the toolkit's own PID objective (``audit.protections.pid.pid_objective``,
  ``add-log`` = MSE(log σ²) + MSE(μ) as in PID's reference code) — the toolkit's PGD exactly:
  init uniform in [−ε, ε] from a generator seeded with ``seed``, signed-gradient steps of
  ``step_size``, ℓ∞ projection and [0, 1] clipping, then 8-bit rounding projected within the
  budget (``quantize_within_budget``), i.e. what the toolkit publishes;
- ``sigma``: the same PGD maximising the mean log σ² (push the variance up, nothing else);
- ``noise``: uniform noise in [−ε, ε], quantised the same way (the ``random`` protection).

Per perturbation (on the 8-bit result): RMS shift of log σ² (nats) and its signed mean (Fig.
5b's quantity), mean σ before → after, the variance ratio σ²_after/σ²_before (mean, median,
90th percentile, max), the RMS shift of μ over the spread (std) of clean μ, RMS σ over the
spread of μ before → after (how noisy the latents that DreamBooth samples are), the share of
log σ² at diffusers' clamp (−30, where the gradient is zero), and MSE / PSNR of decode(μ)
against the clean decode(μ). For the VAE: held-out reconstruction PSNR / SSIM as
``training/train_tiny.py`` reports it (256 crops of the held-out strips, seed 2), the
subject's, parameters and forward GFLOPs of encoder and decoder (the audit's CPU cost).

If ``audit.protections`` cannot be imported (it needs pydantic), ``posterior``,
``pid_objective`` and ``quantize_within_budget`` are replicated below line for line and the
result says ``"objective_source": "replica"``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))

LOGVAR_CLAMP = -30.0  # diffusers' DiagonalGaussianDistribution clamps log σ² to [−30, 20]

try:  # the toolkit's own PID objective and 8-bit projection
    from audit.parts.protections.base import quantize_within_budget
    from audit.parts.protections.pid import pid_objective, posterior

    OBJECTIVE_SOURCE = "audit.parts.protections.pid"
except Exception as exc:  # pragma: no cover - e.g. pydantic missing; any import failure falls back
    OBJECTIVE_SOURCE = f"replica ({type(exc).__name__}: {exc})"

    def posterior(vae: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Replica of ``audit.protections.pid.posterior``."""
        dist = vae.encode(images * 2 - 1).latent_dist
        return dist.mean, dist.logvar

    def pid_objective(mean: torch.Tensor, logvar: torch.Tensor, clean_mean: torch.Tensor,
                      clean_logvar: torch.Tensor, objective: str = "add-log") -> torch.Tensor:
        """Replica of ``audit.protections.pid.pid_objective`` (add-log only)."""
        if objective != "add-log":
            raise ValueError("the replica implements add-log only")

        def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(a, b, reduction="none").flatten(1).mean(1)

        return mse(logvar, clean_logvar) + mse(mean, clean_mean)

    def _to_uint8(images: torch.Tensor) -> torch.Tensor:
        return torch.round(images.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()

    def quantize_within_budget(clean: torch.Tensor, protected: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Replica of ``audit.protections.base.quantize_within_budget``."""
        clean_u8 = _to_uint8(clean).to(torch.int16)
        prot_u8 = _to_uint8(protected).to(torch.int16)
        k = int(math.floor(255 * epsilon + 1e-6))
        return torch.clamp(prot_u8, clean_u8 - k, clean_u8 + k).clamp(0, 255).to(torch.uint8)


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def pid_add_log(mean: torch.Tensor, logvar: torch.Tensor, clean_mean: torch.Tensor,
                clean_logvar: torch.Tensor) -> torch.Tensor:
    """PID's default objective (toolkit ``add-log``), per image."""
    return pid_objective(mean, logvar, clean_mean, clean_logvar, "add-log")


def sigma_only(mean: torch.Tensor, logvar: torch.Tensor, clean_mean: torch.Tensor,
               clean_logvar: torch.Tensor) -> torch.Tensor:
    """Mean log σ² per image: the σ-only attack (push the variance up, nothing else)."""
    return logvar.flatten(1).mean(1)


ATTACKS: dict[str, Objective | None] = {"pid": pid_add_log, "sigma": sigma_only, "noise": None}


def load_vae(vae: torch.nn.Module | str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """An ``AutoencoderKL`` from a module or a folder (the VAE's own, or a model folder with
    ``vae/``), in fp32 as the toolkit loads it."""
    if isinstance(vae, torch.nn.Module):
        return vae
    from diffusers import AutoencoderKL

    folder = Path(vae)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    return AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).to(device)


def pgd(vae: torch.nn.Module, x: torch.Tensor, objective: Objective, *, epsilon: float, steps: int,
        step_size: float, seed: int) -> torch.Tensor:
    """The toolkit's PID loop (``PID.protect``) on any per-image objective; returns uint8."""
    device = x.device
    generator = torch.Generator().manual_seed(seed)
    delta = ((2 * torch.rand(x.shape, generator=generator) - 1) * epsilon).to(device)
    delta = (x + delta).clamp(0, 1) - x
    with torch.no_grad():
        clean_mean, clean_logvar = posterior(vae, x)
    for _ in range(steps):
        delta.requires_grad_(True)
        mean, logvar = posterior(vae, x + delta)
        loss = objective(mean, logvar, clean_mean, clean_logvar)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            delta = delta + step_size * grad.sign()
            delta = delta.clamp(-epsilon, epsilon)
            delta = (x + delta).clamp(0, 1) - x
    return quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), epsilon)


def uniform_noise(x: torch.Tensor, *, epsilon: float, seed: int) -> torch.Tensor:
    """The toolkit's ``random`` protection: uniform in [−ε, ε], 8-bit within the budget."""
    generator = torch.Generator().manual_seed(seed)
    noise = (2 * torch.rand(x.shape, generator=generator) - 1) * epsilon
    return quantize_within_budget(x.cpu(), (x.cpu() + noise).clamp(0, 1), epsilon)


def _decode01(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    return ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)


def _r(value: float | torch.Tensor, digits: int = 4) -> float:
    value = float(value)
    return value if not math.isfinite(value) else round(value, digits)


def compare(vae: torch.nn.Module, clean: torch.Tensor, attacked: torch.Tensor) -> dict[str, Any]:
    """How far the posterior and the decoded mean move from clean to attacked ([0, 1] floats)."""
    with torch.no_grad():
        m0, lv0 = posterior(vae, clean)
        m1, lv1 = posterior(vae, attacked)
        shift = lv1 - lv0
        ratio = torch.exp(shift).flatten().cpu().double()
        spread = m0.std()
        mse = F.mse_loss(_decode01(vae, m1), _decode01(vae, m0))
        levels = int(((attacked * 255).round() - (clean * 255).round()).abs().max())
        return {
            "rms_logvar_shift": _r(shift.pow(2).mean().sqrt()),
            "mean_logvar_shift": _r(shift.mean()),
            "mean_logvar": [_r(lv0.mean(), 3), _r(lv1.mean(), 3)],
            "mean_sigma": [_r(torch.exp(0.5 * lv0).mean(), 5), _r(torch.exp(0.5 * lv1).mean(), 5)],
            "var_ratio_mean": _r(ratio.mean(), 3),
            "var_ratio_median": _r(ratio.median(), 3),
            "var_ratio_p90": _r(torch.quantile(ratio, 0.9), 3),
            "var_ratio_max": _r(ratio.max(), 3),
            "log2_var_ratio_mean": _r(math.log2(float(ratio.mean())), 2),
            "rms_mu_shift": _r((m1 - m0).pow(2).mean().sqrt()),
            "mu_spread": _r(spread),
            "rms_mu_shift_over_spread": _r((m1 - m0).pow(2).mean().sqrt() / spread),
            "mean_sq_mu_shift": _r((m1 - m0).pow(2).mean()),  # PID Fig. 5a's quantity, per element
            "rms_sigma_over_mu_spread": [_r(lv0.exp().mean().sqrt() / spread), _r(lv1.exp().mean().sqrt() / spread)],
            "share_logvar_at_clamp": [_r((lv0 <= LOGVAR_CLAMP + 1e-3).float().mean()),
                                      _r((lv1 <= LOGVAR_CLAMP + 1e-3).float().mean())],
            "pid_objective": _r(pid_add_log(m1, lv1, m0, lv0).mean(), 5),
            "decode_mse": _r(mse, 6),
            "decode_psnr_db": _r(10 * math.log10(1 / max(float(mse), 1e-12)), 2),
            "linf_levels": levels,
        }


def cost(vae: torch.nn.Module) -> dict[str, Any]:
    """Parameters and forward GFLOPs per image at the VAE's ``sample_size`` (encoder: what PID's
    PGD pays per step)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(vae.parameters()).device
    size = int(vae.config.sample_size)
    x = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as encoder:
            latents = vae.encode(x).latent_dist.mean
        with FlopCounterMode(display=False) as decoder:
            vae.decode(latents)
    return {
        "params_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 3),
        "encoder_params_m": round(sum(p.numel() for p in vae.encoder.parameters()) / 1e6, 3),
        "encoder_gflops": round(encoder.get_total_flops() / 1e9, 3),
        "decoder_gflops": round(decoder.get_total_flops() / 1e9, 3),
        "latent_shape": list(latents.shape[1:]),
        "resolution": size,
    }


def reconstruction(vae: torch.nn.Module, held_out: int, seed: int = 0) -> dict[str, Any]:
    """Held-out and subject reconstruction as ``train_tiny.py`` reports them (its crops, its
    function: PSNR / SSIM of the posterior-mean reconstruction, piq, data range 1)."""
    from sources import SOURCES  # training/sources.py
    from train_tiny import CropSampler, reconstruction_quality, subject_images

    device = next(vae.parameters()).device
    images = [source.load() for source in SOURCES]
    size = int(vae.config.sample_size)
    crops = CropSampler(images, seed + 2, held_out=True, device=device, size=size).sample(held_out)[0]
    return {"held_out_crops": reconstruction_quality(vae, crops),
            "subject_unseen": reconstruction_quality(vae, subject_images(size))}


def probe(vae: torch.nn.Module | str | Path, *, device: torch.device | str = "cpu", epsilon: float = 0.05,
          steps: int = 100, step_size: float = 1 / 255, seed: int = 0, attacks: tuple[str, ...] = tuple(ATTACKS),
          held_out: int = 256, images: torch.Tensor | None = None) -> dict[str, Any]:
    """Measure PID's reach on ``vae`` (see the module docstring); ``held_out`` 0 skips the
    reconstruction. The module's mode and ``requires_grad`` flags are restored afterwards."""
    device = torch.device(device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32, as the toolkit
    start = time.time()
    vae = load_vae(vae, device)
    was_training = vae.training
    flags = [p.requires_grad for p in vae.parameters()]
    vae.eval().requires_grad_(False)
    try:
        if images is None:
            from audit.data.subjects import bundled_subject

            images = bundled_subject(int(vae.config.sample_size)).images  # the VAE's resolution
        x = images.to(device=device, dtype=torch.float32)
        result: dict[str, Any] = {
            "settings": {"epsilon": epsilon, "steps": steps, "step_size": step_size, "seed": seed,
                         "images": len(x), "init": "uniform[-eps,eps]", "output": "8-bit within budget",
                         "objective_source": OBJECTIVE_SOURCE, "device": str(device)},
            "cost": cost(vae),
            "attacks": {},
        }
        for name in attacks:
            began = time.time()
            objective = ATTACKS[name]
            if objective is None:
                attacked_u8 = uniform_noise(x, epsilon=epsilon, seed=seed)
            else:
                attacked_u8 = pgd(vae, x, objective, epsilon=epsilon, steps=steps, step_size=step_size, seed=seed)
            row = compare(vae, x, attacked_u8.to(device).float() / 255)
            row["seconds"] = round(time.time() - began, 2)
            result["attacks"][name] = row
        if held_out:
            result["reconstruction"] = reconstruction(vae, held_out)
        result["seconds"] = round(time.time() - start, 2)
        return result
    finally:
        vae.train(was_training)
        for p, flag in zip(vae.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def summary(result: dict[str, Any]) -> str:
    """One line: PID's and the σ-only attack's reach, the null, and reconstruction."""
    parts = []
    for name, row in result["attacks"].items():
        parts.append(f"{name}: dlogvar {row['rms_logvar_shift']:.2f} (var x{row['var_ratio_mean']:.3g} "
                     f"p90 {row['var_ratio_p90']:.3g}) sigma {row['mean_sigma'][0]:.4g}->{row['mean_sigma'][1]:.4g} "
                     f"dmu/spread {row['rms_mu_shift_over_spread']:.3f} dec {row['decode_psnr_db']:.1f}dB")
    recon = result.get("reconstruction")
    if recon:
        parts.append(f"held-out {recon['held_out_crops']['psnr_db']:.2f}dB subject {recon['subject_unseen']['psnr_db']:.2f}dB")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", type=Path, default=ROOT / "audit" / "models" / "weights" / "tiny",
                        help="a VAE folder (config.json + weights) or a model folder with vae/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=100, help="PGD iterations")
    parser.add_argument("--step-size", type=float, default=1 / 255)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    parser.add_argument("--held-out", type=int, default=256, help="held-out crops for the PSNR (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = probe(args.vae, device=args.device, epsilon=args.epsilon, steps=args.steps, step_size=args.step_size,
                   seed=args.seed, attacks=tuple(args.attacks.split(",")), held_out=args.held_out)
    result["vae"] = str(args.vae)
    print(json.dumps(result, indent=1))
    print(summary(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
