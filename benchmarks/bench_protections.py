"""Benchmark: seconds per image of every built-in protection at its smoke-tier settings on the
tiny model (the bundled subject's four 64-px views, one CPU thread), with the objective each
reports on its 8-bit output and the measured ℓ∞; and the peak memory of PhotoGuard's diffusion
attack (one PGD iteration, one noise draw) with and without gradient checkpointing.

    ./dev python benchmarks/bench_protections.py [--only mist,aspl] [--out FILE]

Wall seconds depend on what else the host runs; ``cpu_seconds_per_image`` (the process's CPU
time, one thread) much less so. Each protection's time includes the objective it reports on its
output (16 seeded draws; 4 edits for the diffusion attack). Peak memory is the growth of the process's peak resident set (``ru_maxrss``) over the
baseline after the model is loaded, measured in a fresh subprocess per setting (torch's CPU
allocator is invisible to tracemalloc); GPU peaks at 512 px are not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.config.tiers import get_tier  # noqa: E402
from audit.data.subjects import load_subject  # noqa: E402
from audit.diffusion import load_model  # noqa: E402
from audit.parts.protections.base import ProtectionContext, check_budget  # noqa: E402
from audit.parts.protections.build import build_protection  # noqa: E402
from audit.results.provenance import cpu_description  # noqa: E402
from audit.run.progress import Progress  # noqa: E402

NAMES = ("random", "pid", "photoguard-encoder", "advdm", "mist", "fsmg", "aspl", "fsmg+pid",
         "aspl+pid", "photoguard-diffusion")




def time_one(name: str, model, images: torch.Tensor) -> dict[str, object]:
    tier = get_tier("smoke")
    protection, spec = build_protection(name, tier)
    ctx = ProtectionContext(model, torch.device("cpu"), 0, tier, Progress())
    start, cpu_start = time.perf_counter(), time.process_time()
    out = protection.protect(images, ctx)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    levels = round(check_budget(images, out.images, protection.epsilon, name) * 255)
    return {"params": spec.params, "seconds": round(seconds, 2),
            "seconds_per_image": round(seconds / len(images), 2),
            "cpu_seconds_per_image": round(cpu / len(images), 2),
            "objective_final_8bit": out.info.get("objective_final_8bit"),
            "objective_meaning": out.info.get("objective_meaning"),
            "linf_levels": levels, "epsilon_levels": round(protection.epsilon * 255, 3)}


MEMORY_PROBE = """
import resource, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from audit.diffusion import load_model
from audit.parts.protections.photoguard_diffusion import PhotoGuardDiffusion
model = load_model("tiny", "cpu")
x = torch.rand(1, 3, {size}, {size}, generator=torch.Generator().manual_seed(0))
guard = PhotoGuardDiffusion(checkpointing={ckpt}, denoising_steps=4)
emb = guard.embeddings(model, 1)
for p in (*model.vae.parameters(), *model.unet.parameters(), *model.text_encoder.parameters()):
    p.requires_grad_(False)
with torch.no_grad():
    guard.distance(model, x, emb, torch.Generator().manual_seed(1))  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
xa = x.clone().requires_grad_(True)
loss = guard.distance(model, xa, emb, torch.Generator().manual_seed(1))
torch.autograd.grad(loss.sum(), xa)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after)
"""


def memory(size: int, checkpointing: bool) -> dict[str, object]:
    """Peak-RSS growth (MiB) of one diffusion-attack gradient at ``size`` px on the tiny model."""
    code = MEMORY_PROBE.format(root=str(ROOT), size=size, ckpt=checkpointing)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (int(v) for v in out.stdout.split()[-2:])
    return {"size_px": size, "checkpointing": checkpointing,
            "peak_rss_growth_mib": round((after - before) / 1024, 1),
            "peak_rss_mib": round(after / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated protection names")
    parser.add_argument("--memory-sizes", default="64,256", help="px for the memory probe")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/bench-protections.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.only.split(",") if n] or list(NAMES)
    model = load_model("tiny", "cpu")
    images = load_subject("astronaut", None, 64).images
    result: dict[str, object] = {
        "machine": {"cpu": cpu_description()["model"], "cores": os.cpu_count(), "torch": torch.__version__,
                    "threads": 1, "load_average_start": os.getloadavg()},
        "setting": "smoke tier, tiny model, 4 views at 64 px, one batch, seed 0",
        "protections": {},
    }
    for name in names:
        result["protections"][name] = time_one(name, model, images)  # type: ignore[index]
        print(name, result["protections"][name], flush=True)  # type: ignore[index]
    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    result["photoguard_diffusion_memory"] = [memory(s, c) for s in sizes for c in (False, True)]
    result["photoguard_diffusion_memory_note"] = (
        "CPU peak-RSS growth of one gradient (4 DDIM steps, one draw, 1 image) on the tiny model; "
        "GPU peak at 512 px on an SD-1.5-shaped model not measured (no GPU in this session)")
    result["machine"]["load_average_end"] = os.getloadavg()  # type: ignore[index]
    result["machine"]["max_rss_mib"] = round(  # type: ignore[index]
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["photoguard_diffusion_memory"], indent=2))


if __name__ == "__main__":
    main()
