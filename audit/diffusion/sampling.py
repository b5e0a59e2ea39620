"""Generation from a (fine-tuned) latent diffusion model, as PID App. A.1 evaluates it.

DDPM sampling, classifier-free guidance and a negative prompt, with one fixed seed per
generated image slot, so that the clean, protected and attacked exploits (and the untrained
reference) are compared image by image. The pipeline is built from the loaded components,
as diffusers' ``from_pipe`` does: nothing is reloaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from audit.errors import ModelError

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

    from audit.diffusion.loading import LatentDiffusionModel
    from audit.run.progress import Progress


# Class images are generated and encoded this many at a time (diffusers' DreamBooth script
# samples 4 per batch, PID's run 5): bounded memory at 512-768 px, one pass on the smoke tier.
CLASS_BATCH = 8


@dataclass(frozen=True)
class GenerationConfig:
    prompts: tuple[str, ...]
    images_per_prompt: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    seed: int = 0
    sampler: str = "DDPM"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = list(self.prompts)
        return data


def generation_pipeline(
    model: LatentDiffusionModel, unet: torch.nn.Module, text_encoder: torch.nn.Module
) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline over the fine-tuned weights with a DDPM scheduler (PID
    App. A.1), no safety checker, progress bar off."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    scheduler = DDPMScheduler.from_config(model.scheduler.config)
    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=text_encoder,
        tokenizer=model.tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipe


def slot_noise(
    model: LatentDiffusionModel,
    unet: torch.nn.Module,
    config: GenerationConfig,
    prompt_index: int,
    resolution: int,
) -> tuple[list[torch.Generator], torch.Tensor]:
    """One CPU generator per image slot of a prompt (seed ``seed + slot``, slots numbered
    prompt-major) and the initial latents each draws first, stacked on the CPU."""
    generators = [
        torch.Generator(device="cpu").manual_seed(config.seed + prompt_index
                                                  * config.images_per_prompt + i)
        for i in range(config.images_per_prompt)
    ]
    side = resolution // model.vae_scale_factor
    latents = torch.stack([torch.randn((unet.config.in_channels, side, side), generator=g)  # type: ignore[union-attr,arg-type]
                           for g in generators])
    return generators, latents


@torch.no_grad()
def generate(
    model: LatentDiffusionModel,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    config: GenerationConfig,
    resolution: int,
    progress: Progress,
) -> torch.Tensor:
    """Generate ``images_per_prompt`` images per prompt; image slot i uses seed ``seed + i``.

    Returns a float image batch (len(prompts)·images_per_prompt, 3, R, R), prompt-major.
    """
    pipe = generation_pipeline(model, unet, text_encoder)
    device = next(unet.parameters()).device
    n = config.images_per_prompt
    outputs = []
    with progress.stage(
        f"exploit: generate ({config.steps} DDPM steps)", total=len(config.prompts) * n,
        unit="images"
    ) as stage:
        for p, prompt in enumerate(config.prompts):
            generators, latents = slot_noise(model, unet, config, p, resolution)
            result = pipe(  # type: ignore[operator]
                prompt=[prompt] * n,
                negative_prompt=[config.negative_prompt] * n,
                num_inference_steps=config.steps,
                guidance_scale=config.guidance_scale,
                height=resolution,
                width=resolution,
                latents=latents.to(device),
                generator=generators,
                output_type="pt",
            ).images
            if not torch.isfinite(result).all():
                raise ModelError(
                    f"generation produced NaN/Inf for prompt '{prompt}' (model {model.model_id}); "
                    "the fine-tuned weights diverged or the model runs in a dtype too small. "
                    "Lower the fine-tuning learning rate or run in fp32."
                )
            outputs.append(result.float().cpu().clamp(0, 1))
            stage.advance(n)
    return torch.cat(outputs)
