"""Prompt-guided editing of given images (PhotoGuard §5): img2img (SDEdit) and inpainting.

PhotoGuard edits each image with a text prompt and one seed, the same seed for the clean and
the immunized copy, so that a difference between the two edits is due to the immunization and
not to the random draws (PhotoGuard App. A.1). Its sampler settings are Table 8's: guidance
7.5, 100 steps, η 1 (DDIM with η = 1 here: η is DDIM's parameter). The pipelines are built from
the audited model's loaded components, as diffusers' ``from_pipe`` does: nothing is reloaded.

Slots: every image is edited with every prompt, prompt-major (slot = p · N + i for prompt p
and image i), and slot s draws from its own CPU generator seeded ``seed + s`` — the posterior
sample of the VAE, the noise of SDEdit's starting point and every step's noise. The same
images, prompts and seed therefore give the same edits, and slot s of the clean run and of the
protected run share every random draw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from audit.errors import ModelError

if TYPE_CHECKING:
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    from audit.diffusion.loading import LatentDiffusionModel
    from audit.run.progress import Progress

Mode = Literal["img2img", "inpainting"]
INPAINT_CHANNELS = 9  # latents 4 + mask 1 + masked-image latents 4 (SD inpainting UNets)
# The kept region of the face mask: a centred ellipse of these half-axes (fractions of the
# side). The bundled subject's views are face-centred crops (audit/data/subjects.py); for other
# subjects the centred ellipse is the assumption, said in the record.
FACE_ELLIPSE = (0.28, 0.36)  # (horizontal, vertical) half-axes


@dataclass(frozen=True)
class EditConfig:
    """One editing run: prompts, strength (SDEdit's share of the schedule), steps, guidance."""

    prompts: tuple[str, ...]
    strength: float
    steps: int
    guidance_scale: float
    negative_prompt: str
    eta: float
    seed: int = 0
    mode: Mode = "img2img"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = list(self.prompts)
        return data


def face_mask(n: int, resolution: int) -> torch.Tensor:
    """Inpainting mask, 1 = edit, 0 = keep: everything but a centred ellipse (the face).

    PhotoGuard's inpainting edits keep the people's heads and regenerate the rest (§5, Fig. 2);
    the subject's views are face-centred crops, so the head is the centred ellipse."""
    side = torch.linspace(-1, 1, resolution)
    y, x = torch.meshgrid(side, side, indexing="ij")
    ax, ay = FACE_ELLIPSE
    inside = (x / (2 * ax)) ** 2 + (y / (2 * ay)) ** 2 <= 1
    mask = (~inside).float()
    return mask.expand(n, 1, resolution, resolution).clone()


def _scheduler(model: LatentDiffusionModel) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(model.scheduler.config)


def _components(model: LatentDiffusionModel, unet: torch.nn.Module,
                text_encoder: torch.nn.Module) -> dict[str, Any]:
    return {"vae": model.vae, "text_encoder": text_encoder, "tokenizer": model.tokenizer,
            "unet": unet, "scheduler": _scheduler(model), "safety_checker": None,
            "feature_extractor": None, "requires_safety_checker": False}


def img2img_pipeline(model: LatentDiffusionModel, unet: torch.nn.Module,
                     text_encoder: torch.nn.Module) -> StableDiffusionImg2ImgPipeline:
    """SDEdit over the loaded components (no safety checker, progress bar off)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**_components(model, unet, text_encoder))
    pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipe


# The built-in models' inpainting companions: an inpainting UNet trained from the model's own
# UNet that shares its VAE and text encoder, as SD's inpainting model shares SD 1.5's
# (``training/train_inpainting.py``; model card ``audit/models/weights/tiny_inpainting``).
COMPANIONS = {"tiny": "tiny-inpainting"}


@dataclass(frozen=True)
class InpaintingUNet:
    """The exploiter's inpainting UNet and where it came from (its fingerprint keys the edits)."""

    unet: Any
    model_id: str
    fingerprint: str
    source: str


def inpainting_spec(model: LatentDiffusionModel, requested: str | None) -> str | None:
    """Which inpainting UNet edits on ``model``: ``requested`` (the exploit's ``inpainting_model``),
    else the model's own UNet when it takes the inpainting inputs (None), else its companion."""
    if requested is not None:
        return requested
    if int(model.unet.config.in_channels) == INPAINT_CHANNELS:
        return None
    return COMPANIONS.get(model.model_id)


def inpainting_unavailable(model: LatentDiffusionModel,
                           requested: str | None = None) -> str | None:
    """Why ``model`` cannot inpaint as PhotoGuard does, or None when it can (a requested UNet that
    cannot be loaded says why when it is loaded)."""
    channels = int(model.unet.config.in_channels)
    if requested is not None or channels == INPAINT_CHANNELS or model.model_id in COMPANIONS:
        return None
    return (f"unavailable: inpainting needs an inpainting UNet ({INPAINT_CHANNELS} input channels: "
            f"latents, mask and masked-image latents, as PhotoGuard's Stable Diffusion inpainting "
            f"model); model {model.model_id}'s UNet takes {channels}. Name one in the scenario "
            "(`inpainting: {inpainting_model: runwayml/stable-diffusion-inpainting}`, a hub id "
            "with --allow-download or a local diffusers folder; its VAE and text encoder must be "
            "the audited model's), pass an inpainting model as --model, or run the img2img "
            "scenarios (edit-*.yaml)")


def load_inpainting_unet(model: LatentDiffusionModel, requested: str | None,
                         allow_download: bool) -> InpaintingUNet:
    """The inpainting UNet of ``inpainting_spec``, checked against ``model``'s VAE and text
    encoder (only the UNet is loaded: the pipeline takes the rest from the audited model)."""
    spec = inpainting_spec(model, requested)
    if spec is None:
        if int(model.unet.config.in_channels) != INPAINT_CHANNELS:
            raise ModelError(inpainting_unavailable(model) or "")
        return InpaintingUNet(model.unet, model.model_id, model.fingerprint, model.source)
    from audit.diffusion.loading import load_unet

    device = next(model.unet.parameters()).device
    unet, fingerprint, source = load_unet(spec, device, allow_download=allow_download)
    config = unet.config
    problems = []
    if int(config.in_channels) != INPAINT_CHANNELS:
        problems.append(f"its UNet takes {config.in_channels} input channels, not "
                        f"{INPAINT_CHANNELS}")
    width = int(model.text_encoder.config.hidden_size)
    if int(config.cross_attention_dim) != width:
        problems.append(f"its cross-attention width {config.cross_attention_dim} is not the "
                        f"audited text encoder's {width}")
    if int(config.sample_size) * model.vae_scale_factor != model.resolution:
        problems.append(f"it samples {int(config.sample_size) * model.vae_scale_factor} px, "
                        f"the audited model {model.resolution} px")
    if problems:
        raise ModelError(f"inpainting_model={spec}: not an inpainting UNet for model "
                         f"{model.model_id}: {'; '.join(problems)}. Name the inpainting model "
                         "of the audited model's family (SD 1.x: "
                         "runwayml/stable-diffusion-inpainting).")
    return InpaintingUNet(unet, spec, fingerprint, source)


def inpainting_pipeline(model: LatentDiffusionModel, unet: torch.nn.Module,
                        text_encoder: torch.nn.Module) -> StableDiffusionInpaintPipeline:
    """Inpainting over the loaded components; refuses a UNet without the inpainting inputs."""
    from diffusers import StableDiffusionInpaintPipeline

    channels = int(unet.config.in_channels)  # type: ignore[union-attr,arg-type]
    if channels != INPAINT_CHANNELS:
        raise ModelError(inpainting_unavailable(model) or f"the inpainting UNet takes {channels} "
                         f"input channels, not {INPAINT_CHANNELS}")
    pipe = StableDiffusionInpaintPipeline(**_components(model, unet, text_encoder))
    pipe.set_progress_bar_config(disable=True)  # type: ignore[attr-defined]
    return pipe


def slot_generators(config: EditConfig, n_images: int, prompt_index: int) -> list[torch.Generator]:
    """One CPU generator per image for prompt ``prompt_index``, seeded ``seed + slot``."""
    return [torch.Generator(device="cpu").manual_seed(config.seed + prompt_index * n_images + i)
            for i in range(n_images)]


@torch.no_grad()
def edit(model: LatentDiffusionModel, images: torch.Tensor, config: EditConfig, resolution: int,
         progress: Progress, unet: torch.nn.Module | None = None) -> torch.Tensor:
    """Every image edited with every prompt: (len(prompts)·N, 3, R, R) in [0, 1], prompt-major.
    ``unet``: the inpainting UNet (``load_inpainting_unet``); default the model's own."""
    unet, text_encoder = unet if unet is not None else model.unet, model.text_encoder
    pipe: Any = (img2img_pipeline if config.mode == "img2img"
                 else inpainting_pipeline)(model, unet, text_encoder)
    device = next(unet.parameters()).device
    n = len(images)
    extra: dict[str, Any] = {}
    if config.mode == "inpainting":
        extra = {"mask_image": face_mask(n, resolution), "height": resolution, "width": resolution}
    outputs = []
    with progress.stage(f"exploit: {config.mode} edits ({config.steps} DDIM steps × strength "
                        f"{config.strength:g})", total=len(config.prompts) * n,
                        unit="edits") as stage:
        for p, prompt in enumerate(config.prompts):
            # The generators draw on the CPU (slot_noise's rule), whatever the device.
            result = pipe(prompt=[prompt] * n, negative_prompt=[config.negative_prompt] * n,
                          image=images.float().clamp(0, 1).to(device), strength=config.strength,
                          num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                          eta=config.eta, generator=slot_generators(config, n, p),
                          output_type="pt", **extra).images
            if not torch.isfinite(result).all():
                raise ModelError(f"{config.mode} produced NaN/Inf for prompt '{prompt}' (model "
                                 f"{model.model_id}); run in fp32.")
            outputs.append(result.float().cpu().clamp(0, 1))
            stage.advance(n)
    return torch.cat(outputs)
