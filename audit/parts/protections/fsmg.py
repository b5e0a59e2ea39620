"""FSMG, Fully-trained Surrogate Model Guidance (Van Le et al., "Anti-DreamBooth", ICCV 2023,
§4.2, eq. 4): fine-tune a surrogate θ* with DreamBooth on the clean images, then, with θ* fixed,
ascend its denoising loss on the protected images by ℓ∞ PGD:

    δ = argmax_{‖δ‖∞ ≤ ε}  L_cond(θ*, x + δ)

Defaults are the authors' scripts: the surrogate trains 1000 steps at lr 5e-7, batch 2, text
encoder trained, prior preservation (200 class images); then 100 PGD steps from δ₀ = 0 with
step ε/10, ε 0.05 in their [−1, 1] pixels (0.025 = 6.375/255 here). One (ξ, t, ε_n) draw per
step from a generator seeded with the replicate's seed; fp32 (the authors run bf16). Objective
and units: ``antidreambooth.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from audit.parts.protections.antidreambooth import (
    SurrogateAttack,
    SurrogateParams,
    class_images,
    fine_tune,
    frozen,
)
from audit.parts.protections.base import (
    ProtectionContext,
    ProtectionOutput,
    model_of,
    quantize_within_budget,
)

if TYPE_CHECKING:
    from audit.diffusion import LatentDiffusionModel


class FSMGParams(SurrogateParams):
    """FSMG as the authors' attack_with_fsmg.sh runs it, in [0, 1] pixel units."""

    steps: int = Field(100, ge=1, le=100_000, description="PGD steps against the surrogate")
    surrogate_steps: int = Field(1000, ge=0, le=100_000,
                                 description="DreamBooth steps of the surrogate on clean images")
    batch_size: int = Field(2, ge=1, le=256)


class FSMG(SurrogateAttack):
    """FSMG: ℓ∞ PGD on the denoising loss of a fixed surrogate fine-tuned on the clean images."""

    name = "fsmg"
    Settings: type[FSMGParams] = FSMGParams

    def __init__(self, **params: Any) -> None:
        settings = self.Settings(**params)
        super().__init__(settings)
        self.steps = settings.steps
        self.fsmg = settings

    def params(self, tier: Any = None) -> dict[str, Any]:
        return self.fsmg.model_dump()

    def surrogate(self, images: torch.Tensor, ctx: ProtectionContext) -> LatentDiffusionModel:
        """θ*: the model fine-tuned on the clean images (seeded with the replicate's seed)."""
        model = model_of(ctx, self.name)
        x = images.to(device=ctx.device, dtype=torch.float32)
        classes = class_images(model, self.fsmg, x.shape[-1], ctx)
        with ctx.progress.stage(f"{self.name}: surrogate DreamBooth, "
                                f"{self.fsmg.surrogate_steps} steps on the clean images"):
            return fine_tune(model, x, self.fsmg, self.fsmg.surrogate_steps, ctx.seed, classes,
                             f"{self.name} surrogate")

    def craft(self, images: torch.Tensor, ctx: ProtectionContext,
              surrogate: LatentDiffusionModel) -> ProtectionOutput:
        """PGD against the fixed ``surrogate``; the output's info holds the objective's gain."""
        x = images.to(device=ctx.device, dtype=torch.float32)
        with frozen(surrogate):
            objective = self.bound_objective(surrogate, x, torch.Generator().manual_seed(ctx.seed))
            delta, history = self.ascend(
                objective, x, torch.zeros_like(x), ctx.progress,
                f"{self.name}: PGD on the surrogate's denoising loss",
                "the VAE or UNet produced NaN/Inf (check the model's dtype: FSMG needs fp32).")
        protected = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        info = self.summary(surrogate, x, protected.to(ctx.device).float() / 255, history,
                            "the fixed surrogate fine-tuned on the clean images")
        return ProtectionOutput(protected, {**info, "steps": self.steps,
                                            "surrogate_steps": self.fsmg.surrogate_steps})

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        return self.craft(images, ctx, self.surrogate(images, ctx))
