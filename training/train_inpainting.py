"""Train the embedded tiny inpainting UNet (``tiny-inpainting``) from ``tiny``, on CPU, deterministically.

    python training/train_inpainting.py --out audit/models/weights/tiny_inpainting

Stable Diffusion's inpainting model (runwayml/stable-diffusion-inpainting, model card
"sd-v1-5-inpainting") is SD's UNet with five extra input channels — the mask (1) and the
VAE latent of the masked image (4), concatenated after the noisy latent — zero-initialised
after restoring the text-to-image checkpoint, then trained on synthetic masks, a quarter of
the time masking everything; the VAE and the text encoder are SD's, frozen. This script does
the same to the embedded ``tiny`` model:

- the UNet of ``audit/models/weights/tiny`` with ``in_channels`` 9: ``conv_in``'s first four
  input channels copied, the five new ones zero, so the model starts as ``tiny`` exactly;
- tiny's VAE and text encoder, frozen (the inpainting model shares them, as SD-inpainting
  shares SD 1.5's): only ``unet/`` ships;
- the inputs as diffusers' ``StableDiffusionInpaintPipeline`` builds them at sampling time:
  the masked image ``x · (mask < 0.5)`` in [−1, 1] encoded by a posterior *sample* times the
  scaling factor, the mask resized to the latent by nearest-neighbour interpolation;
- masks (our choice; SD used LaMa's generator of thick strokes and boxes, which needs its
  code): a quarter everything; a quarter one to three boxes; a quarter an ellipse; a quarter
  the complement of an ellipse (keep a region, regenerate around it — the kind of mask the
  ``inpainting`` exploit uses on a face), with random centres and half-axes;
- ε-prediction MSE on SD's DDPM schedule, on the crops and captions ``tiny`` was trained on
  (10 % empty captions for classifier-free guidance), AdamW, cosine schedule.

Deterministic as ``train_tiny.py``: every draw from a seeded CPU generator and
``torch.use_deterministic_algorithms(True)``. Loss curve, wall time and the inpainting check
(ε-MSE with the mask and masked image against the same UNet given a blank condition) are
written to ``training_log.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import SOURCES  # noqa: E402
from train_tiny import CropSampler, cosine_lr, save_half  # noqa: E402

from audit.diffusion.editing import INPAINT_CHANNELS  # noqa: E402
from audit.diffusion.tiny import tiny_weights_path  # noqa: E402

TINY = tiny_weights_path("tiny")


def random_masks(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) binary masks, 1 = regenerate (the kinds in the module docstring)."""
    side = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(side, side, indexing="ij")
    masks = []

    def u(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    for _ in range(n):
        kind = int(torch.randint(4, (), generator=generator))
        if kind == 0:
            mask = torch.ones(size, size)
        elif kind == 1:
            mask = torch.zeros(size, size)
            for _ in range(int(torch.randint(1, 4, (), generator=generator))):
                h, w = u(0.2, 1.2), u(0.2, 1.2)
                cy, cx = u(-1, 1), u(-1, 1)
                mask[((y - cy).abs() <= h / 2) & ((x - cx).abs() <= w / 2)] = 1
        else:
            ay, ax = u(0.25, 0.9), u(0.25, 0.9)
            cy, cx = u(-0.4, 0.4), u(-0.4, 0.4)
            inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1
            mask = (inside if kind == 2 else ~inside).float()
        masks.append(mask)
    return torch.stack(masks)[:, None]


def condition(vae: Any, images: torch.Tensor, masks: torch.Tensor, scaling: float,
              generator: torch.Generator, latent: int) -> torch.Tensor:
    """(mask at latent size, masked-image latent): the 5 channels the pipeline concatenates."""
    masked = images * (masks < 0.5)
    dist = vae.encode(masked).latent_dist
    masked_latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)) * scaling
    return torch.cat([F.interpolate(masks, size=(latent, latent)), masked_latents], dim=1)


def load_tiny() -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    vae = AutoencoderKL.from_pretrained(TINY, subfolder="vae", torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(TINY, subfolder="unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(TINY, subfolder="text_encoder", torch_dtype=torch.float32)
    for module in (vae, text_encoder):
        module.eval().requires_grad_(False)
    return vae, unet, text_encoder


def batch(sampler: CropSampler, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, size: int,
          rng: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One training batch: noisy latent, timesteps, text states, condition, target noise."""
    captions = [source.captions for source in SOURCES]
    x, which = sampler.sample(size)
    prompts = []
    for index in which.tolist():
        pick = int(torch.randint(len(captions[index]), (), generator=rng))
        prompts.append("" if float(torch.rand((), generator=rng)) < 0.1 else captions[index][pick])
    scaling = float(vae.config.scaling_factor)
    with torch.no_grad():
        images = x * 2 - 1
        dist = vae.encode(images).latent_dist
        latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=rng)) * scaling
        masks = random_masks(size, x.shape[-1], rng)
        cond = condition(vae, images, masks, scaling, rng, latents.shape[-1])
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids
        states = text_encoder(tokens)[0]
    noise = torch.randn(latents.shape, generator=rng)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=rng)
    return scheduler.add_noise(latents, noise, timesteps), timesteps, states, cond, noise


@torch.no_grad()
def inpainting_check(unet: Any, batches: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """ε-MSE on held-out batches with the true condition, and with the condition blanked (mask 1,
    masked latent 0): a UNet that uses the masked image predicts better with it."""
    with_cond, blank = [], []
    for noisy, t, states, cond, noise in batches:
        with_cond.append(F.mse_loss(unet(torch.cat([noisy, cond], 1), t, states).sample, noise))
        empty = torch.cat([torch.ones_like(cond[:, :1]), torch.zeros_like(cond[:, 1:])], 1)
        blank.append(F.mse_loss(unet(torch.cat([noisy, empty], 1), t, states).sample, noise))
    return {"eps_mse_with_condition": round(float(torch.stack(with_cond).mean()), 5),
            "eps_mse_condition_blanked": round(float(torch.stack(blank).mean()), 5),
            "batches": len(batches)}


def train(args: argparse.Namespace, log: dict[str, Any]) -> Any:
    from diffusers import DDPMScheduler

    from audit.diffusion.tiny import SCHEDULER_CONFIG, inpainting_extension
    from audit.diffusion.tokenizer import clip_tokenizer

    vae, base, text_encoder = load_tiny()
    unet = inpainting_extension(base, INPAINT_CHANNELS).train()
    tokenizer, scheduler = clip_tokenizer(), DDPMScheduler(**SCHEDULER_CONFIG)
    images = [source.load() for source in SOURCES]
    sampler = CropSampler(images, args.seed + 30)
    rng = torch.Generator().manual_seed(args.seed + 31)
    held = CropSampler(images, args.seed + 32, held_out=True)
    held_rng = torch.Generator().manual_seed(args.seed + 33)
    checks = [batch(held, vae, text_encoder, tokenizer, scheduler, args.batch, held_rng) for _ in range(4)]
    log["check_before"] = inpainting_check(unet.eval(), checks)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-2)
    curve, start = [], time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        noisy, t, states, cond, noise = batch(sampler, vae, text_encoder, tokenizer, scheduler, args.batch, rng)
        loss = F.mse_loss(unet(torch.cat([noisy, cond], 1), t, states).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            curve.append({"step": step, "loss": round(float(loss), 5), "seconds": round(time.time() - start, 1)})
            print(f"inpainting unet {step:5d} loss {float(loss):.4f} {time.time() - start:.0f}s", flush=True)
    unet.eval().requires_grad_(False)
    log["unet"] = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "seconds": round(time.time() - start, 1),
                   "loss_curve": curve}
    log["check_after"] = inpainting_check(unet, checks)
    print(json.dumps({"before": log["check_before"], "after": log["check_after"]}), flush=True)
    return unet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("audit/models/weights/tiny_inpainting"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    from audit.diffusion.tiny import weights_hash

    log: dict[str, Any] = {"environment": {
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "machine": platform.machine(), "command": " ".join(["python", "training/train_inpainting.py", *(argv or sys.argv[1:])])},
        "base": {"folder": "audit/models/weights/tiny", "weights_hash": weights_hash(TINY)}}
    unet = train(args, log)
    save_half(unet, args.out / "unet")
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    from audit.diffusion.tiny import write_checksums

    print(f"weights hash (SHA-256 of {args.out / 'SHA256SUMS'}): {write_checksums(args.out, ('unet/config.json', 'unet/diffusion_pytorch_model.safetensors'))}")


if __name__ == "__main__":
    main()
