"""ASPL, Alternating Surrogate and Perturbation Learning (Van Le et al., "Anti-DreamBooth",
ICCV 2023, §4.3, Algorithm 1): a bilevel ascent that keeps the surrogate close to what a
DreamBooth on the protected images would become. Each outer round

1. θ' ← a copy of θ fine-tuned ``surrogate_steps`` steps on the clean images;
2. δ ← ``pgd_steps`` ℓ∞ PGD steps ascending L_cond(θ', x + δ) (continuing the last round's δ);
3. θ ← θ fine-tuned ``surrogate_steps`` steps on the perturbed images x + δ.

Defaults are the authors' attack_with_aspl.sh: 50 rounds of 3 surrogate steps, 6 PGD steps and
3 steps on the perturbed images; lr 5e-7, batch 1, text encoder trained, prior preservation
(200 class images); δ₀ = 0, step ε/10, ε 0.05 in their [−1, 1] pixels (0.025 = 6.375/255 here).
Each fine-tune starts a fresh AdamW (as the authors' ``train_one_epoch``) with its own seed
(derived from the replicate's seed and the round); PGD draws from one generator seeded with the
replicate's seed; fp32 (the authors run bf16). The perturbed images of step 3 are the float
iterate, as in the authors' loop; the output is rounded to 8 bits once, at the end.
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
from audit.run.progress import Progress

if TYPE_CHECKING:
    from audit.diffusion import LatentDiffusionModel


class ASPLParams(SurrogateParams):
    """ASPL as the authors' attack_with_aspl.sh runs it, in [0, 1] pixel units."""

    rounds: int = Field(50, ge=1, le=10_000, description="outer rounds")
    surrogate_steps: int = Field(3, ge=0, le=10_000,
                                 description="fine-tune steps per round, on clean and on perturbed")
    pgd_steps: int = Field(6, ge=1, le=10_000, description="PGD steps per round")


class ASPL(SurrogateAttack):
    """ASPL: alternate surrogate fine-tunes (clean, then perturbed) with PGD on the surrogate
    trained on clean images."""

    name = "aspl"
    Settings: type[ASPLParams] = ASPLParams

    def __init__(self, **params: Any) -> None:
        settings = self.Settings(**params)
        super().__init__(settings)
        self.steps = settings.rounds * settings.pgd_steps
        self.aspl = settings

    def params(self, tier: Any = None) -> dict[str, Any]:
        return self.aspl.model_dump()

    def craft(self, images: torch.Tensor,
              ctx: ProtectionContext) -> tuple[ProtectionOutput, LatentDiffusionModel]:
        """The protected images and the last round's θ' (the surrogate the last PGD steps
        attacked), against which the output's info measures the objective."""
        model = model_of(ctx, self.name)
        s = self.aspl
        x = images.to(device=ctx.device, dtype=torch.float32)
        classes = class_images(model, s, x.shape[-1], ctx)
        generator = torch.Generator().manual_seed(ctx.seed)
        delta, history = torch.zeros_like(x), []
        theta, attacked = model, model
        with ctx.progress.stage(f"{self.name}: alternating surrogate and perturbation learning",
                                total=s.rounds, unit="rounds") as stage:
            for r in range(s.rounds):
                seed = ctx.seed * 100_003 + 2 * r
                attacked = fine_tune(theta, x, s, s.surrogate_steps, seed, classes,
                                     f"{self.name} surrogate (clean)")
                with frozen(attacked):
                    delta, trace = self.ascend(
                        self.bound_objective(attacked, x, generator), x, delta, Progress(),
                        f"{self.name} PGD", "the VAE or UNet produced NaN/Inf (check the "
                        "model's dtype: ASPL needs fp32).", steps=s.pgd_steps)
                history += trace
                theta = fine_tune(theta, (x + delta).detach(), s, s.surrogate_steps, seed + 1,
                                  classes, f"{self.name} surrogate (perturbed)")
                stage.advance(1, f"L={trace[-1]:.4g}")
        protected = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        info = self.summary(attacked, x, protected.to(ctx.device).float() / 255, history,
                            "the last round's surrogate fine-tuned on the clean images")
        info.update(rounds=s.rounds, pgd_steps=s.pgd_steps, surrogate_steps=s.surrogate_steps)
        return ProtectionOutput(protected, info), attacked

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        return self.craft(images, ctx)[0]
