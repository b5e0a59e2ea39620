"""Train the embedded tiny latent-diffusion pipeline on CPU, deterministically.

    python training/train_tiny.py --out audit/models/weights/tiny            # both stages
    python training/train_tiny.py --stage vae  --out /tmp/tiny               # one stage
    python training/train_tiny.py --stage unet --out /tmp/tiny               # needs the VAE
    python training/train_tiny.py --stage unet --variant tiny-2 --vae-from audit/models/weights/tiny \
        --out audit/models/weights/tiny_2                                      # the transfer model

Stage ``vae``: the AutoencoderKL of ``audit/models/tiny.py`` on random 64-px crops (random
scale, position and flip) of the package-shipped photographs in ``training/sources.py``, with
SD's VAE objective minus its learned parts (LPIPS and the patch GAN need downloaded weights):
L1 + MSE reconstruction + 1e-6·KL, the KL weight of SD's ``kl-f8`` config. Its latent scaling
factor is then measured (1 / std of posterior samples) and written into the config, as SD
did for 0.18215. Stage ``unet``: the UNet and the CLIP text encoder, jointly, with SD's ε
objective on the DDPM schedule, on crops captioned per source (10 % empty captions, so that
classifier-free guidance has an unconditional branch). The subject of the default audit is
not in the data (see ``sources.py``).

Deterministic: every random draw comes from generators seeded by ``--seed`` and
``torch.use_deterministic_algorithms(True)``; the same machine with the same thread count
rebuilds bit-identical weights. The loss curves, the held-out reconstruction quality and
the wall time are written to ``training_log.json`` beside the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import HELD_OUT_FRACTION, SOURCES  # noqa: E402

from audit.models.tiny import TINY_VARIANTS, VAE_CONFIG  # noqa: E402

RESOLUTION = 64


class CropSampler:
    """Random square crops (log-uniform side between 64 px and the image's shorter side),
    resized to 64 px with antialiasing and flipped half of the time; ``held_out`` crops come
    from the right-most ``HELD_OUT_FRACTION`` of each image's columns, training crops from
    the rest."""

    def __init__(self, images: list[torch.Tensor], seed: int, held_out: bool = False) -> None:
        self.images = []
        for image in images:
            split = int(image.shape[-1] * (1 - HELD_OUT_FRACTION))
            self.images.append(image[..., split:] if held_out else image[..., :split])
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops, which = [], []
        for _ in range(batch):
            index = int(torch.randint(len(self.images), (), generator=self.generator))
            image = self.images[index]
            h, w = image.shape[-2:]
            smallest, largest = min(RESOLUTION, h, w), min(h, w)
            side = round(math.exp(math.log(smallest) + self._uniform() * (math.log(largest) - math.log(smallest))))
            top = int(self._uniform() * (h - side + 1))
            left = int(self._uniform() * (w - side + 1))
            crop = image[:, top : top + side, left : left + side][None]
            crop = F.interpolate(crop, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
            if self._uniform() < 0.5:
                crop = crop.flip(-1)
            crops.append(crop[0].clamp(0, 1))
            which.append(index)
        return torch.stack(crops), torch.tensor(which)


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def reconstruction_quality(vae: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM (piq, data range 1) of the posterior-mean reconstruction."""
    import piq

    with torch.no_grad():
        recon = vae.decode(vae.encode(images * 2 - 1).latent_dist.mean).sample
    recon = ((recon + 1) / 2).clamp(0, 1)
    return {
        "psnr_db": round(float(piq.psnr(recon, images, data_range=1.0)), 2),
        "ssim": round(float(piq.ssim(recon, images, data_range=1.0)), 4),
        "n": len(images),
    }


def subject_images() -> torch.Tensor:
    from audit.data import bundled_subject

    return bundled_subject(RESOLUTION).images


def train_vae(images: list[torch.Tensor], args: argparse.Namespace, log: dict) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE_CONFIG).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    sampler = CropSampler(images, args.seed)
    noise = torch.Generator().manual_seed(args.seed + 1)
    curve, start = [], time.time()
    for step in range(args.vae_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.vae_steps, args.vae_lr)
        x = sampler.sample(args.vae_batch)[0] * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise)
        recon = vae.decode(z).sample
        rec = (recon - x).abs().mean() + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / z[0].numel()  # per latent dimension
        # SD kl-f8: sum-over-pixels NLL + 1e-6 · summed KL; both divided here by the pixel count.
        loss = rec + 1e-6 * posterior.kl().mean() / x[0].numel()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == args.vae_steps - 1:
            curve.append({"step": step, "loss": round(float(loss), 5), "reconstruction": round(float(rec), 5),
                          "kl_per_dim": round(float(kl), 4), "seconds": round(time.time() - start, 1)})
            print(f"vae {step:5d} loss {float(loss):.4f} rec {float(rec):.4f} kl/dim {float(kl):.3f} "
                  f"{time.time() - start:.0f}s", flush=True)
    vae.eval().requires_grad_(False)
    held_out = CropSampler(images, args.seed + 2, held_out=True).sample(256)[0]
    train_crops = CropSampler(images, args.seed + 3).sample(256)[0]
    with torch.no_grad():
        dist = vae.encode(train_crops * 2 - 1).latent_dist
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=noise)
        scaling = round(1.0 / float(latents.std()), 5)
    vae.register_to_config(scaling_factor=scaling)
    log["vae"] = {
        "steps": args.vae_steps, "batch": args.vae_batch, "lr": args.vae_lr, "seconds": round(time.time() - start, 1),
        "loss_curve": curve, "scaling_factor": scaling,
        "reconstruction": {
            "held_out_crops": reconstruction_quality(vae, held_out),
            "training_crops": reconstruction_quality(vae, train_crops),
            "subject_unseen": reconstruction_quality(vae, subject_images()),
        },
    }
    print(json.dumps(log["vae"]["reconstruction"]), flush=True)
    return vae


def train_unet(images: list[torch.Tensor], vae: torch.nn.Module, args: argparse.Namespace, log: dict):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from audit.models.tokenizer import clip_tokenizer

    spec = TINY_VARIANTS[args.variant]
    seed = args.seed + spec.seed_offset  # tiny-2's UNet and text encoder start and train from other draws
    torch.manual_seed(seed + 10)
    unet = UNet2DConditionModel(**spec.unet).train()
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder)).train()
    tokenizer = clip_tokenizer()
    scheduler = DDPMScheduler(**spec.scheduler)
    scaling = float(vae.config.scaling_factor)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    sampler = CropSampler(images, seed + 20)
    rng = torch.Generator().manual_seed(seed + 21)
    captions = [source.captions for source in SOURCES]
    curve, start = [], time.time()
    for step in range(args.unet_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.unet_steps, args.unet_lr)
        x, which = sampler.sample(args.unet_batch)
        prompts = []
        for index in which.tolist():
            options = captions[index]
            pick = int(torch.randint(len(options), (), generator=rng))
            prompts.append("" if float(torch.rand((), generator=rng)) < 0.1 else options[pick])
        with torch.no_grad():
            dist = vae.encode(x * 2 - 1).latent_dist
            latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=rng)) * scaling
        noise = torch.randn(latents.shape, generator=rng)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), generator=rng)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids
        prediction = unet(noisy, timesteps, text_encoder(tokens)[0]).sample
        # SD's objective in the model's parameterisation: ε (SD 1.5) or v (SD 2.1; Salimans & Ho 2022)
        target = scheduler.get_velocity(latents, noise, timesteps) if scheduler.config.prediction_type == "v_prediction" else noise
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 50 == 0 or step == args.unet_steps - 1:
            curve.append({"step": step, "loss": round(float(loss), 5), "seconds": round(time.time() - start, 1)})
            print(f"unet {step:5d} loss {float(loss):.4f} {time.time() - start:.0f}s", flush=True)
    log["unet"] = {"steps": args.unet_steps, "batch": args.unet_batch, "lr": args.unet_lr,
                   "seconds": round(time.time() - start, 1), "loss_curve": curve}
    return unet.eval(), text_encoder.eval()


def save_half(module: torch.nn.Module, folder: Path) -> None:
    """fp16 safetensors (half the bytes); the toolkit loads them back as fp32."""
    module.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    module.to(torch.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("audit/models/weights/tiny"))
    parser.add_argument("--stage", choices=["all", "vae", "unet"], default="all")
    parser.add_argument("--variant", choices=list(TINY_VARIANTS), default="tiny",
                        help="which embedded model: tiny (SD 1.5-shaped) or tiny-2 (SD 2.1-shaped, shares tiny's VAE)")
    parser.add_argument("--vae-from", type=Path, default=None,
                        help="stage unet: copy the trained VAE from this folder first (tiny-2: audit/models/weights/tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1500)
    parser.add_argument("--vae-batch", type=int, default=16)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--unet-steps", type=int, default=2500)
    parser.add_argument("--unet-batch", type=int, default=32)
    parser.add_argument("--unet-lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() and args.stage == "unet" else {}
    log[f"environment_{args.stage}"] = {"torch": torch.__version__, "python": platform.python_version(),
                          "threads": torch.get_num_threads(), "machine": platform.machine(),
                          "command": " ".join(["python", "training/train_tiny.py", *(argv or sys.argv[1:])])}
    log["sources"] = [{"name": s.name, "package": s.package, "licence": s.licence, "captions": list(s.captions)}
                      for s in SOURCES]
    images = [source.load() for source in SOURCES]
    if args.stage in ("all", "vae"):
        vae = train_vae(images, args, log)
        save_half(vae, args.out / "vae")
    else:
        from diffusers import AutoencoderKL

        if args.vae_from is not None:  # the same VAE bytes: SHA256SUMS then shows the shared component
            import shutil

            shutil.copytree(args.vae_from / "vae", args.out / "vae", dirs_exist_ok=True)
        vae = AutoencoderKL.from_pretrained(args.out / "vae", torch_dtype=torch.float32).eval()
    if args.stage in ("all", "unet"):
        unet, text_encoder = train_unet(images, vae, args, log)
        save_half(unet, args.out / "unet")
        save_half(text_encoder, args.out / "text_encoder")
    log_path.write_text(json.dumps(log, indent=1) + "\n")
    if (args.out / "unet").is_dir() and (args.out / "vae").is_dir():
        from audit.models.tiny import write_checksums

        print(f"weights hash (SHA-256 of {args.out / 'SHA256SUMS'}): {write_checksums(args.out)}")


if __name__ == "__main__":
    main()
