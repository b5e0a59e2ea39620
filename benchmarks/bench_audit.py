"""Benchmark: wall time of the default audit (first run and cached rerun), per stage, and of
PID crafting.

    ./dev python benchmarks/bench_audit.py [--model tiny] [--skip-audit] [--full-catalogue] [--results-dir DIR] [--out bench.json]

Prints one JSON document: machine, versions, the audit's wall times; for the cold run the
seconds per stage kind summed over every case (from each case's recorded timings: protect,
attack, fine-tune, generate, metrics, …), the number of fine-tunes, and the ratio of the
audit's wall time to the sum of its fine-tune and generation times (the overhead of
everything else: model loading, metrics, PID, bookkeeping); and for PID at each tier's
iteration count the crafting time, the objective (first iterate, last iterate, on the saved
8-bit images) and the measured ℓ∞ of the saved images.
"""

from __future__ import annotations

import argparse
import contextlib
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

from audit.config.tiers import TIERS, get_tier  # noqa: E402
from audit.data.subjects import load_subject  # noqa: E402
from audit.diffusion import load_model, resolve_device  # noqa: E402
from audit.parts.protections.base import ProtectionContext, check_budget  # noqa: E402
from audit.parts.protections.pid import PID  # noqa: E402
from audit.run.progress import Progress  # noqa: E402

STAGE_KINDS = (("fine-tune", "exploit: DreamBooth fine-tune"), ("generate", "exploit: generate"),
               ("protect", "protect:"), ("pid", "PID PGD"), ("attack", "attack:"), ("metrics", "metrics:"),
               ("load model", "load model"))


def stage_seconds(results: Path) -> dict[str, object]:
    """Seconds per stage kind, summed over the cases of the latest run in ``results``."""
    data = json.loads((results / "results.json").read_text())
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for case in data["cases"]:
        for timing in case.get("timings") or []:
            kind = next((k for k, prefix in STAGE_KINDS if str(timing["stage"]).startswith(prefix)), "other")
            sums[kind] = sums.get(kind, 0.0) + float(timing["seconds"])
            counts[kind] = counts.get(kind, 0) + 1
    wall = float(data["run"]["finished"]) - float(data["run"]["started"])
    exploit = sums.get("fine-tune", 0.0) + sums.get("generate", 0.0)
    return {
        "seconds_by_stage": {k: round(v, 1) for k, v in sorted(sums.items(), key=lambda kv: -kv[1])},
        "count_by_stage": counts,
        "session_wall_s": round(wall, 1),
        "wall_over_finetune_plus_generate": round(wall / exploit, 3) if exploit else None,
        "outcomes": {c["case_id"]: c["outcome"] for c in data["cases"]},
        "replicates": sorted({(c.get("plan") or {}).get("replicates") for c in data["cases"]} - {None}),
    }


def time_audit(results: Path, model: str, full: bool = False) -> dict[str, object]:
    command = [sys.executable, "-m", "pytest", "--protection=pid", f"--model={model}", f"--results-dir={results}", "-q", "-p", "no:cacheprovider"]
    if full:
        command.append("--full-catalogue")
    out: dict[str, object] = {}
    for label in ("first_run_s", "repeat_run_s"):
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        out[label] = round(time.perf_counter() - start, 2)
        out[label.replace("_s", "_exit")] = proc.returncode
        if label == "first_run_s":
            out["first_run"] = stage_seconds(results)
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
        steps = tier.data["pid"]["steps"]
        start = time.perf_counter()
        out = PID(epsilon=0.05, steps=steps).protect(images, ctx)
        seconds = time.perf_counter() - start
        rows.append({
            "tier": tier_name,
            "iterations": steps,
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
    parser.add_argument("--skip-pid", action="store_true")
    parser.add_argument("--full-catalogue", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--results-dir", type=Path, help="keep the audit's results here (default: a temporary folder)")
    args = parser.parse_args()
    report: dict[str, object] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": args.model,
    }
    if not args.skip_audit:
        with contextlib.nullcontext(args.results_dir) if args.results_dir else tempfile.TemporaryDirectory() as results:
            report["audit"] = time_audit(Path(results), args.model, args.full_catalogue)
    if not args.skip_pid:
        report["pid"] = time_pid(args.model)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
