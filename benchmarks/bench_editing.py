"""Benchmark: does the editing exploit tell PhotoGuard's encoder attack from uniform noise?

    ./dev python benchmarks/bench_editing.py [--seeds 0 1 2] [--scenario edit-no-attack] [--out FILE]

For every seed, runs the smoke-tier audit of one editing scenario (img2img by default;
``--scenario edit-inpainting`` inpaints with tiny's companion ``tiny-inpainting``; PhotoGuard §5) for
``photoguard-encoder`` (the paper's setting: ε 16/255, 200 PGD steps) and for ``random`` at the
same ε (``--epsilon 16/255``), both into one results folder, so the clean edits and the
null-baseline runs are computed once and shared through the cache. Each run has the tier's
K = 3 replicates. Reported per protection and seed: the outcome (the Done criterion wants
``pass`` for photoguard-encoder and ``no effect at baseline`` for random), the verdict
metric's m_c (the null baseline's similarity to the clean edits, which an editing verdict is
measured from), m_p, the effect d·(m_p − m_c) and its 95 % interval, and every edit
similarity's replicate means by role.

Beside the verdict, for information only (not a condition of the verdict): the edits of a flat
mid-gray image with the same prompts and seeds, compared with the clean edits (m_gray: an edit
that keeps nothing of the subject), and the share (m_null − m_p)/(m_null − m_gray) of that
distance the protection covers.

Raw rows go to ``benchmarks/results/bench-editing.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench-editing.json"
EPSILON = 16 / 255  # photoguard-encoder's (PhotoGuard Table 9); random is audited at the same
PROTECTIONS = (("photoguard-encoder", []), ("random", [f"--epsilon={EPSILON!r}"]))


def run_audit(results: Path, protection: str, seed: int, scenario: str,
              extra: list[str]) -> tuple[dict, float, int]:
    command = [sys.executable, "-m", "pytest", f"--protection={protection}", f"--seed={seed}",
               f"--results-dir={results}", "--full-catalogue", "-k", scenario, "-q",
               "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # This run's own results (its "results JSON:" line): results/results.json names the latest
    # run, which another audit into the same folder may have replaced meanwhile.
    own = [line.split("results JSON:", 1)[1].strip() for line in proc.stdout.splitlines()
           if "results JSON:" in line]
    if not own:
        raise RuntimeError(f"pytest wrote no results ({protection}, seed {seed}):\n"
                           + proc.stdout[-3000:] + proc.stderr[-3000:])
    run_dir = Path(own[-1]).parent
    (run_dir / "pytest-output.txt").write_text(proc.stdout[-20000:] + proc.stderr[-5000:])
    cases = [c for c in json.loads((run_dir / "results.json").read_text())["cases"]
             if c["scenario"]["id"] == scenario]
    return cases[0], seconds, proc.returncode


def case_row(case: dict) -> dict:
    metric = case.get("verdict_metric")
    entry = (case.get("metrics") or {}).get(metric) or {}
    similarities = {
        name: {role: [round(sum(v) / len(v), 5) for v in per] for role, per in
               (m.get("per_replicate") or {}).items()}
        for name, m in (case.get("metrics") or {}).items() if name.startswith("edit_")}
    return {"scenario": case["scenario"]["id"], "outcome": case["outcome"], "metric": metric,
            "reason": case.get("reason"), "edit_baseline": case.get("edit_baseline"),
            "m_c (null baseline)": entry.get("m_c"), "m_p": entry.get("m_p"),
            "m_a": entry.get("m_a"), "effect": entry.get("effect"),
            "retained": entry.get("retained"), "replicates": entry.get("replicates"),
            "replicate_means": similarities, "flags": case.get("flags"),
            "seconds": case.get("seconds"), "seeds": case.get("plan", {}).get("seeds")}


def gray_reference(case: dict, results: Path) -> dict:
    """Edits of a mid-gray image with the run's prompts and seeds against the clean edits (SSIM),
    per replicate: how far an edit that keeps nothing of the subject lies (information only)."""
    import torch

    from audit.data.images import from_uint8
    from audit.diffusion import load_model
    from audit.diffusion.editing import EditConfig, edit, load_inpainting_unet
    from audit.parts.metrics.edits import EditSSIM
    from audit.run.cache import Cache
    from audit.run.progress import Progress

    model = load_model("tiny", "cpu")
    cache = Cache(results / "cache")
    clean_runs = {e["replicate"]: e for e in case["exploits"].values() if e["role"] == "clean"}
    out = []
    torch.set_num_threads(1)
    for _, run in sorted(clean_runs.items()):
        hit = cache.get("generate", run["cache_key"])
        assert hit is not None, "the clean edits are cached by the audit"
        clean_edits = from_uint8(hit[0]["generations"])
        p = run["finetune"]
        mode = p.get("mode", "img2img")
        cfg = EditConfig(tuple(p["prompts"]), p["strength"], p["steps"], p["guidance_scale"],
                         p["negative_prompt"], p["eta"], run["seed"], mode)
        n = len(clean_edits) // len(cfg.prompts)
        unet = (load_inpainting_unet(model, p.get("inpainting_model"), False).unet
                if mode == "inpainting" else None)  # the audit's own inpainting UNet
        gray = edit(model, torch.full((n, 3, 64, 64), 0.5), cfg, 64, Progress(), unet)
        values = EditSSIM().compute(gray, clean_edits).values
        out.append(sum(values) / len(values))
    return {"m_gray_per_replicate": [round(v, 5) for v in out]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenario", default="edit-no-attack")
    parser.add_argument("--results", type=Path, default=ROOT / "audit-results" / "bench-editing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows: list[dict] = []
    for seed in args.seeds:
        for protection, extra in PROTECTIONS:
            write(args, rows)  # what is done so far, so that an interrupted run leaves its rows
            case, seconds, rc = run_audit(args.results, protection, seed, args.scenario, extra)
            row = {"protection": protection, "seed": seed, "wall_seconds": round(seconds, 1),
                   "pytest_rc": rc, **case_row(case)}
            if protection == "photoguard-encoder":
                row["information_only"] = gray_share(case, args.results, row)
            rows.append(row)
            print(f"seed {seed} {protection:<20} {row['outcome']:<24} m_c(null) "
                  f"{(row['m_c (null baseline)'] or {}).get('value')} m_p "
                  f"{(row['m_p'] or {}).get('value')} effect {(row['effect'] or {}).get('value')} "
                  f"[{(row['effect'] or {}).get('ci_low')}, {(row['effect'] or {}).get('ci_high')}]"
                  f" {seconds:.0f}s", flush=True)
    summary = write(args, rows)
    print(json.dumps(summary, indent=1))


def write(args: argparse.Namespace, rows: list[dict]) -> dict:
    """The JSON file of the rows so far; returns the outcomes by protection and seed."""
    import torch

    from audit.results.provenance import cpu_description

    summary = {p: {str(r["seed"]): r["outcome"] for r in rows if r["protection"] == p}
               for p, _ in PROTECTIONS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "what": __doc__.split("\n\n")[2], "scenario": args.scenario, "tier": "smoke",
        "epsilon": EPSILON, "seeds": args.seeds, "outcomes": summary,
        "separates": bool(rows) and all(o == "pass" for o in summary["photoguard-encoder"].values())
        and all(o == "no effect at baseline" for o in summary["random"].values()),
        "complete": len(rows) == len(args.seeds) * len(PROTECTIONS),
        "machine": {"cpu": cpu_description()["model"], "python": platform.python_version(),
                    "torch": torch.__version__},
        "rows": rows}, indent=1, default=str))
    return summary




def gray_share(case: dict, results: Path, row: dict) -> dict:
    """m_gray per replicate and the share of the null-to-gray distance the protection covers."""
    info = gray_reference(case, results)
    null = (row.get("replicates") or {}).get("clean") or []  # decide's m_c role = null baseline
    protected = (row.get("replicates") or {}).get("protected") or []
    info["share_per_replicate"] = [round((n - p) / (n - g), 4) if n != g else None for n, p, g
                                   in zip(null, protected, info["m_gray_per_replicate"],
                                          strict=False)]
    return info


if __name__ == "__main__":
    main()
