"""EoT's overhead per sample (issue 21): seconds per PID PGD step against the number of EoT
samples, on the tiny model at the smoke tier's 64 px.

    ./dev python benchmarks/bench_eot.py [--device cpu|cuda] [--images 4] [--steps 6] \
        [--samples 1 2 4 8] [--out benchmarks/results/bench-eot.json]

For each chain (Gaussian noise σ 0.05 reparametrised; JPEG q75 through kornia's differentiable
codec; JPEG q75 by BPDA, libjpeg forward and identity backward; IMPRESS's surrogate D(E(x + s·ε)))
and each n, PID crafts ``--images`` images with ``--steps`` and with 2 PGD steps; the difference
divided by the steps in between is the seconds per PGD step (the clean posterior and the final
8-bit objective, paid once, cancel). ``none`` is PID without EoT. The overhead per sample is
the slope of seconds per step in n (least squares), and the ratio to PID alone.

Not a timed test: numbers depend on the host (recorded: CPU model, cores, torch threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config.tiers import get_tier  # noqa: E402
from audit.diffusion.loading import load_model  # noqa: E402
from audit.parts import TRANSFORMS  # noqa: E402
from audit.parts.protections.base import ProtectionContext  # noqa: E402
from audit.parts.protections.eot import adapted, build_eot  # noqa: E402
from audit.parts.protections.pid import PID  # noqa: E402
from audit.parts.registry import PartSpec  # noqa: E402
from audit.parts.transforms.context import TransformContext  # noqa: E402
from audit.results.provenance import cpu_description  # noqa: E402
from audit.run.progress import Progress  # noqa: E402

CHAINS: dict[str, tuple[str, dict[str, Any], str]] = {
    "gaussian_noise(std=0.05)": ("gaussian_noise", {"std": 0.05}, "auto"),
    "jpeg(quality=75) kornia": ("jpeg", {"quality": 75}, "auto"),
    "jpeg(quality=75) bpda": ("jpeg", {"quality": 75}, "bpda"),
    "impress surrogate D(E(x+s·eps))": ("impress", {"noise_std": 0.025}, "auto"),
}




def craft(model: Any, images: torch.Tensor, steps: int, chain: tuple[str, dict[str, Any], str]
          | None, samples: int, device: torch.device) -> float:
    """Seconds of one PID protect with ``steps`` PGD steps (through EoT over ``chain``)."""
    pid = PID(epsilon=0.05, steps=steps)
    ctx = ProtectionContext(model, device, 0, get_tier("smoke"), Progress())
    start = time.perf_counter()
    if chain is None:
        pid.protect(images, ctx)
    else:
        name, params, gradient = chain
        spec = PartSpec("transform", name, TRANSFORMS.get(name).validate(params).model_dump())
        context = TransformContext(model, device, torch.Generator())
        eot, _ = build_eot([spec], samples, gradient, 0, context)  # type: ignore[arg-type]
        with adapted(pid, eot) as crafting:
            crafting.protect(images, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def per_step(model: Any, images: torch.Tensor, steps: int, chain: Any, samples: int,
             device: torch.device, repeats: int) -> float:
    """Median over ``repeats`` of (t(steps) − t(2)) / (steps − 2)."""
    values = [(craft(model, images, steps, chain, samples, device)
               - craft(model, images, 2, chain, samples, device)) / (steps - 2)
              for _ in range(repeats)]
    return statistics.median(values)


def slope(xs: list[int], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--chains", nargs="+", default=list(CHAINS), choices=list(CHAINS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench-eot.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model("tiny", device)
    from audit.data.subjects import load_subject

    views = load_subject("astronaut", None, args.side).images
    images = torch.cat([views] * (1 + args.images // len(views)))[: args.images].to(device)
    base = per_step(model, images, args.steps, None, 1, device, args.repeats)
    print(f"PID alone: {base:.4f} s per PGD step ({args.images} images, {args.side} px)")
    results: dict[str, Any] = {"none": {"s_per_step": round(base, 5)}}
    for label in args.chains:
        rows = {}
        for n in args.samples:
            seconds = per_step(model, images, args.steps, CHAINS[label], n, device, args.repeats)
            rows[n] = seconds
            print(f"{label}, {n} sample(s): {seconds:.4f} s per PGD step "
                  f"({seconds / base:.2f}× PID alone)")
        per_sample = slope(list(rows), list(rows.values())) if len(rows) > 1 else None
        results[label] = {
            "s_per_step": {str(n): round(v, 5) for n, v in rows.items()},
            "ratio_to_pid_alone": {str(n): round(v / base, 3) for n, v in rows.items()},
            "s_per_sample_per_step": round(per_sample, 5) if per_sample is not None else None,
            "samples_per_pid_step": round(per_sample / base, 3) if per_sample else None,
        }
        print(f"  → {per_sample:.4f} s per sample per step" if per_sample else "")
    out = {
        "what": "seconds per PID PGD step against EoT samples (benchmarks/bench_eot.py)",
        "images": args.images, "side_px": args.side, "device": str(device),
        "steps_timed": args.steps, "repeats": args.repeats,
        "machine": {"cpu": cpu_description()["model"], "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "load_average_1min": os.getloadavg()[0], "platform": platform.platform(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
