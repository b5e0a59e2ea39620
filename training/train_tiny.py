"""Train the embedded tiny latent-diffusion pipeline on CPU, deterministically.

    python training/train_tiny.py --out audit/models/weights/tiny            # both stages
    python training/train_tiny.py --stage vae  --out /tmp/tiny               # one stage
    python training/train_tiny.py --stage unet --out /tmp/tiny               # needs the VAE
    python training/train_tiny.py --stage unet --variant tiny-2 --vae-from audit/models/weights/tiny \
        --out audit/models/weights/tiny_2                                      # the transfer model

Stage ``vae``: the AutoencoderKL of ``audit/diffusion/tiny.py`` on random 64-px crops (random
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

Options for other miniatures (defaults reproduce the recipe above bit for bit):
``--device cuda`` (random draws stay on CPU generators, so the data and noise are the same
draws; CUDA kernels are not bitwise CPU's, and deterministic mode only warns there);
``--vae-config`` (``VAE_CONFIGS``: deeper / wider encoders at the same factor 4, 16×16×4
latent); ``--kl-weight``; a high-frequency loss (``--grad-weight``: L1 on image gradients,
``--fft-weight``: L1 on FFT magnitudes); a patch-GAN (``--gan-weight``: taming-transformers'
``NLayerDiscriminator`` with the hinge loss and the adaptive weight of SD's
``LPIPSWithDiscriminator``, without LPIPS, whose weights are a download); and wall-clock
budgets (``--vae-seconds``, ``--unet-seconds``) that fit the step count into a time box.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import HELD_OUT_FRACTION, SOURCES  # noqa: E402

from audit.diffusion.tiny import TINY_VARIANTS, VAE_CONFIG  # noqa: E402

RESOLUTION = 64

# VAE architectures for ``--vae-config``: diffusers ``AutoencoderKL`` kwargs, all with 3
# levels (two downsamplings: factor 4, a 16×16×4 latent at 64 px), so the UNet and every
# fine-tune cost what they cost now. SD's kl-f8 (ldm ``configs/autoencoder/
# autoencoder_kl_32x32x4.yaml``; diffusers ``block_out_channels`` [128, 256, 512, 512],
# ``layers_per_block`` 2, ``norm_num_groups`` 32, a mid-block attention) is 4 levels × 2 ResNet
# blocks; these move towards it in depth (2 blocks per level) and width, not in levels.
VAE_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(VAE_CONFIG),  # the shipped miniature: 32-64-64, 1 block per level
    "tiny-l2": {**VAE_CONFIG, "layers_per_block": 2},  # kl-f8's num_res_blocks: 2
    "deep": {**VAE_CONFIG, "layers_per_block": 2, "block_out_channels": [32, 64, 128]},  # kl-f8's widening ch_mult
    "wide": {**VAE_CONFIG, "layers_per_block": 2, "block_out_channels": [64, 128, 128], "norm_num_groups": 32},
}
# SD's factor 8 (4 levels, three downsamplings) at 128 px (``--resolution 128``): the latent is
# still 16×16×4, so the UNet and the fine-tunes cost what they cost now, while each latent
# element sees an 8×8 patch as on SD (PID's ℓ∞ budget spreads over 4× the pixels per latent).
_F8 = {**VAE_CONFIG, "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
       "sample_size": 128}
VAE_CONFIGS.update({
    "f8": {**_F8, "block_out_channels": [32, 64, 64, 64]},  # the shipped widths + SD's fourth level
    "f8-deep": {**_F8, "layers_per_block": 2, "block_out_channels": [32, 64, 128, 128]},
    "f8-wide": {**_F8, "layers_per_block": 2, "block_out_channels": [64, 128, 256, 256], "norm_num_groups": 32},
})


class CropSampler:
    """Random square crops (log-uniform side between ``size`` px (64) and the image's shorter
    side), resized to ``size`` px with antialiasing and flipped half of the time; ``held_out`` crops come
    from the right-most ``HELD_OUT_FRACTION`` of each image's columns, training crops from
    the rest."""

    def __init__(self, images: list[torch.Tensor], seed: int, held_out: bool = False,
                 device: torch.device | str = "cpu", size: int = RESOLUTION) -> None:
        self.size = size
        self.images = []
        for image in images:
            split = int(image.shape[-1] * (1 - HELD_OUT_FRACTION))
            # The draws stay on this CPU generator; only the resizing runs on ``device``.
            self.images.append((image[..., split:] if held_out else image[..., :split]).to(device))
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops, which = [], []
        for _ in range(batch):
            index = int(torch.randint(len(self.images), (), generator=self.generator))
            image = self.images[index]
            h, w = image.shape[-2:]
            smallest, largest = min(self.size, h, w), min(h, w)
            side = round(math.exp(math.log(smallest) + self._uniform() * (math.log(largest) - math.log(smallest))))
            top = int(self._uniform() * (h - side + 1))
            left = int(self._uniform() * (w - side + 1))
            crop = image[:, top : top + side, left : left + side][None]
            crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
            if self._uniform() < 0.5:
                crop = crop.flip(-1)
            crops.append(crop[0].clamp(0, 1))
            which.append(index)
        return torch.stack(crops), torch.tensor(which)


def high_frequency_loss(recon: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 of the finite-difference image gradients, L1 of the 2-D FFT magnitudes), each a
    per-pixel mean. Both penalise what L1 + MSE let a VAE blur away: the gradient term is the
    usual edge loss, the FFT term a focal-frequency-style spectrum match (Jiang et al., ICCV
    2021, "Focal Frequency Loss", without its adaptive focusing)."""
    grad = ((recon.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (recon.diff(dim=-2) - x.diff(dim=-2)).abs().mean())
    spectrum = (torch.fft.rfft2(recon, norm="ortho").abs() - torch.fft.rfft2(x, norm="ortho").abs()).abs().mean()
    return grad, spectrum


class NLayerDiscriminator(torch.nn.Module):
    """PatchGAN discriminator as in pix2pix and taming-transformers
    (``taming/modules/discriminator/model.py``, used by SD's ``LPIPSWithDiscriminator``):
    4×4 convolutions, stride 2 then 1, BatchNorm, LeakyReLU 0.2; one logit per patch (at
    64 px and 3 layers, a 6×6 map of 70-px receptive fields)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        nn = torch.nn
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():  # taming's weights_init
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """taming's ``hinge_d_loss``: ½ (E[relu(1 − D(x))] + E[relu(1 + D(x̂))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_gan_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, scale: float) -> torch.Tensor:
    """SD's ``LPIPSWithDiscriminator.calculate_adaptive_weight``: ‖∇nll‖ / (‖∇g‖ + 1e-4) at the
    decoder's last layer, clamped to [0, 1e4], times the discriminator weight. Our nll is a
    per-pixel mean where SD's is a per-image sum; the ratio absorbs that, so the adversarial
    gradient at the last layer is ``scale`` times the reconstruction's, as in SD."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (torch.norm(nll_grad) / (torch.norm(g_grad) + 1e-4)).clamp(0.0, 1e4).detach() * scale


class TimeBox:
    """Fits a run's step count into a wall-clock budget: times ``calibrate`` steps after
    ``warm`` warm-up steps, then plans ``min(requested, what fits in 85 % of the rest)``;
    ``expired`` stops a run that overruns anyway (so a sweep's phase can never overrun)."""

    def __init__(self, requested: int, seconds: float | None, device: torch.device, deadline_at: float | None = None,
                 warm: int = 3, calibrate: int = 10) -> None:
        self.total, self.requested, self.seconds, self.device = requested, requested, seconds, device
        if deadline_at is not None:  # an absolute deadline caps the budget too
            left = deadline_at - time.time()
            self.seconds = left if self.seconds is None else min(self.seconds, left)
        self.deadline_at = deadline_at
        self.warm, self.calibrate = warm, calibrate
        self.start = time.time()
        self.stopped_at: int | None = None
        self.mark = 0.0
        self.seconds_per_step: float | None = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.time()

    def step_done(self, step: int) -> None:
        """Call after each step; may lower ``total`` once, after the calibration steps."""
        if self.seconds is None or step + 1 > self.warm + self.calibrate or step + 1 < self.warm:
            return
        if step + 1 == self.warm:
            self.mark = self._now()
        elif step + 1 == self.warm + self.calibrate:
            now = self._now()
            self.seconds_per_step = (now - self.mark) / self.calibrate
            left = self.seconds - (now - self.start)
            self.total = max(step + 1, min(self.requested, step + 1 + int(0.85 * left / self.seconds_per_step)))

    def pause(self, seconds: float) -> None:
        """Time spent outside the steps (a probe between steps) is not the steps' budget; an
        absolute ``deadline_at`` still holds."""
        self.start += seconds

    def expired(self, step: int) -> bool:
        """True (and remembered) when the budget or the absolute deadline has passed."""
        now = time.time()
        over = (self.seconds is not None and now - self.start > self.seconds) or (
            self.deadline_at is not None and now > self.deadline_at)
        if over:
            self.stopped_at = step
        return over

    def record(self) -> dict[str, Any]:
        return {"steps_requested": self.requested, "steps_planned": self.total,
                "seconds_budget": None if self.seconds is None else round(self.seconds, 1),
                "seconds_per_step": None if self.seconds_per_step is None else round(self.seconds_per_step, 5),
                "stopped_early_at_step": self.stopped_at}


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def reconstruction_quality(vae: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """PSNR / SSIM (piq, data range 1) of the posterior-mean reconstruction."""
    import piq

    images = images.to(next(vae.parameters()).device)
    with torch.no_grad():
        recon = vae.decode(vae.encode(images * 2 - 1).latent_dist.mean).sample
    recon = ((recon + 1) / 2).clamp(0, 1)
    return {
        "psnr_db": round(float(piq.psnr(recon, images, data_range=1.0)), 2),
        "ssim": round(float(piq.ssim(recon, images, data_range=1.0)), 4),
        "n": len(images),
    }


def subject_images(size: int = RESOLUTION) -> torch.Tensor:
    from audit.data.subjects import bundled_subject

    return bundled_subject(size).images


VaeCallback = Callable[[int, int, torch.nn.Module], "dict[str, Any] | None"]


def train_vae(images: list[torch.Tensor], args: argparse.Namespace, log: dict,
              callback: VaeCallback | None = None) -> torch.nn.Module:
    """Stage ``vae``. ``callback(step, total, vae)`` runs after every step (a sweep's probe
    between steps); what it returns is logged under ``probes``, its time is not the budget's."""
    from diffusers import AutoencoderKL

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE_CONFIGS[args.vae_config]).train().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    use_gan = args.gan_weight > 0
    if use_gan:  # taming-transformers: Adam(lr, betas=(0.5, 0.9)) for the discriminator
        discriminator = NLayerDiscriminator(ndf=args.disc_channels, n_layers=args.disc_layers).train().to(device)
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=args.disc_lr, betas=(0.5, 0.9))
    sampler = CropSampler(images, args.seed, device=device, size=args.resolution)
    noise = torch.Generator().manual_seed(args.seed + 1)
    timebox = TimeBox(args.vae_steps, args.vae_seconds, device, args.deadline_at)
    curve, probes, start = [], [], time.time()
    steps_done = 0
    for step in range(args.vae_steps):
        if step >= timebox.total or timebox.expired(step):
            break
        total = timebox.total
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total, args.vae_lr)
        x = sampler.sample(args.vae_batch)[0] * 2 - 1
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise).to(device)
        recon = vae.decode(z).sample
        rec = (recon - x).abs().mean() + F.mse_loss(recon, x)
        nll = rec
        if args.grad_weight > 0 or args.fft_weight > 0:
            grad_term, fft_term = high_frequency_loss(recon, x)
            nll = nll + args.grad_weight * grad_term + args.fft_weight * fft_term
        kl = posterior.kl().mean() / z[0].numel()  # per latent dimension
        # SD kl-f8: sum-over-pixels NLL + 1e-6 · summed KL; both divided here by the pixel count.
        loss = nll + args.kl_weight * posterior.kl().mean() / x[0].numel()
        if use_gan:
            # SD's LPIPSWithDiscriminator, generator step: + d_weight · disc_factor · (−E[D(x̂)]),
            # disc_factor 0 before disc_start (adopt_weight); D sees the sampled reconstruction.
            gan_on = 1.0 if step >= args.gan_start_frac * total else 0.0
            g_loss = -discriminator(recon).mean()
            d_weight = adaptive_gan_weight(nll, g_loss, vae.decoder.conv_out.weight, args.gan_weight)
            loss = loss + d_weight * gan_on * g_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if use_gan:  # discriminator step on the same batch (hinge loss, also off before disc_start)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss = gan_on * hinge_d_loss(discriminator(x.detach()), discriminator(recon.detach()))
            d_loss.backward()
            d_optimizer.step()
        timebox.step_done(step)
        steps_done = step + 1
        if step % args.log_every == 0 or step == timebox.total - 1:
            entry = {"step": step, "loss": round(float(loss), 5), "reconstruction": round(float(rec), 5),
                     "kl_per_dim": round(float(kl), 4), "seconds": round(time.time() - start, 1)}
            if use_gan:
                entry.update(d_loss=round(float(d_loss), 4), g_loss=round(float(g_loss), 4),
                             d_weight=round(float(d_weight), 5))
            curve.append(entry)
            print(f"vae {step:5d} loss {float(loss):.4f} rec {float(rec):.4f} kl/dim {float(kl):.3f} "
                  f"{time.time() - start:.0f}s", flush=True)
        if callback is not None:
            began = time.time()
            result = callback(step, timebox.total, vae)
            if result is not None:
                probes.append(result)
                vae.train()
            timebox.pause(time.time() - began)
    vae.eval().requires_grad_(False)
    held_out = CropSampler(images, args.seed + 2, held_out=True, device=device, size=args.resolution).sample(args.eval_crops)[0]
    train_crops = CropSampler(images, args.seed + 3, device=device, size=args.resolution).sample(args.eval_crops)[0]
    with torch.no_grad():
        dist = vae.encode(train_crops * 2 - 1).latent_dist
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=noise).to(device)
        scaling = round(1.0 / float(latents.std()), 5)
    vae.register_to_config(scaling_factor=scaling)
    log["vae"] = {
        "steps": args.vae_steps, "batch": args.vae_batch, "lr": args.vae_lr, "seconds": round(time.time() - start, 1),
        "loss_curve": curve, "scaling_factor": scaling,
        "reconstruction": {
            "held_out_crops": reconstruction_quality(vae, held_out),
            "training_crops": reconstruction_quality(vae, train_crops),
            "subject_unseen": reconstruction_quality(vae, subject_images(args.resolution)),
        },
    }
    if args.vae_config != "tiny" or args.kl_weight != 1e-6 or args.grad_weight or args.fft_weight or use_gan \
            or args.resolution != RESOLUTION or args.vae_seconds is not None or args.deadline_at is not None or device.type != "cpu" or probes:
        # Only for other recipes: the default's log keeps its fields and nothing else.
        log["vae"].update(steps=steps_done, timebox=timebox.record(), objective={
            "vae_config": args.vae_config, "resolution": args.resolution, "config": VAE_CONFIGS[args.vae_config], "kl_weight": args.kl_weight,
            "grad_weight": args.grad_weight, "fft_weight": args.fft_weight, "gan_weight": args.gan_weight,
            "gan_start_frac": args.gan_start_frac, "disc_lr": args.disc_lr, "disc_channels": args.disc_channels,
            "disc_layers": args.disc_layers}, device=str(device), probes=probes)
    print(json.dumps(log["vae"]["reconstruction"]), flush=True)
    return vae


def train_unet(images: list[torch.Tensor], vae: torch.nn.Module, args: argparse.Namespace, log: dict):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from audit.diffusion.tokenizer import clip_tokenizer

    device = torch.device(args.device)
    spec = TINY_VARIANTS[args.variant]
    seed = args.seed + spec.seed_offset  # tiny-2's UNet and text encoder start and train from other draws
    torch.manual_seed(seed + 10)
    unet = UNet2DConditionModel(**spec.unet).train()
    text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder)).train()
    unet, text_encoder, vae = unet.to(device), text_encoder.to(device), vae.to(device)
    tokenizer = clip_tokenizer()
    scheduler = DDPMScheduler(**spec.scheduler)
    scaling = float(vae.config.scaling_factor)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    sampler = CropSampler(images, seed + 20, device=device, size=args.resolution)
    rng = torch.Generator().manual_seed(seed + 21)
    captions = [source.captions for source in SOURCES]
    timebox = TimeBox(args.unet_steps, args.unet_seconds, device, args.deadline_at)
    curve, start = [], time.time()
    steps_done = 0
    for step in range(args.unet_steps):
        if step >= timebox.total or timebox.expired(step):
            break
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, timebox.total, args.unet_lr)
        x, which = sampler.sample(args.unet_batch)
        prompts = []
        for index in which.tolist():
            options = captions[index]
            pick = int(torch.randint(len(options), (), generator=rng))
            prompts.append("" if float(torch.rand((), generator=rng)) < 0.1 else options[pick])
        with torch.no_grad():
            dist = vae.encode(x * 2 - 1).latent_dist
            latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=rng).to(device)) * scaling
        noise = torch.randn(latents.shape, generator=rng).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), generator=rng).to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        tokens = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids.to(device)
        prediction = unet(noisy, timesteps, text_encoder(tokens)[0]).sample
        # SD's objective in the model's parameterisation: ε (SD 1.5) or v (SD 2.1; Salimans & Ho 2022)
        target = scheduler.get_velocity(latents, noise, timesteps) if scheduler.config.prediction_type == "v_prediction" else noise
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        timebox.step_done(step)
        steps_done = step + 1
        if step % args.log_every == 0 or step == timebox.total - 1:
            curve.append({"step": step, "loss": round(float(loss), 5), "seconds": round(time.time() - start, 1)})
            print(f"unet {step:5d} loss {float(loss):.4f} {time.time() - start:.0f}s", flush=True)
    log["unet"] = {"steps": args.unet_steps, "batch": args.unet_batch, "lr": args.unet_lr,
                   "seconds": round(time.time() - start, 1), "loss_curve": curve}
    if args.resolution != RESOLUTION:
        log["unet"]["resolution"] = args.resolution
    if args.unet_seconds is not None or args.deadline_at is not None or device.type != "cpu":
        log["unet"].update(steps=steps_done, timebox=timebox.record(), device=str(device))
    return unet.eval(), text_encoder.eval()


def save_half(module: torch.nn.Module, folder: Path) -> None:
    """fp16 safetensors (half the bytes); the toolkit loads them back as fp32. The module is
    left fp16-rounded (as the stage ``all`` recipe always did), on its device."""
    device = next(module.parameters()).device
    module.to("cpu", torch.float16).save_pretrained(folder, safe_serialization=True)
    module.to(device, torch.float32)


def main(argv: list[str] | None = None, vae_callback: VaeCallback | None = None) -> None:
    """The CLI; ``vae_callback`` (for a sweep) runs after each VAE step, see ``train_vae``."""
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
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); random draws stay on CPU generators")
    parser.add_argument("--vae-config", choices=list(VAE_CONFIGS), default="tiny",
                        help="the VAE's architecture (VAE_CONFIGS: factor 4 at 64 px, or f8* at 128 px; 4 latent channels)")
    parser.add_argument("--resolution", type=int, default=RESOLUTION,
                        help="training crops' side in px (64; the f8 configs: 128, a 16x16 latent as at 64 px with factor 4)")
    parser.add_argument("--kl-weight", type=float, default=1e-6,
                        help="weight of the summed KL against the summed reconstruction (SD kl-f8: 1e-6)")
    parser.add_argument("--grad-weight", type=float, default=0.0, help="L1 on image gradients (0: off)")
    parser.add_argument("--fft-weight", type=float, default=0.0, help="L1 on 2-D FFT magnitudes (0: off)")
    parser.add_argument("--gan-weight", type=float, default=0.0,
                        help="patch-GAN discriminator weight (SD kl-f8's disc_weight: 0.5; 0: no GAN)")
    parser.add_argument("--gan-start-frac", type=float, default=0.25,
                        help="the GAN starts at this fraction of the VAE steps (SD kl-f8's disc_start: 50001 steps)")
    parser.add_argument("--disc-lr", type=float, default=2e-4, help="discriminator Adam lr (betas 0.5, 0.9)")
    parser.add_argument("--disc-channels", type=int, default=64, help="discriminator width ndf (taming: 64)")
    parser.add_argument("--disc-layers", type=int, default=3, help="discriminator depth n_layers (taming: 3)")
    parser.add_argument("--vae-seconds", type=float, default=None,
                        help="wall-clock budget of the VAE steps: --vae-steps becomes a maximum, the step count fits it")
    parser.add_argument("--unet-seconds", type=float, default=None, help="the same for the UNet steps")
    parser.add_argument("--deadline-at", type=float, default=None,
                        help="absolute time (epoch seconds) at which every training loop stops")
    parser.add_argument("--log-every", type=int, default=50, help="loss-curve interval in steps")
    parser.add_argument("--eval-crops", type=int, default=256,
                        help="held-out and training crops for the reconstruction report and the scaling factor")
    parser.add_argument("--tf32", action="store_true",
                        help="cuda: allow TF32 in convolutions and matmuls (faster; default: plain fp32)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; some CUDA kernels have no
        # deterministic form, so deterministic mode warns there instead of stopping the run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = args.tf32  # default fp32 as on CPU (the toolkit runs fp32)
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() and args.stage == "unet" else {}
    log[f"environment_{args.stage}"] = {"torch": torch.__version__, "python": platform.python_version(),
                          "threads": torch.get_num_threads(), "machine": platform.machine(),
                          "command": " ".join(["python", "training/train_tiny.py", *(argv or sys.argv[1:])])}
    if device.type == "cuda":
        log[f"environment_{args.stage}"]["device"] = torch.cuda.get_device_name(device)
    log["sources"] = [{"name": s.name, "package": s.package, "licence": s.licence, "captions": list(s.captions)}
                      for s in SOURCES]
    images = [source.load() for source in SOURCES]
    if args.stage in ("all", "vae"):
        vae = train_vae(images, args, log, vae_callback)
        save_half(vae, args.out / "vae")
    else:
        from diffusers import AutoencoderKL

        if args.vae_from is not None:  # the same VAE bytes: SHA256SUMS then shows the shared component
            import shutil

            shutil.copytree(args.vae_from / "vae", args.out / "vae", dirs_exist_ok=True)
        vae = AutoencoderKL.from_pretrained(args.out / "vae", torch_dtype=torch.float32).eval().to(device)
    if args.stage in ("all", "unet"):
        unet, text_encoder = train_unet(images, vae, args, log)
        save_half(unet, args.out / "unet")
        save_half(text_encoder, args.out / "text_encoder")
    log_path.write_text(json.dumps(log, indent=1) + "\n")
    if (args.out / "unet").is_dir() and (args.out / "vae").is_dir():
        from audit.diffusion.tiny import write_checksums

        print(f"weights hash (SHA-256 of {args.out / 'SHA256SUMS'}): {write_checksums(args.out)}")


if __name__ == "__main__":
    main()
