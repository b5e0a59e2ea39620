"""One paper-tier exploit run, stage by stage, on a Stable-Diffusion-1.5-architecture model with
random weights at 512 px: seconds and peak GPU memory per stage, and whether it fits in 24 GB.

No weights can be downloaded on the GPU machine, so the model is SD 1.5's architecture built
from its configs (written out below: diffusers' UNet2DConditionModel and AutoencoderKL of
stable-diffusion-v1-5, the CLIP ViT-L/14 text encoder, SD's DDPM schedule) with random
weights; compute and memory do not depend on the weights' values. The stages run through the
toolkit's own code (the ``pid`` protection, the ``dreambooth`` exploit with the paper tier's
parameters resolved for an SD 1.5 model, ``audit.diffusion.sampling.generate``), in fp32 as the
audit runs them:

* PID (paper tier): 1000 PGD iterations on the subject's 4 views;
* DreamBooth (PID Table 8a, SD 1.5): 1000 steps with prior preservation on 200 class images;
* the class images: 200 generations at 50 steps (once per audit, cached);
* the evaluation: 60 generations (3 prompts × 20) at 50 steps.

GPU time is scarce (minutes), so each stage is **timed at two short sizes and extrapolated
linearly** to the paper's count (fixed cost + count × per-unit cost, ``fit_line``), which the
JSON states per stage (``measured_at``, ``extrapolated_to``); the peak memory of a stage does not
grow with its iteration count, so it is the measured one. ``--dry-run`` runs the same code on
the CPU with a miniature of the architecture (64 px, narrow blocks) in seconds: a check that
the script works, not a measurement.

    python benchmarks/gpu_paper_tier.py --out benchmarks/results/gpu-paper-tier.json   # GPU
    python benchmarks/gpu_paper_tier.py --dry-run --out /tmp/dry.json                  # CPU
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.run.estimate import fit_line  # noqa: E402

GIB = 1024**3
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # names the family: PID Table 8a rows

# stable-diffusion-v1-5/unet/config.json
UNET_SD15 = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=768, attention_head_dim=8)
# stable-diffusion-v1-5/vae/config.json
VAE_SD15 = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215)
# openai/clip-vit-large-patch14's text model (stable-diffusion-v1-5/text_encoder/config.json)
TEXT_SD15 = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
# stable-diffusion-v1-5/scheduler/scheduler_config.json (the training schedule)
SCHEDULER_SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon",
                      steps_offset=1)

# --dry-run: the same block layout, narrow enough for a CPU, at 64 px (latent 8 × 8)
UNET_DRY = {**UNET_SD15, "sample_size": 8, "block_out_channels": (32, 32, 64, 64),
            "cross_attention_dim": 32, "attention_head_dim": 4}
VAE_DRY = {**VAE_SD15, "block_out_channels": (32, 32, 32, 32), "sample_size": 64}
TEXT_DRY = {**TEXT_SD15, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "projection_dim": 32}


def build_model(device: torch.device, dry: bool) -> Any:
    """SD 1.5's architecture with random weights (seed 0), initialised on the device."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from audit.diffusion.loading import LatentDiffusionModel
    from audit.diffusion.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(UNET_DRY if dry else UNET_SD15))
        vae = AutoencoderKL(**(VAE_DRY if dry else VAE_SD15))
        text_encoder = CLIPTextModel(CLIPTextConfig(**(TEXT_DRY if dry else TEXT_SD15)))
    for module in (vae, unet, text_encoder):
        module.eval().requires_grad_(False)
    params = {name: sum(p.numel() for p in m.parameters())
              for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    model = LatentDiffusionModel(vae, unet, text_encoder, clip_tokenizer(),
                                 DDPMScheduler(**SCHEDULER_SD15), "sd15-architecture-random", None,
                                 f"random-init-seed0-{'dry' if dry else 'sd15'}",
                                 "SD 1.5 configs, random weights (benchmarks/gpu_paper_tier.py)")
    return model, params


def measure(device: torch.device, fn: Any) -> tuple[float, float, float]:
    """(seconds, peak allocated GiB, peak reserved GiB) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return (time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / GIB,
                torch.cuda.max_memory_reserved(device) / GIB)
    return time.perf_counter() - start, float("nan"), float("nan")


def stage(name: str, device: torch.device, sizes: tuple[int, int], full: int, unit: str,
          run: Any, results: dict[str, Any]) -> None:
    """Time ``run(n)`` at the two sizes, extrapolate to ``full`` units; print and record."""
    points, peaks = [], []
    for n in sizes:
        seconds, alloc, reserved = measure(device, lambda n=n: run(n))
        points.append((n, seconds))
        peaks.append((alloc, reserved))
        peak = (f" (peak {alloc:.2f} GiB allocated, {reserved:.2f} GiB reserved)"
                if device.type == "cuda" else "")
        print(f"  {name}: {n} {unit} in {seconds:.2f} s{peak}", flush=True)
    fixed, per = fit_line(*points)
    results["stages"][name] = {
        "unit": unit, "measured_at": [{"units": n, "seconds": round(s, 3)} for n, s in points],
        "fixed_s": round(fixed, 3), "per_unit_s": round(per, 5), "extrapolated_to": full,
        "seconds": round(fixed + full * per, 1),
        "peak_allocated_gib": round(max(a for a, _ in peaks), 3),
        "peak_reserved_gib": round(max(r for _, r in peaks), 3)}
    print(f"  {name}: ≈ {fixed + full * per:.0f} s for {full} {unit} (extrapolated)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, a miniature, tiny sizes")
    ap.add_argument("--device", default=None)
    ap.add_argument("--pid-iters", default="10,40", help="the two PGD iteration counts timed")
    ap.add_argument("--db-steps", default="10,40", help="the two DreamBooth step counts timed")
    ap.add_argument("--gen-steps", default="3,9", help="the two sampling step counts timed")
    ap.add_argument("--out", default="benchmarks/results/gpu-paper-tier.json")
    args = ap.parse_args()
    dry = args.dry_run
    device = torch.device(args.device or ("cpu" if dry or not torch.cuda.is_available() else "cuda"))
    if device.type == "cpu":  # one intra-op thread, as the audit's CPU fine-tunes (12× faster
        torch.set_num_threads(1)  # than two spinning threads on a loaded 2-core machine)
    two = (lambda s: (1, 2)) if dry else (lambda s: tuple(int(x) for x in s.split(",")))
    results: dict[str, Any] = {"what": "one paper-tier exploit run on SD 1.5's architecture "
                               "(random weights), stage by stage", "dry_run": dry,
                               "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                               else f"cpu ({platform.processor() or platform.machine()})",
                               "torch": torch.__version__, "stages": {}}
    started = time.time()
    model, results["parameters"] = build_model(device, dry)
    print(f"model built on {device} in {time.time() - started:.1f} s: {results['parameters']}",
          flush=True)
    run_stages(model, device, dry, two(args.pid_iters), two(args.db_steps), two(args.gen_steps),
               results)
    peak = max(s["peak_reserved_gib"] for s in results["stages"].values())
    results["peak_reserved_gib"] = peak
    results["fits_24gb"] = None if dry or device.type != "cuda" else bool(peak < 24 * 1e9 / GIB - 0.5)
    results["fits_24gb_rule"] = ("peak reserved memory of every stage < 24 GB (22.35 GiB) less "
                                 "0.5 GiB for the CUDA context")
    results["exploit_run_seconds"] = round(sum(results["stages"][k]["seconds"] for k in (
        "dreambooth_prior_preservation", "generate_60_at_50")), 1)
    results["wall_s"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "stages"}, indent=1))
    print(f"wrote {args.out}")
    return 0


def run_stages(model: Any, device: torch.device, dry: bool, pid_sizes: tuple[int, int],
               db_sizes: tuple[int, int], gen_sizes: tuple[int, int],
               results: dict[str, Any]) -> None:
    """PID, class images, DreamBooth with prior preservation, the evaluation generations."""
    from audit.config.options import AuditOptions
    from audit.data.subjects import load_subject
    from audit.diffusion.sampling import CLASS_BATCH, GenerationConfig, generate
    from audit.parts import EXPLOITS
    from audit.parts.protections.base import ProtectionContext
    from audit.parts.protections.build import build_protection
    from audit.run.planner import resolve_exploit
    from audit.run.progress import Progress

    resolution = 64 if dry else 512
    progress = Progress(None)
    options = AuditOptions(protection="pid", tier="paper", model=SD15_HUB_ID)
    tier = options.tier_settings
    subject = load_subject("astronaut", None, resolution)
    images = subject.images.to(device)
    g = tier.generation
    per_prompt = 2 if dry else g.images_per_prompt  # 20 on the paper tier: 3 prompts → 60

    def pid(n: int) -> None:
        over = AuditOptions(protection="pid", tier="paper", model=SD15_HUB_ID,
                            overrides={"pid": {"steps": n}}).tier_settings
        protection = build_protection("pid", over)[0]
        protection.protect(images.clone(), ProtectionContext(model, device, 0, over, progress, subject))

    stage("pid", device, pid_sizes, tier.data["pid"]["steps"], "iterations", pid, results)
    spec, _ = resolve_exploit(tier, "dreambooth", None)
    results["dreambooth_params"] = spec.params
    part = EXPLOITS.get("dreambooth")
    n_class = int(spec.params["num_class_images"])

    def class_images(steps: int) -> torch.Tensor:
        cfg = GenerationConfig((spec.params["class_prompt"],), 2 if dry else CLASS_BATCH, steps,
                               g.guidance_scale, "", seed=10_000)
        return generate(model, model.unet, model.text_encoder, cfg, resolution, progress)

    # per class-image batch of CLASS_BATCH at `steps`; the full count is 200 images at 50 steps
    stage("class_images_batch", device, gen_sizes, g.steps, "sampling steps", class_images, results)
    batches = -(-n_class // CLASS_BATCH)
    s = results["stages"]["class_images_batch"]
    results["stages"]["class_images_200_at_50"] = {**s, "seconds": round(s["seconds"] * batches, 1),
                                                   "note": f"{batches} batches of {CLASS_BATCH}"}
    classes = class_images(2).to(device)

    def dreambooth(n: int) -> None:
        params = part.validate({**spec.params, "steps": n})
        part.load()(model, images, params.config(0), progress, class_images=classes)

    stage("dreambooth_prior_preservation", device, db_sizes, int(spec.params["steps"]), "steps",
          dreambooth, results)

    def evaluation(steps: int) -> None:
        cfg = GenerationConfig(tuple(g.prompts), per_prompt, steps, g.guidance_scale,
                               g.negative_prompt, seed=0, sampler=g.sampler)
        generate(model, model.unet, model.text_encoder, cfg, resolution, progress)

    stage("generate_60_at_50", device, gen_sizes, g.steps, "sampling steps", evaluation, results)


if __name__ == "__main__":
    sys.exit(main())
