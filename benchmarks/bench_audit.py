"""Benchmark: wall time of the default audit (first run and cached rerun) and of PID crafting.

    ./dev python benchmarks/bench_audit.py [--model tiny] [--skip-audit] [--out bench.json]

Prints one JSON document: machine, versions, the audit's wall times, and for PID at each
tier's iteration count the crafting time, the objective (first iterate, last iterate, on the
saved 8-bit images) and the measured ℓ∞ of the saved images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.data import load_subject  # noqa: E402
from audit.models import load_model, resolve_device  # noqa: E402
from audit.progress import Progress  # noqa: E402
from audit.protections import ProtectionContext, check_budget  # noqa: E402
from audit.protections.pid import PID  # noqa: E402
from audit.tiers import TIERS, get_tier  # noqa: E402


def time_audit(results: Path, model: str) -> dict[str, float | int]:
    command = [sys.executable, "-m", "pytest", "--protection=pid", f"--model={model}", f"--results-dir={results}", "-q", "-p", "no:cacheprovider"]
    out: dict[str, float | int] = {}
    for label in ("first_run_s", "repeat_run_s"):
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        out[label] = round(time.perf_counter() - start, 2)
        out[label.replace("_s", "_exit")] = proc.returncode
    return out


def time_pid(model_spec: str) -> list[dict[str, object]]:
    device = resolve_device("auto")
    model = load_model(model_spec, device)
    rows = []
    for tier_name in TIERS:
        tier = get_tier(tier_name)
        resolution = tier.resolution or model.resolution
        images = load_subject("astronaut", None, resolution).images
        ctx = ProtectionContext(model, device, 0, tier, Progress())
        start = time.perf_counter()
        out = PID(epsilon=0.05).protect(images, ctx)
        seconds = time.perf_counter() - start
        rows.append({
            "tier": tier_name,
            "iterations": tier.pgd_steps,
            "resolution": resolution,
            "images": len(images),
            "seconds": round(seconds, 2),
            "objective_first_iterate": out.info["objective_first"],
            "objective_last_iterate": out.info["objective_last_iterate"],
            "objective_saved_8bit": out.info["objective_final_8bit"],
            "linf_255": round(check_budget(images, out.images, 0.05, "pid") * 255, 3),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--skip-audit", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, object] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": args.model,
    }
    if not args.skip_audit:
        with tempfile.TemporaryDirectory() as tmp:
            report["audit"] = time_audit(Path(tmp), args.model)
    report["pid"] = time_pid(args.model)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
