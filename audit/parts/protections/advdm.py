"""AdvDM (Liang et al., ICML 2023): ℓ∞ PGD *ascending* the latent diffusion model's own training
loss on the protected images, so that a fine-tune on them learns from latents its denoiser
cannot fit (Monte-Carlo over the timestep and the noise, one draw per iteration):

    δ = argmax_{‖δ‖∞ ≤ ε}  E_{t, ε_n} ‖ε_θ(√ᾱ_t z₀ + √(1 − ᾱ_t) ε_n, t, c) − ε_n‖²
         + λ · MSE(μ_E(x + δ), μ_E(x)),      z₀ = s · (μ_E + σ_E·ξ)(x + δ)

with z₀ drawn from the VAE posterior as DreamBooth trains on it, s the VAE's scaling factor, c
the instance prompt, and the target ε_n (or v for a v-prediction model). λ = 0 is Liang et
al.'s AdvDM; λ = 0.05 adds the latent-mean ("textural") term of the AdvDM that PID's comparison
ran (PID Tables 3-7), our default. ε 0.05 (PID's budget, at which that comparison was made),
step ε/10, 100 iterations, δ₀ = 0. All draws (ξ, t, ε_n) come from a generator seeded with the
replicate's seed; fp32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.data.kinds import KIND_PROMPT
from audit.diffusion.training import encode_text
from audit.parts.protections.antidreambooth import denoising_loss
from audit.parts.protections.base import (
    ProtectionContext,
    ProtectionOutput,
    model_of,
    quantize_within_budget,
)
from audit.parts.protections.pgd import LinfPGD
from audit.parts.protections.pid import posterior
from audit.parts.registry import Params


class AdvDMParams(Params):
    """PID's comparison setting of AdvDM, in [0, 1] pixel units."""

    epsilon: float = Field(0.05, ge=0, le=1, description="ℓ∞ budget in [0,1] pixel units")
    step_size: float = Field(0.005, gt=0, le=1, description="ε/10")
    steps: int = Field(100, ge=1, le=100_000, description="PGD iterations")
    prompt: str = Field("a photo of sks person", description="the instance prompt c",
                        json_schema_extra={KIND_PROMPT: "instance"})
    textural_weight: float = Field(0.05, ge=0,
                                   description="λ on MSE(μ(x+δ), μ(x)); 0: Liang et al.'s AdvDM")


class AdvDM(LinfPGD):
    """AdvDM: ascent on the denoising loss (plus λ·latent-mean shift) through VAE and UNet."""

    name = "advdm"
    uses_model = True
    #: 2: the denoising loss is the one Anti-DreamBooth's protections share
    #: (``antidreambooth.denoising_loss``, the same draws in the same order); that module is
    #: outside this class's code fingerprint, so bump this when it changes.
    version = 2

    def __init__(self, epsilon: float = 0.05, step_size: float = 0.005, steps: int = 100,
                 prompt: str = "a photo of sks person", textural_weight: float = 0.05) -> None:
        super().__init__(epsilon, step_size, steps)
        self.prompt = prompt
        self.textural_weight = float(textural_weight)

    def params(self, tier: Any = None) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "step_size": self.step_size, "steps": self.steps,
                "prompt": self.prompt, "textural_weight": self.textural_weight}

    def loss(self, model: Any, x: torch.Tensor, cond: torch.Tensor, clean_mean: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """Per-image AdvDM objective at x for one (ξ, t, ε_n) draw from ``generator``."""
        denoising, mean, _ = denoising_loss(model, x, cond, generator)
        textural = F.mse_loss(mean, clean_mean, reduction="none").flatten(1).mean(1)
        return denoising + self.textural_weight * textural

    def objective_value(self, model: Any, clean: torch.Tensor, protected: torch.Tensor,
                        draws: int = 16, seed: int = 12345) -> torch.Tensor:
        """Per image, the objective on ``protected`` minus on ``clean``, each averaged over the
        same ``draws`` seeded (ξ, t, ε_n) draws (no gradient)."""
        with torch.no_grad():
            cond = encode_text(model, model.text_encoder, [self.prompt] * len(clean))
            clean_mean = posterior(model.vae, clean)[0]

            def mean_over_draws(x: torch.Tensor) -> torch.Tensor:
                generator = torch.Generator().manual_seed(seed)
                values = [self.loss(model, x, cond, clean_mean, generator) for _ in range(draws)]
                return torch.stack(values).mean(0)

            return mean_over_draws(protected) - mean_over_draws(clean)

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        model = model_of(ctx, self.name)
        x = images.to(device=ctx.device, dtype=torch.float32)
        modules = (model.vae, model.unet, model.text_encoder)
        requires = [[p.requires_grad for p in m.parameters()] for m in modules]
        for m in modules:
            m.requires_grad_(False)
        try:
            with torch.no_grad():
                cond = encode_text(model, model.text_encoder, [self.prompt] * len(x))
                clean_mean = posterior(model.vae, x)[0]
            draws = torch.Generator().manual_seed(ctx.seed)
            delta, history = self.ascend(
                lambda xa: self.loss(model, xa, cond, clean_mean, draws), x, torch.zeros_like(x),
                ctx.progress, "AdvDM PGD on the denoising loss",
                "the VAE or UNet produced NaN/Inf (check the model's dtype: AdvDM needs fp32).")
        finally:
            for m, flags in zip(modules, requires, strict=True):
                for p, r in zip(m.parameters(), flags, strict=True):
                    p.requires_grad_(r)
        protected_u8 = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        gain = self.objective_value(model, x, protected_u8.to(ctx.device).float() / 255).cpu()
        info = {"steps": self.steps, "prompt": self.prompt, "textural_weight": self.textural_weight,
                "objective_first": history[0] if history else None,
                "objective_last_iterate": history[-1] if history else None,
                "objective_final_8bit": float(gain.mean()),
                "objective_final_8bit_per_image": [float(v) for v in gain],
                "objective_meaning": "AdvDM objective, protected minus clean images, mean of 16 "
                                     "seeded draws",
                "objective_trace": history[:: max(1, len(history) // 50)]}
        return ProtectionOutput(protected_u8, info)
