"""The fine-tuning loop every DreamBooth-style exploit shares (Ruiz et al., CVPR 2023, eq. 2).

The UNet (optionally the text encoder, or LoRA adapters: ``prepare``) learns the instance
prompt on the subject images with the ε-prediction (or v-prediction) MSE, AdamW, optional
prior preservation on class images. The VAE is frozen, so the posterior (μ, log σ²) of each
training image is computed once and a latent is drawn from it at every step, as diffusers'
training script does without re-encoding; ``draw_latents`` implements PID §6.4's adaptive
exploiter, who edits σ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

import audit.diffusion.sampling as sampling
from audit.errors import ModelError

if TYPE_CHECKING:
    from audit.diffusion.loading import LatentDiffusionModel
    from audit.run.progress import Progress


@dataclass(frozen=True)
class FinetuneConfig:
    instance_prompt: str
    steps: int
    lr: float
    batch_size: int
    train_text_encoder: bool
    posterior_sigma: str = "sample"  # sample | zero | clip | fixed (PID §6.4)
    posterior_value: float | None = None
    prior_preservation: bool = False
    prior_loss_weight: float = 1.0
    class_prompt: str = "a photo of person"
    seed: int = 0
    max_grad_norm: float = 1.0
    adam_weight_decay: float = 1e-2
    lr_schedule: str = "constant"  # constant (DreamBooth / PID Table 8) | cosine (decay to 0)
    instance_order: str = "shuffled-epochs"  # as diffusers' DataLoader(shuffle=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_latents(
    mean: torch.Tensor, logvar: torch.Tensor, sigma_mode: str, value: float | None,
    generator: torch.Generator
) -> torch.Tensor:
    """z from N(μ, σ²) as the exploiter chooses to draw it (PID §6.4).

    sample: z = μ + σ·ε (standard); zero: z = μ; clip: σ' = min(σ, value); fixed: σ' = value.
    """
    if sigma_mode == "zero":
        return mean
    std = torch.exp(0.5 * logvar)
    if sigma_mode == "clip":
        if value is None:
            raise ValueError("posterior sigma 'clip' needs a value (the largest σ kept)")
        std = std.clamp(max=value)
    elif sigma_mode == "fixed":
        if value is None:
            raise ValueError("posterior sigma 'fixed' needs a value (the σ used)")
        std = torch.full_like(std, value)
    elif sigma_mode != "sample":
        raise ValueError(f"unknown posterior sigma mode '{sigma_mode}'")
    noise = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
    return mean + std * noise


def instance_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of the instance images for each step, as diffusers' DreamBooth DataLoader
    (``shuffle=True``) draws them: a fresh permutation every epoch, so each image is seen
    equally often; batches are cut from the concatenated permutations (a batch may span two
    epochs, where the DataLoader would end an epoch with a short batch)."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def lr_multiplier(schedule: str, steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: ``constant`` (diffusers' DreamBooth default, PID
    Table 8) or ``cosine`` from 1 to 0 over the run (no warm-up)."""
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
    raise ValueError(f"unknown learning-rate schedule '{schedule}'; choose constant or cosine")


def encode_text(
        model: LatentDiffusionModel, text_encoder: torch.nn.Module,
        prompts: list[str]) -> torch.Tensor:
    tokens = model.tokenizer(
        prompts,
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(next(text_encoder.parameters()).device)
    return text_encoder(tokens)[0]


@dataclass(frozen=True)
class Posteriors:
    """The VAE posteriors N(μ, σ²) of the training images, encoded once (the VAE is frozen).

    ``class_mean`` / ``class_logvar`` are those of the class images, None without prior
    preservation.
    """

    inst_mean: torch.Tensor
    inst_logvar: torch.Tensor
    class_mean: torch.Tensor | None = None
    class_logvar: torch.Tensor | None = None


@dataclass(frozen=True)
class FixedEmbeddings:
    """Instance and class prompt embeddings computed once, when the text encoder is frozen."""

    instance: torch.Tensor
    class_: torch.Tensor


@torch.no_grad()
def encode_posteriors(
    vae: torch.nn.Module,
    images: torch.Tensor,
    class_images: torch.Tensor | None,
    config: FinetuneConfig,
    device: torch.device,
) -> Posteriors:
    """(μ, log σ²) of each instance image and, with prior preservation, of each class image
    (encoded ``sampling.CLASS_BATCH`` at a time: PID's 200 class images at 512 px do not fit one VAE
    pass)."""
    dist = vae.encode(images.to(device) * 2 - 1).latent_dist  # type: ignore[operator]
    if not config.prior_preservation:
        return Posteriors(dist.mean, dist.logvar)
    if class_images is None or len(class_images) == 0:
        raise ValueError("prior preservation needs class images")
    cdists = [vae.encode(chunk.to(device) * 2 - 1).latent_dist  # type: ignore[operator]
              for chunk in class_images.split(sampling.CLASS_BATCH)]
    return Posteriors(dist.mean, dist.logvar, torch.cat([d.mean for d in cdists]),
                      torch.cat([d.logvar for d in cdists]))


def start_training(
    tuned: LatentDiffusionModel, config: FinetuneConfig
) -> tuple[list[torch.nn.Parameter], FixedEmbeddings | None]:
    """Put the UNet (and the text encoder if it is trained) in training mode.

    Returns the parameters the optimiser updates and, when the text encoder is frozen, the
    prompt embeddings computed once (None when it is trained: they are re-encoded every step).
    """
    unet, text_encoder = tuned.unet, tuned.text_encoder
    params = list(unet.parameters())
    unet.train()
    unet.requires_grad_(True)
    if config.train_text_encoder:
        text_encoder.train()
        text_encoder.requires_grad_(True)
        params += list(text_encoder.parameters())
        return params, None
    return params, frozen_embeddings(tuned, config)


def frozen_embeddings(tuned: LatentDiffusionModel, config: FinetuneConfig) -> FixedEmbeddings:
    """Freeze the text encoder and encode the instance and class prompts once."""
    tuned.text_encoder.requires_grad_(False)
    with torch.no_grad():
        return FixedEmbeddings(
            instance=encode_text(tuned, tuned.text_encoder, [config.instance_prompt]),
            class_=encode_text(tuned, tuned.text_encoder, [config.class_prompt]),
        )


def end_training(tuned: LatentDiffusionModel) -> None:
    """Back to evaluation mode with gradients off, as the generation stage expects."""
    tuned.unet.eval()
    tuned.text_encoder.eval()
    tuned.unet.requires_grad_(False)
    tuned.text_encoder.requires_grad_(False)


def prompt_embeddings(
    tuned: LatentDiffusionModel, prompt: str, fixed: torch.Tensor | None, batch_size: int
) -> torch.Tensor:
    """``prompt``'s embedding for a batch: the fixed one repeated, or encoded anew (trained
    text encoder, with gradients) when there is none."""
    if fixed is None:
        return encode_text(tuned, tuned.text_encoder, [prompt] * batch_size)
    return fixed.expand(batch_size, -1, -1).contiguous()


def training_batch(
    tuned: LatentDiffusionModel,
    posteriors: Posteriors,
    fixed: FixedEmbeddings | None,
    config: FinetuneConfig,
    idx: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled latents and prompt embeddings of one step: the instance images ``idx`` and,
    with prior preservation, as many class images drawn at random after them.

    Draws from ``generator`` in this order: instance posterior noise, class indices, class
    posterior noise. ``posterior_sigma`` applies to the instance images only; the class
    latents are always sampled (z = μ + σ·ε).
    """
    latents = draw_latents(
        posteriors.inst_mean[idx], posteriors.inst_logvar[idx], config.posterior_sigma,
        config.posterior_value, generator,
    )
    emb = prompt_embeddings(
        tuned, config.instance_prompt, None if fixed is None else fixed.instance, config.batch_size
    )
    if not config.prior_preservation:
        return latents, emb
    assert posteriors.class_mean is not None and posteriors.class_logvar is not None
    cidx = torch.randint(0, len(posteriors.class_mean), (config.batch_size,), generator=generator)
    class_latents = draw_latents(
        posteriors.class_mean[cidx], posteriors.class_logvar[cidx], "sample", None, generator
    )
    cemb = prompt_embeddings(
        tuned, config.class_prompt, None if fixed is None else fixed.class_, config.batch_size
    )
    return torch.cat([latents, class_latents]), torch.cat([emb, cemb])


def denoising_loss(
    tuned: LatentDiffusionModel,
    latents: torch.Tensor,
    emb: torch.Tensor,
    config: FinetuneConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """DreamBooth's loss on one batch (Ruiz et al. eq. 2): the ε-prediction (or v-prediction)
    MSE at random timesteps, plus ``prior_loss_weight`` × the class half's MSE with prior
    preservation. Draws the noise, then the timesteps, from ``generator``."""
    scheduler = tuned.scheduler
    device = next(tuned.unet.parameters()).device
    scaling = float(getattr(tuned.vae.config, "scaling_factor", 0.18215))
    latents = latents * scaling
    noise = torch.randn(latents.shape, generator=generator).to(device)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator
    ).to(device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = tuned.unet(noisy, timesteps, emb).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    if not config.prior_preservation:
        return F.mse_loss(pred, target)
    pred_inst, pred_class = pred.chunk(2)
    target_inst, target_class = target.chunk(2)
    return F.mse_loss(pred_inst, target_inst) + config.prior_loss_weight * F.mse_loss(
        pred_class, target_class
    )


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    loss: torch.Tensor,
    config: FinetuneConfig,
    step: int,
) -> None:
    """Back-propagate ``loss``, clip the gradient norm and update; a non-finite loss is refused."""
    if not torch.isfinite(loss):
        raise ModelError(
            f"DreamBooth fine-tuning produced a non-finite loss at step {step + 1}/{config.steps} "
            f"(lr {config.lr}); the model output NaN/Inf. Lower the learning rate or use fp32 "
            "weights."
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()


def loss_summary(losses: list[float]) -> dict[str, Any]:
    """Mean loss over the first and the last 10 % of steps, and a trace of at most ~50 points."""
    k = max(1, len(losses) // 10)
    return {
        "loss_first_10pct": sum(losses[:k]) / k if losses else None,
        "loss_last_10pct": sum(losses[-k:]) / k if losses else None,
        "loss_trace": losses[:: max(1, len(losses) // 50)],
    }


Prepare = Callable[["LatentDiffusionModel", FinetuneConfig],
                   tuple[list[torch.nn.Parameter], "FixedEmbeddings | None"]]


def train(
    model: LatentDiffusionModel,
    images: torch.Tensor,
    config: FinetuneConfig,
    progress: Progress,
    class_images: torch.Tensor | None = None,
    *,
    prepare: Prepare | None = None,
    method: str = "DreamBooth",
) -> tuple[LatentDiffusionModel, dict[str, Any]]:
    """The fine-tuning loop every DreamBooth-style exploit shares (Ruiz et al. eq. 2, with prior
    preservation); returns the tuned copy and the loss summary — the base model is untouched.

    ``prepare(tuned, config)`` says what is trained: it returns the parameters the optimiser
    updates and, when the text encoder is frozen, the prompt embeddings computed once
    (``start_training``: the whole UNet, and the text encoder if asked; LoRA: adapters only,
    ``audit/parts/exploits/lora.py``). The fine-tune's generator (seeded with ``config.seed``) is
    drawn from in a fixed order each step: instance batch, posterior sample noise, class batch
    indices, class posterior noise, noise, timesteps.
    """
    tuned = model.fresh_copy()
    device = next(tuned.unet.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    posteriors = encode_posteriors(tuned.vae, images, class_images, config, device)
    params, fixed = (prepare or start_training)(tuned, config)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.adam_weight_decay)
    schedule = lr_multiplier(config.lr_schedule, config.steps)
    if config.instance_order != "shuffled-epochs":
        raise ValueError(f"unknown instance order '{config.instance_order}'; only shuffled-epochs "
                         "is implemented")
    batches = instance_batches(len(images), config.batch_size, generator)
    losses: list[float] = []
    with progress.stage(f"exploit: {method} fine-tune '{config.instance_prompt}'",
                        total=config.steps) as stage:
        for step in range(config.steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * schedule(step)
            latents, emb = training_batch(
                tuned, posteriors, fixed, config, next(batches), generator)
            loss = denoising_loss(tuned, latents, emb, config, generator)
            optimizer_step(optimizer, params, loss, config, step)
            losses.append(float(loss.detach()))
            stage.advance(1, f"loss={losses[-1]:.4f}")
    end_training(tuned)
    return tuned, loss_summary(losses)


def weights_tensors(unet: torch.nn.Module, text_encoder: torch.nn.Module
                    | None) -> dict[str, torch.Tensor]:
    """The fine-tuned state as one flat tensor dict (``unet.*``, ``text_encoder.*``)."""
    tensors = {f"unet.{k}": v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    if text_encoder is not None:
        tensors.update({f"text_encoder.{k}": v.detach().cpu().contiguous() for k,
                        v in text_encoder.state_dict().items()})
    return tensors


def load_weights(
        model: LatentDiffusionModel,
        tensors: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A fresh copy of the base model with cached fine-tuned weights loaded into it."""
    tuned = model.fresh_copy()
    device = next(tuned.unet.parameters()).device
    unet_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("unet.")}
    tuned.unet.load_state_dict(unet_state)
    te_state = {k[13:]: v.to(device) for k, v in tensors.items() if k.startswith("text_encoder.")}
    if te_state:
        tuned.text_encoder.load_state_dict(te_state)
    tuned.unet.eval()
    tuned.text_encoder.eval()
    return tuned.unet, tuned.text_encoder
