"""What Anti-DreamBooth's protections share (Van Le et al., ICCV 2023, §4): the surrogate
fine-tune, the denoising objective they ascend, and PID's hybrid term (Li et al., ICML 2024,
§6.2 eq. 12).

Both FSMG and ASPL maximise the training loss of a DreamBooth-fine-tuned surrogate θ on the
protected images (Anti-DreamBooth eq. 4/5):

    δ = argmax_{‖δ‖∞ ≤ ε}  L_cond(θ, x + δ) + λ · L_add-log(x + δ)
    L_cond = E_{t, ε_n} ‖ε_θ(√ᾱ_t z₀ + √(1 − ᾱ_t) ε_n, t, c) − ε_n‖²,   z₀ = s·(μ_E + σ_E·ξ)(x + δ)

one (ξ, t, ε_n) draw per PGD step, as the authors' code draws them; λ = 0 is Anti-DreamBooth,
λ = 0.05 is PID's hybrid (Table 4). Units: the authors' code works in [−1, 1] with ε 0.05 and
step 0.005, which is ε 0.025 (6.375/255) and step 0.0025 in our [0, 1] units. PID's paper
states "0.05" for its comparison without units; we read it as the code it ran (Anti-DreamBooth's
defaults) — ``--epsilon 0.05`` gives PID's own [0, 1] reading (12.75/255).

The surrogate fine-tunes with the toolkit's DreamBooth loop (``audit/diffusion/training.py``):
the authors' lr 5e-7, text encoder trained, prior preservation on class images drawn from the
base model with the class prompt (seeds 10 000 + i, the exploit's own class images). The
surrogate trains on the images being protected (PID App. A: "reference images ... the same as
the images to be protected"; Anti-DreamBooth's scripts use a second clean set of the person).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from audit.config.settings import CLASS_PROMPT, PROTECTOR_PROMPT
from audit.data.kinds import KIND_PROMPT
from audit.diffusion import sampling
from audit.diffusion.training import FinetuneConfig, encode_text, train
from audit.parts.protections.pgd import LinfPGD
from audit.parts.protections.pid import pid_objective, posterior
from audit.parts.registry import Params
from audit.run.progress import Progress

if TYPE_CHECKING:
    from audit.diffusion import LatentDiffusionModel
    from audit.parts.protections.base import ProtectionContext

#: Anti-DreamBooth's budget and step, converted from its [−1, 1] pixels to [0, 1] units.
ADB_EPSILON = 0.025
ADB_STEP = 0.0025
#: PID Table 4's weight on L_add-log in the hybrids.
PID_HYBRID_WEIGHT = 0.05


class HybridParams(Params):
    """PID's hybrid weight (PID §6.2 eq. 12, Table 4: λ* = 0.05)."""

    pid_weight: float = Field(PID_HYBRID_WEIGHT, ge=0, le=1000,
                              description="λ on PID's L_add-log (0: Anti-DreamBooth alone)")


class SurrogateParams(Params):
    """The surrogate's fine-tune (Anti-DreamBooth's scripts: lr 5e-7, text encoder trained,
    prior preservation on 200 class images, class prompt 'a photo of person')."""

    epsilon: float = Field(ADB_EPSILON, ge=0, le=1,
                           description="ℓ∞ budget in [0,1] units (0.05 in [-1,1] = 6.375/255)")
    step_size: float = Field(ADB_STEP, gt=0, le=1, description="ε/10 (0.005 in [-1,1])")
    prompt: str = Field(PROTECTOR_PROMPT, min_length=1, description="the instance prompt c",
                        json_schema_extra={KIND_PROMPT: "instance"})
    lr: float = Field(5e-7, gt=0, le=1, description="surrogate learning rate")
    batch_size: int = Field(1, ge=1, le=256)
    train_text_encoder: bool = True
    prior_preservation: bool = True
    num_class_images: int = Field(200, ge=0, le=10_000)
    class_prompt: str = Field(CLASS_PROMPT, json_schema_extra={KIND_PROMPT: "class"})

    @model_validator(mode="after")
    def _class_images_when_needed(self) -> SurrogateParams:
        if self.prior_preservation and self.num_class_images < 1:
            raise ValueError("prior_preservation needs num_class_images ≥ 1 (or set "
                             "prior_preservation: false)")
        return self


@contextmanager
def frozen(model: LatentDiffusionModel) -> Iterator[None]:
    """Gradients off on the VAE, UNet and text encoder while δ is crafted; restored after."""
    modules = (model.vae, model.unet, model.text_encoder)
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, saved in zip(modules, flags, strict=True):
            for p, r in zip(m.parameters(), saved, strict=True):
                p.requires_grad_(r)


def denoising_loss(model: LatentDiffusionModel, x: torch.Tensor, cond: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image L_cond at x ([0, 1]) for one (ξ, t, ε_n) draw from ``generator``, with the
    posterior (μ, log σ²) it sampled from (for the hybrid term)."""
    mean, logvar = posterior(model.vae, x)
    device = x.device
    xi = torch.randn(mean.shape, generator=generator).to(device)
    latents = (mean + torch.exp(0.5 * logvar) * xi) * float(model.vae.config.scaling_factor)
    scheduler = model.scheduler
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), generator=generator)
    t = t.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    prediction = model.unet(scheduler.add_noise(latents, noise, t), t, cond).sample
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, t) if v_prediction else noise
    loss = F.mse_loss(prediction, target, reduction="none").flatten(1).mean(1)
    return loss, mean, logvar


def class_images(model: LatentDiffusionModel, params: SurrogateParams, resolution: int,
                 ctx: ProtectionContext) -> torch.Tensor | None:
    """Prior-preservation class images from the base model (None without prior preservation),
    drawn as the DreamBooth exploit draws its own: seeds 10 000 + i, the tier's generation
    steps and guidance, no negative prompt."""
    if not params.prior_preservation:
        return None
    gen = ctx.tier.generation
    cfg = sampling.GenerationConfig((params.class_prompt,), params.num_class_images, gen.steps,
                                    gen.guidance_scale, "", seed=10_000)
    n = params.num_class_images
    return torch.cat([
        sampling.generate(model, model.unet, model.text_encoder,
                          replace(cfg, images_per_prompt=min(sampling.CLASS_BATCH, n - start),
                                  seed=cfg.seed + start), resolution, ctx.progress)
        for start in range(0, n, sampling.CLASS_BATCH)])


def fine_tune(model: LatentDiffusionModel, images: torch.Tensor, params: SurrogateParams,
              steps: int, seed: int, classes: torch.Tensor | None,
              method: str) -> LatentDiffusionModel:
    """A fine-tuned copy of ``model`` (``steps`` DreamBooth steps on ``images``, fresh AdamW as
    Anti-DreamBooth's ``train_one_epoch``); quiet: the caller reports progress."""
    config = FinetuneConfig(
        instance_prompt=params.prompt, steps=steps, lr=params.lr, batch_size=params.batch_size,
        train_text_encoder=params.train_text_encoder,
        prior_preservation=params.prior_preservation and classes is not None,
        class_prompt=params.class_prompt, seed=seed)
    tuned, _ = train(model, images, config, Progress(), classes, method=method)
    return tuned


class SurrogateAttack(LinfPGD):
    """ℓ∞ PGD (δ₀ = 0) ascending L_cond + λ·L_add-log of a surrogate; FSMG and ASPL say how the
    surrogate is obtained."""

    uses_model = True
    #: λ on PID's L_add-log (PID eq. 12); 0 for Anti-DreamBooth itself.
    pid_weight: float = 0.0
    #: Seeded draws the objective's gain in a run's info is averaged over.
    info_draws: int = 16

    def __init__(self, params: SurrogateParams) -> None:
        super().__init__(params.epsilon, params.step_size, 1)
        self.settings = params
        self.pid_weight = float(getattr(params, "pid_weight", 0.0))

    def objective(self, model: LatentDiffusionModel, x: torch.Tensor, cond: torch.Tensor,
                  clean: tuple[torch.Tensor, torch.Tensor],
                  generator: torch.Generator) -> torch.Tensor:
        """Per-image L_cond(θ, x) + λ·L_add-log(x; clean posterior) for one draw (PID eq. 12)."""
        loss, mean, logvar = denoising_loss(model, x, cond, generator)
        return loss + self.pid_weight * pid_objective(mean, logvar, clean[0], clean[1])

    def bound_objective(self, model: LatentDiffusionModel, x: torch.Tensor,
                        generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-image objective of perturbed images against ``model``, clean posterior and
        prompt embedding computed once."""
        with torch.no_grad():
            cond = encode_text(model, model.text_encoder, [self.settings.prompt] * len(x))
            clean = posterior(model.vae, x)
        return lambda xa: self.objective(model, xa, cond, clean, generator)

    def objective_value(self, model: LatentDiffusionModel, clean: torch.Tensor,
                        protected: torch.Tensor, draws: int = 16,
                        seed: int = 12345) -> torch.Tensor:
        """Per image, the objective on ``protected`` minus on ``clean`` against ``model``, each
        averaged over the same ``draws`` seeded draws (no gradient)."""
        with torch.no_grad():
            def mean_over_draws(x: torch.Tensor) -> torch.Tensor:
                generator = torch.Generator().manual_seed(seed)
                objective = self.bound_objective(model, clean, generator)
                return torch.stack([objective(x) for _ in range(draws)]).mean(0)

            return mean_over_draws(protected) - mean_over_draws(clean)

    def summary(self, model: LatentDiffusionModel, clean: torch.Tensor, protected: torch.Tensor,
                history: list[float], what: str) -> dict[str, Any]:
        """The info of a run: the objective's trace and its gain on the 8-bit output."""
        gain = self.objective_value(model, clean, protected, draws=self.info_draws).cpu()
        objective = f"L_cond + {self.pid_weight}·L_add-log" if self.pid_weight else "L_cond"
        return {"pid_weight": self.pid_weight, "prompt": self.settings.prompt,
                "objective_first": history[0] if history else None,
                "objective_last_iterate": history[-1] if history else None,
                "objective_final_8bit": float(gain.mean()),
                "objective_final_8bit_per_image": [float(v) for v in gain],
                "objective_meaning": f"{objective} against {what}, "
                                     "protected minus clean images, mean of "
                                     f"{self.info_draws} seeded draws",
                "objective_trace": history[:: max(1, len(history) // 50)]}
