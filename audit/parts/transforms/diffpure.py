"""Diffusion purification with the purifier's latent diffusion model (DiffShortcut App. C.1).

All three are SDEdit (Meng et al. ICLR 2022): encode, noise the latents to step t, denoise back
with the model's own DDPM schedule, one step per timestep (t steps), decode. The purifier's
model is a role: the audited model by default (``model: audited``), or a diffusers folder or
hub id; on the smoke tier that is the embedded tiny model, and the numbers are the tiny
model's. A pixel-space DDPM (guided-diffusion's 256-px ImageNet model, used by GrIDPure's and
DDSPure's authors) is not supported: the role takes latent diffusion models only.

* **LatentDiffPure** (DiffShortcut App. C.1 item 5): t = 300, classifier-free guidance 7.5,
  with the quality prompt "a photo of a person, clear, high resolution, high quality,
  noise-free" or the empty prompt (LatentDiffPure-∅).
* **DDSPure** (Carlini et al. ICLR 2023, as DiffShortcut App. C.1 item 5 uses it): t such that
  (1 − ᾱ_t)/ᾱ_t = σ², the timestep whose noise equals the assumed perturbation, clipped to the
  schedule. σ is in the units the model diffuses: the latent model's scaled latents here (the
  authors' pixel model: [−1, 1] pixels, i.e. twice a [0, 1] σ). Then SDEdit from t (the
  authors' DDS denoises in one step; DiffShortcut runs the reverse process).
* **GrIDPure** (Zhao et al. 2024, as its authors' ``gridpure.py``): windows of half the image
  side (256 at 512 px) at half-window stride, plus a window flush with the far border; the four
  corner quadrants stitched into one window and purified once more; overlaps averaged (float64);
  then (1 − γ)·merged + γ·(this iteration's input), γ 0.1; DiffPure with t = 10 steps; 10-20
  iterations (README: 20). Each iteration's result is rounded to the nearest 8-bit level (the
  authors' code truncates: ≈ 10 levels darker after 20 iterations) and seeded (theirs is not).
  The smoke tier caps the iterations (``max_iterations``: 2; each costs ≈ 4 s per 64-px image on
  2 CPU cores with the tiny model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field

from audit.parts.transforms.context import AUDITED, TransformContext, TransformUnavailable, quantize
from audit.parts.transforms.corruptions import TransformParams

QUALITY_PROMPT = "a photo of a person, clear, high resolution, high quality, noise-free"
Purify = Callable[[torch.Tensor], torch.Tensor]  # N×3×h×w [0,1] → same


# -- SDEdit with the latent model -----------------------------------------------------------------


def _prompt_embeddings(
    model: Any, prompt: str, n: int, device: torch.device, guidance: float
) -> torch.Tensor:
    from audit.diffusion.sampling import generation_pipeline

    pipe: Any = generation_pipeline(model, model.unet, model.text_encoder)
    cond, uncond = pipe.encode_prompt(prompt, device, n, guidance > 1, negative_prompt="")
    return torch.cat([uncond, cond]) if guidance > 1 else cond


def ddpm_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    t: int,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One ancestral DDPM step t → t − 1 (Ho et al. 2020 eq. 7, "fixed small" variance), from an
    ε or v prediction; ``noise`` is added for t > 0."""
    ab = alphas_cumprod[t]
    ab_prev = alphas_cumprod[t - 1] if t > 0 else torch.ones_like(ab)
    beta = 1 - ab / ab_prev
    if prediction_type == "v_prediction":
        x0 = ab.sqrt() * x - (1 - ab).sqrt() * model_output
    else:
        x0 = (x - (1 - ab).sqrt() * model_output) / ab.sqrt()
    mean = (ab_prev.sqrt() * beta / (1 - ab)) * x0 + (
        (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    ) * x
    if t == 0:
        return mean
    return mean + (beta * (1 - ab_prev) / (1 - ab)).sqrt() * noise


@torch.no_grad()
def sdedit(
    model: Any,
    images: torch.Tensor,
    t: int,
    generator: torch.Generator,
    *,
    prompt: str = "",
    guidance: float = 1.0,
) -> torch.Tensor:
    """Encode (posterior mean), noise to timestep index t − 1, denoise with t DDPM steps of the
    model's training schedule (classifier-free guidance when ``guidance`` > 1), decode."""
    if t < 1:
        return images
    device = next(model.unet.parameters()).device
    dtype = next(model.unet.parameters()).dtype
    alphas = model.scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    prediction = getattr(model.scheduler.config, "prediction_type", "epsilon")
    scale = float(getattr(model.vae.config, "scaling_factor", 0.18215))
    latents = model.vae.encode(images.to(device, dtype) * 2 - 1).latent_dist.mean.float() * scale
    start = min(t, len(alphas)) - 1
    noise = torch.randn(latents.shape, generator=generator).to(device)
    latents = alphas[start].sqrt() * latents + (1 - alphas[start]).sqrt() * noise
    embeddings = _prompt_embeddings(model, prompt, images.shape[0], device, guidance)
    for step in range(start, -1, -1):
        timestep = torch.tensor(step, device=device)
        if guidance > 1:
            both = model.unet(
                torch.cat([latents] * 2).to(dtype), timestep, encoder_hidden_states=embeddings
            ).sample
            uncond, cond = both.float().chunk(2)
            output = uncond + guidance * (cond - uncond)
        else:
            output = model.unet(
                latents.to(dtype), timestep, encoder_hidden_states=embeddings
            ).sample.float()
        step_noise = torch.randn(latents.shape, generator=generator).to(device)
        latents = ddpm_step(latents, output, step, alphas, prediction, step_noise)
    return (
        ((model.vae.decode((latents / scale).to(dtype)).sample.float() + 1) / 2).clamp(0, 1).cpu()
    )


def _model(context: TransformContext | None, name: str) -> Any:
    if context is None or context.model is None:
        raise TransformUnavailable(
            f"unavailable: {name} needs the purifier's latent diffusion model; run it through "
            "the audit engine, which passes the audited model (or the one 'model' names)"
        )
    return context.model


class DiffusionPurifierParams(TransformParams):
    model: str = Field(
        AUDITED, description="the purifier's model: 'audited', a diffusers folder or a hub id"
    )


# -- LatentDiffPure ------------------------------------------------------------------------------


class LatentDiffPureParams(DiffusionPurifierParams):
    """SDEdit from t with the model's DDPM schedule; DiffShortcut: t 300, CFG 7.5."""

    t: int = Field(
        300, ge=1, le=1000, description="noise to timestep index t − 1, then t DDPM steps back"
    )
    prompt: Literal["quality", "empty"] = Field(
        "quality", description=f"'quality': \"{QUALITY_PROMPT}\"; 'empty': ∅"
    )
    guidance_scale: float = Field(7.5, ge=1, description="classifier-free guidance (1: none)")


def latent_diffpure(
    images: torch.Tensor,
    params: LatentDiffPureParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """LatentDiffPure (module doc), all images in one batch."""
    prompt = QUALITY_PROMPT if params.prompt == "quality" else ""
    return quantize(
        sdedit(
            _model(context, "LatentDiffPure"),
            images,
            params.t,
            generator,
            prompt=prompt,
            guidance=params.guidance_scale,
        )
    )


# -- DDSPure -------------------------------------------------------------------------------------


def dds_timestep(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """The timestep index t with (1 − ᾱ_t)/ᾱ_t closest to σ² (the DDS equation), in range."""
    ratio = (1 - alphas_cumprod.double()) / alphas_cumprod.double()
    return int(torch.argmin((ratio - sigma**2).abs()))


class DdsPureParams(DiffusionPurifierParams):
    """σ: the assumed perturbation's std in the model's diffusion units (module doc)."""

    sigma: float = Field(
        0.25, gt=0, le=100, description="assumed noise std in the model's units (scaled latents)"
    )


def ddspure(
    images: torch.Tensor,
    params: DdsPureParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """DDSPure: SDEdit from the DDS timestep (1 − ᾱ_t)/ᾱ_t = σ², empty prompt, no guidance."""
    model = _model(context, "DDSPure")
    t = dds_timestep(model.scheduler.alphas_cumprod, params.sigma) + 1  # index t − 1 = the solution
    if context is not None:
        context.note(
            f"DDSPure: σ {params.sigma:g} → t = {t} (of {len(model.scheduler.alphas_cumprod)})"
        )
    return quantize(sdedit(model, images, t, generator))


# -- GrIDPure ------------------------------------------------------------------------------------


def window_starts(side: int, window: int) -> list[int]:
    """Starts at multiples of half a window while the window fits, plus one flush with the end."""
    stride = max(1, window // 2)
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)
    return starts


def grid_merge(images: torch.Tensor, purify: Purify, window: tuple[int, int]) -> torch.Tensor:
    """One GrIDPure pass without the blend: every window purified (all in one batch), the four
    corner quadrants stitched into one window and purified too, overlaps averaged in float64."""
    n, _, height, width = images.shape
    wh, ww = window
    boxes = [(y, x) for y in window_starts(height, wh) for x in window_starts(width, ww)]
    crops = [images[:, :, y : y + wh, x : x + ww] for y, x in boxes]
    qh, qw = wh // 2, ww // 2
    corners = torch.cat(
        [
            torch.cat([images[:, :, :qh, :qw], images[:, :, :qh, -qw:]], 3),
            torch.cat([images[:, :, -qh:, :qw], images[:, :, -qh:, -qw:]], 3),
        ],
        2,
    )
    purified = purify(torch.cat([*crops, corners])).double().cpu().split(n)
    total = torch.zeros(images.shape, dtype=torch.float64)
    count = torch.zeros(images.shape, dtype=torch.float64)
    for (y, x), patch in zip(boxes, purified[:-1], strict=True):
        total[:, :, y : y + wh, x : x + ww] += patch
        count[:, :, y : y + wh, x : x + ww] += 1
    stitched = purified[-1]
    for (ys, xs), (py, px) in (
        ((slice(0, qh), slice(0, qw)), (0, 0)),
        ((slice(0, qh), slice(width - qw, width)), (0, qw)),
        ((slice(height - qh, height), slice(0, qw)), (qh, 0)),
        ((slice(height - qh, height), slice(width - qw, width)), (qh, qw)),
    ):
        total[:, :, ys, xs] += stitched[:, :, py : py + qh, px : px + qw]
        count[:, :, ys, xs] += 1
    return total / count


def gridpure_iterate(
    images: torch.Tensor, purify: Purify, window: tuple[int, int], iterations: int, gamma: float
) -> torch.Tensor:
    """``iterations`` × [merged windows, blended with this iteration's input, rounded]."""
    x = images.float().cpu()
    for _ in range(iterations):
        merged = grid_merge(x, purify, window)
        x = quantize(((1 - gamma) * merged + gamma * x.double()).float())
    return x


class GridPureParams(DiffusionPurifierParams):
    """The authors' README setting: t 10, 20 iterations, γ 0.1, windows of half the side."""

    t: int = Field(
        10, ge=1, le=1000, description="DiffPure steps per window (noise to index t − 1)"
    )
    iterations: int = Field(
        20, ge=1, le=100, description="GrIDPure iterations (10-20 in the paper)"
    )
    max_iterations: int | None = Field(
        None, ge=1, description="a tier's cap on iterations (the smoke tier's; None: none)")
    gamma: float = Field(
        0.1, ge=0, le=1, description="weight of the iteration's input in the blend"
    )
    window_fraction: float = Field(
        0.5, gt=0, le=1, description="window side / image side (256 / 512)"
    )


def gridpure(
    images: torch.Tensor,
    params: GridPureParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """GrIDPure (module doc) with DiffPure = SDEdit(t) through the purifier's latent model."""
    model = _model(context, "GrIDPure")
    factor = model.vae_scale_factor
    height, width = images.shape[-2:]
    # The window must be a multiple of twice the VAE's factor (its quadrants are windows' halves).
    step = 2 * factor
    wh, ww = (max(step, step * math.floor(side * params.window_fraction / step))
              for side in (height, width))
    window = (wh, ww)
    return gridpure_iterate(
        images,
        lambda x: sdedit(model, x, params.t, generator),
        window,
        min(params.iterations, params.max_iterations or params.iterations),
        params.gamma,
    )
