"""Mist v1, fused mode (Liang & Wu, "Mist: Towards Improved Adversarial Examples for Diffusion
Models", arXiv 2305.12683, 2023; the semantic loss is AdvDM's, Liang et al., ICML 2023): ℓ∞ PGD
that pulls the image's latent towards a target pattern's latent (textural loss) while pushing
the denoising loss up (semantic loss), weighted as the authors' public code (v1.2) weighs them:

    δ = argmin_{‖δ‖∞ ≤ ε}  ‖z(x + δ) − z(x_T)‖²₂  −  r · L_sem(x + δ)
    z(x) = s · (μ_E + σ_E·ξ)(x)
    L_sem(x) = E_{t, ε_n} mean ‖ε_θ(√ᾱ_t z(x) + √(1 − ᾱ_t) ε_n, t, c) − ε_n‖²

Both latents are posterior samples (the code's ``get_first_stage_encoding``), the textural term
a sum over latent elements, the semantic term a mean, and r = 10⁴ (the code's default fusion
rate, 10^(1+3)); c = "a painting" (its style default; "a photo" for objects). Defaults: ε 16/255,
step 1/255, 100 iterations, uniform start in [−ε, ε] (advertorch's PGD), one draw per step.
We ascend the negative of the loss the code minimises, in fp32, and round to the nearest 8-bit
level within the budget (the code's save truncates, which it documents as landing at
(ε + 1)/255).

Target: Mist ships a fixed pattern image (MIST.png) we do not redistribute. Ours is generated
in code at the image's size (``target_pattern``): a black-and-white moiré of diagonal stripes
(period 1/8 of the side) multiplied by concentric rings (period 1/6 of the side), each colour
channel phase-shifted by a third of a period — a dense, high-contrast texture, as Mist's is.
Because the textural term is a sum over latent elements and the semantic one a mean, the
balance r sets depends on the latent size: at 64 px on the tiny model (16×16 latents) the
semantic term weighs 16× more than at 512 px on SD (64×64) — Mist's rate is kept as published.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from audit.diffusion.training import encode_text
from audit.parts.protections.antidreambooth import denoising_loss, frozen
from audit.parts.protections.base import (
    ProtectionContext,
    ProtectionOutput,
    model_of,
    quantize_within_budget,
)
from audit.parts.protections.pgd import LinfPGD
from audit.parts.protections.pid import posterior
from audit.parts.registry import Params

Mode = Literal["fused", "textural", "semantic"]


class MistParams(Params):
    """Mist v1's public-code defaults, in [0, 1] pixel units."""

    epsilon: float = Field(16 / 255, ge=0, le=1, description="ℓ∞ budget in [0,1] pixel units")
    step_size: float = Field(1 / 255, gt=0, le=1)
    steps: int = Field(100, ge=1, le=100_000, description="PGD iterations")
    rate: float = Field(1e4, ge=0, description="r, the weight of the semantic loss (fused mode)")
    mode: Mode = Field("fused", description="fused: textural − r·semantic; or one term alone")
    prompt: str = Field("a painting", description="c of the semantic loss")


def target_pattern(height: int, width: int) -> torch.Tensor:
    """The textural target: a 3×H×W moiré in {0, 1} (stripes × rings, channels phase-shifted)."""
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1) / height
    xs = torch.arange(width, dtype=torch.float64).view(1, -1) / width
    radius = torch.sqrt((ys - 0.5) ** 2 + (xs - 0.5) ** 2)
    channels = []
    for c in range(3):
        shift = 2 * math.pi * c / 3
        stripes = torch.sin(2 * math.pi * 8 * (xs + ys) + shift)
        rings = torch.sin(2 * math.pi * 6 * radius + shift)
        channels.append((stripes * rings > 0).float())
    return torch.stack(channels)


class Mist(LinfPGD):
    """Mist v1 (fused): textural pull to a pattern's latent, semantic push of the denoising loss."""

    name = "mist"
    uses_model = True
    #: ``denoising_loss`` and ``frozen`` live in antidreambooth.py, outside this class's MRO (so
    #: outside its code fingerprint): bump when they change.
    version = 1
    #: Seeded draws the objective's gain in a run's info is averaged over.
    info_draws: int = 16

    def __init__(self, epsilon: float = 16 / 255, step_size: float = 1 / 255, steps: int = 100,
                 rate: float = 1e4, mode: Mode = "fused", prompt: str = "a painting") -> None:
        super().__init__(epsilon, step_size, steps)
        self.rate = float(rate)
        self.mode: Mode = mode
        self.prompt = prompt

    def params(self, tier: Any = None) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
                "rate": self.rate, "mode": self.mode, "prompt": self.prompt,
                "target": "moiré pattern (mist.target_pattern)"}

    def terms(self, model: Any, x: torch.Tensor, target: torch.Tensor, cond: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image (textural, semantic) losses at x for one draw from ``generator``."""
        scale = float(model.vae.config.scaling_factor)

        def sampled_latent(images: torch.Tensor) -> torch.Tensor:
            mean, logvar = posterior(model.vae, images)
            xi = torch.randn(mean.shape, generator=generator).to(mean.device)
            return (mean + torch.exp(0.5 * logvar) * xi) * scale

        textural = (sampled_latent(x) - sampled_latent(target)).pow(2).flatten(1).sum(1)
        semantic = denoising_loss(model, x, cond, generator)[0]
        return textural, semantic

    def loss(self, model: Any, x: torch.Tensor, target: torch.Tensor, cond: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """The per-image objective to *maximise*: r·semantic − textural (fused)."""
        textural, semantic = self.terms(model, x, target, cond, generator)
        if self.mode == "textural":
            return -textural
        if self.mode == "semantic":
            return semantic
        return self.rate * semantic - textural

    def objective_value(self, model: Any, clean: torch.Tensor, protected: torch.Tensor,
                        draws: int = 16, seed: int = 12345) -> dict[str, torch.Tensor]:
        """Per image, protected minus clean, each averaged over the same ``draws`` seeded draws:
        the objective, the textural and the semantic loss (no gradient)."""
        with torch.no_grad():
            target = target_pattern(*clean.shape[-2:]).to(clean).expand_as(clean)
            cond = encode_text(model, model.text_encoder, [self.prompt] * len(clean))

            def mean_over_draws(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                generator = torch.Generator().manual_seed(seed)
                pairs = [self.terms(model, x, target, cond, generator) for _ in range(draws)]
                return (torch.stack([p[0] for p in pairs]).mean(0),
                        torch.stack([p[1] for p in pairs]).mean(0))

            (tp, sp), (tc, sc) = mean_over_draws(protected), mean_over_draws(clean)
            textural, semantic = tp - tc, sp - sc
            objective = {"textural": -textural, "semantic": semantic}.get(
                self.mode, self.rate * semantic - textural)
            return {"objective": objective, "textural": textural, "semantic": semantic}

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        model = model_of(ctx, self.name)
        x = images.to(device=ctx.device, dtype=torch.float32)
        target = target_pattern(*x.shape[-2:]).to(x).expand_as(x)
        generator = torch.Generator().manual_seed(ctx.seed)
        start = self.uniform_start(x, generator)
        with frozen(model):
            with torch.no_grad():
                cond = encode_text(model, model.text_encoder, [self.prompt] * len(x))
            delta, history = self.ascend(
                lambda xa: self.loss(model, xa, target, cond, generator), x, start,
                ctx.progress, f"Mist PGD ({self.mode})",
                "the VAE or UNet produced NaN/Inf (check the model's dtype: Mist needs fp32).")
        protected = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        gains = self.objective_value(model, x, protected.to(ctx.device).float() / 255,
                                     draws=self.info_draws)
        info = {"steps": self.steps, "rate": self.rate, "mode": self.mode, "prompt": self.prompt,
                "objective_first": history[0] if history else None,
                "objective_last_iterate": history[-1] if history else None,
                "objective_final_8bit": float(gains["objective"].mean()),
                "objective_final_8bit_per_image": [float(v) for v in gains["objective"].cpu()],
                "textural_change": float(gains["textural"].mean()),
                "semantic_change": float(gains["semantic"].mean()),
                "objective_meaning": "r·semantic − textural (Mist's loss, negated), protected "
                                     f"minus clean images, mean of {self.info_draws} seeded draws",
                "objective_trace": history[:: max(1, len(history) // 50)]}
        return ProtectionOutput(protected, info)
