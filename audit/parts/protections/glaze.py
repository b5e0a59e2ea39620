"""glaze-like: a style cloak in the form IMPRESS re-implemented Glaze (Shan et al., USENIX
Security 2023; IMPRESS, Cao et al. NeurIPS 2023, §3 eq. 1 and App. B).

Glaze moves an artwork's latent towards the latent of the same work in another style, so a model
fine-tuned on the cloaked works learns the other style:

    δ = argmin_δ  ‖E(x + δ) − E(Ω(x, T))‖²₂ + α · max(LPIPS(x + δ, x) − p, 0)

Ω(x, T) is x transferred to a target style T. IMPRESS's setting (App. B): p 0.05, α 30, Adam
with lr 0.01, 500 steps. Our choices where the papers leave room, each a parameter:

- Ω: Glaze uses a pre-trained style-transfer network; here SDEdit with the audited model
  (``diffpure.sdedit``): x noised to ``target_strength`` of the schedule and denoised under the
  target-style prompt with guidance 7.5, the one style transfer every audited latent diffusion
  model can do. On the tiny model the prompt means little; the target is still an image of x's
  layout that the model drew, which is what the latent objective pulls towards.
- E(·) is the posterior mean (as PhotoGuard and IMPRESS); the squared distance is a mean over
  latent elements (MSE, as IMPRESS's code), in fp32.
- Adam on δ with each step followed by the ℓ∞ projection to ``epsilon`` and the pixel range: the
  toolkit holds every protection to an ℓ∞ budget after 8-bit rounding (the papers bound Glaze by
  LPIPS alone); the LPIPS hinge stays as the perceptual term.
- LPIPS is lpips' VGG when its weights are here, else 1 − SSIM (the substitute IMPRESS's
  purifier uses in this toolkit), said in the output's info.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from audit.parts.protections.base import (
    Protection,
    ProtectionContext,
    ProtectionOutput,
    model_of,
    quantize_within_budget,
)
from audit.parts.protections.pid import posterior
from audit.parts.registry import Params

TARGET_PROMPT = "a cubist painting by Pablo Picasso"  # Glaze §5: a style far from the artist's
TARGET_GUIDANCE = 7.5


class GlazeLikeParams(Params):
    """IMPRESS App. B's Glaze setting, in [0, 1] pixel units; ε is the toolkit's ℓ∞ bound."""

    epsilon: float = Field(0.05, ge=0, le=1, description="ℓ∞ budget in [0,1] pixel units")
    steps: int = Field(500, ge=1, le=100_000, description="Adam steps")
    lr: float = Field(0.01, gt=0, le=1)
    alpha: float = Field(30.0, ge=0, description="weight of the LPIPS hinge")
    lpips_bound: float = Field(0.05, ge=0, le=1, description="p: LPIPS allowed before the hinge")
    target_prompt: str = Field(TARGET_PROMPT, min_length=1)
    target_strength: float = Field(0.5, gt=0, le=1, description="SDEdit strength of Ω(x, T)")


def style_target(model: Any, images: torch.Tensor, prompt: str, strength: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Ω(x, T): SDEdit of the images under the target-style prompt (posterior mean latents)."""
    from audit.parts.transforms.diffpure import sdedit

    steps = max(1, round(strength * len(model.scheduler.alphas_cumprod)))
    transferred = sdedit(model, images, steps, generator, prompt=prompt, guidance=TARGET_GUIDANCE)
    with torch.no_grad():
        return posterior(model.vae, transferred.to(images.device))[0]


def glaze_loss(vae: Any, x_p: torch.Tensor, clean: torch.Tensor, target: torch.Tensor,
               distance: Any, alpha: float, bound: float) -> torch.Tensor:
    """Per image: MSE(E(x_p), E(Ω(x))) + α · max(D(x_p, x) − p, 0) (IMPRESS eq. 1's Glaze)."""
    latent = (posterior(vae, x_p)[0] - target).flatten(1).pow(2).mean(1)
    return latent + alpha * (distance(x_p, clean) - bound).clamp_min(0)


class GlazeLike(Protection):
    """Glaze as IMPRESS re-implemented it: Adam on δ towards a style-transferred latent."""

    name = "glaze-like"
    uses_model = True

    def __init__(self, epsilon: float = 0.05, steps: int = 500, lr: float = 0.01,
                 alpha: float = 30.0, lpips_bound: float = 0.05,
                 target_prompt: str = TARGET_PROMPT, target_strength: float = 0.5) -> None:
        super().__init__(epsilon)
        self.steps, self.lr, self.alpha, self.lpips_bound = steps, lr, alpha, lpips_bound
        self.target_prompt, self.target_strength = target_prompt, target_strength

    def params(self, tier: Any = None) -> dict[str, Any]:
        return {"epsilon": self.epsilon, "steps": self.steps, "lr": self.lr, "alpha": self.alpha,
                "lpips_bound": self.lpips_bound, "target_prompt": self.target_prompt,
                "target_strength": self.target_strength}

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        from audit.parts.transforms.impress import perceptual_distance

        model = model_of(ctx, self.name)
        x = images.to(device=ctx.device, dtype=torch.float32)
        with ctx.progress.stage("glaze-like: style target Ω(x, T) by SDEdit"):
            target = style_target(model, x, self.target_prompt, self.target_strength,
                                  torch.Generator().manual_seed(ctx.seed))
        distance = perceptual_distance("auto", ctx.device, None)
        substitute = getattr(distance, "__name__", "") == "one_minus_ssim"
        delta = torch.zeros_like(x, requires_grad=True)
        optimiser = torch.optim.Adam([delta], lr=self.lr)
        model.vae.requires_grad_(False)
        history: list[float] = []
        with ctx.progress.stage("glaze-like: Adam on δ", total=self.steps) as stage:
            for _ in range(self.steps):
                loss = glaze_loss(model.vae, x + delta, x, target, distance, self.alpha,
                                  self.lpips_bound)
                optimiser.zero_grad()
                loss.sum().backward()
                optimiser.step()
                with torch.no_grad():
                    delta.clamp_(-self.epsilon, self.epsilon)
                    delta.copy_((x + delta).clamp(0, 1) - x)
                history.append(float(loss.detach().mean()))
                stage.advance(1, f"L={history[-1]:.4g}")
        protected = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        with torch.no_grad():
            final = glaze_loss(model.vae, protected.to(ctx.device).float() / 255, x, target,
                               distance, self.alpha, self.lpips_bound)
        info = {"target_prompt": self.target_prompt, "loss_first": history[0],
                "loss_last_iterate": history[-1], "objective_final_8bit": float(final.mean()),
                "perceptual": "1 − SSIM instead of LPIPS (LPIPS-VGG weights not found)"
                if substitute else "LPIPS-VGG",
                "loss_trace": history[:: max(1, len(history) // 50)]}
        return ProtectionOutput(protected, info)
