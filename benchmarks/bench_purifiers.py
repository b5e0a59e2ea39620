"""Seconds per image of the purifiers (issue 21), on the tiny model at the smoke tier's 64 px.

    ./dev python benchmarks/bench_purifiers.py [--device cpu|cuda] [--impress-iterations 30] \
        [--out benchmarks/results/bench-purifiers.json]

* IMPRESS: ours (all images in one optimisation) against a plain batch-1 loop over the images
  with the same iterations (as the authors' code runs it), both fp32 with 1 − SSIM as the
  perceptual term (LPIPS-VGG when its weights are here). Seconds per image per iteration and
  the extrapolation to the papers' 1000 (PhotoGuard) and 3000 (Glaze) iterations; DiffShortcut
  Table 2 measured 675 s per image at 512 px on an A5000.
* GrIDPure (t 10, per iteration and extrapolated to the README's 20), LatentDiffPure (t 300,
  CFG 7.5, quality prompt), DDSPure, restoration (¼ then Real-ESRGAN ×4) and noisy upscaling.

Not a timed test: numbers depend on the host (recorded: CPU model, cores, torch threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.diffusion.loading import load_model  # noqa: E402
from audit.parts.metrics.imperceptibility import lpips_missing  # noqa: E402
from audit.parts.transforms import diffpure, impress, restoration  # noqa: E402
from audit.parts.transforms.context import TransformContext  # noqa: E402
from audit.results.provenance import cpu_description  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--impress-iterations", type=int, default=30)
    parser.add_argument("--gridpure-iterations", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = load_model("tiny").to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(args.images, 3, 8, 8, generator=g), size=args.side, mode="bilinear")
    n = args.images

    def ctx() -> TransformContext:
        return TransformContext(model, device, torch.Generator().manual_seed(1))

    rows: dict[str, Any] = {}
    it = args.impress_iterations
    params = impress.ImpressParams(iterations=it)
    distance = impress.perceptual_distance("auto", device, None)
    reconstruct = impress.vae_reconstruction(model.vae)
    with torch.enable_grad():
        impress.impress_optimise(x[:1].to(device), reconstruct, distance, params.model_copy(update={"iterations": 2}), g)  # warm-up
        batched = timed(lambda: impress.impress_optimise(x.to(device), reconstruct, distance, params, torch.Generator().manual_seed(1)))
        loop = timed(lambda: [impress.impress_optimise(x[i:i + 1].to(device), reconstruct, distance, params,
                                                       torch.Generator().manual_seed(1)) for i in range(n)])
    per_it_b, per_it_l = batched / n / it, loop / n / it
    rows["impress"] = {
        "iterations": it, "perceptual": "1-ssim" if lpips_missing() else "lpips",
        "batched_s_per_image": round(batched / n, 3), "batch1_loop_s_per_image": round(loop / n, 3),
        "speedup": round(loop / batched, 2),
        "batched_s_per_image_at_1000_it": round(per_it_b * 1000, 1), "batched_s_per_image_at_3000_it": round(per_it_b * 3000, 1),
        "batch1_s_per_image_at_1000_it": round(per_it_l * 1000, 1), "batch1_s_per_image_at_3000_it": round(per_it_l * 3000, 1),
        "diffshortcut_table2_s_per_image": 675,
    }
    gp = diffpure.GridPureParams(iterations=args.gridpure_iterations)
    seconds = timed(lambda: diffpure.gridpure(x, gp, ctx().generator, context=ctx()))
    rows["gridpure"] = {"t": gp.t, "iterations": gp.iterations, "s_per_image": round(seconds / n, 3),
                        "s_per_image_at_20_iterations": round(seconds / n / gp.iterations * 20, 2)}
    for label, p in (("latent_diffpure", diffpure.LatentDiffPureParams()),
                     ("latent_diffpure_empty",
                      diffpure.LatentDiffPureParams(prompt="empty", guidance_scale=1.0))):
        seconds = timed(lambda p=p: diffpure.latent_diffpure(x, p, ctx().generator, context=ctx()))
        rows[label] = {"t": p.t, "guidance_scale": p.guidance_scale, "s_per_image": round(seconds / n, 3)}
    dp = diffpure.DdsPureParams()
    c = ctx()
    seconds = timed(lambda: diffpure.ddspure(x, dp, c.generator, context=c))
    rows["ddspure"] = {"sigma": dp.sigma, "note": c.notes, "s_per_image": round(seconds / n, 3)}
    restoration.realesrgan_x4plus(x[:1])  # load the network once
    rows["realesrgan_x4plus"] = {"input_px": args.side,
                                 "s_per_image": round(timed(lambda: restoration.realesrgan_x4plus(x)) / n, 3)}
    rows["restoration"] = {"s_per_image": round(timed(lambda: restoration.restoration(
        x, restoration.RestorationParams(), torch.Generator().manual_seed(0))) / n, 3)}
    rows["noisy_upscale"] = {"s_per_image": round(timed(lambda: restoration.noisy_upscale(
        x, restoration.NoisyUpscaleParams(std=0.1), torch.Generator().manual_seed(0))) / n, 3)}
    report = {
        "what": "purifiers' seconds per image on the tiny model (benchmarks/bench_purifiers.py)",
        "images": n, "side_px": args.side, "device": str(device),
        "machine": {"cpu": cpu_description()["model"], "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "platform": platform.platform(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None},
        "results": rows,
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
