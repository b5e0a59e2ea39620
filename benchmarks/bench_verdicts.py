"""Benchmark: do the smoke tier's verdicts hold up when the audit is run again?

    ./dev python benchmarks/bench_verdicts.py [--seeds 0 1 2] [--protections pid random] [--out FILE]

Runs the default audit (``pytest --protection=P --seed=S``, K replicates as the tier says) for
every protection × seed into one results folder (so the clean replicates of a seed are shared
by both protections through the cache), then reads each run's results and reports, per
scenario and protection: each seed's outcome, protective effect and retained protection with
their 95 % intervals, and the coverage table the verdict's interval promises — for every
ordered pair of seeds (i, j), does seed i's interval cover seed j's point estimate? (For a
calibrated interval about 5 of 6 pairs at 3 seeds: each point estimate is itself noisy.)

Raw rows go to ``benchmarks/results/bench-verdicts.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench-verdicts.json"


def run_audit(results: Path, protection: str, seed: int, extra: list[str]) -> tuple[Path, float, int]:
    command = [sys.executable, "-m", "pytest", f"--protection={protection}", f"--seed={seed}", f"--results-dir={results}",
               "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    data = json.loads((results / "results.json").read_text())
    run_dir = results / "runs" / data["run"]["run_id"]
    (run_dir / "pytest-output.txt").write_text(proc.stdout[-20000:] + proc.stderr[-5000:])
    return run_dir / "results.json", seconds, proc.returncode


def case_row(case: dict) -> dict:
    metric = case.get("verdict_metric")
    entry = (case.get("metrics") or {}).get(metric) or {}
    control = entry.get("control") or {}
    return {
        "scenario": case["scenario"]["id"], "outcome": case["outcome"], "metric": metric,
        "effect": entry.get("effect"), "retained": entry.get("retained"),
        "m_u": entry.get("m_u"), "m_c": entry.get("m_c"), "m_p": entry.get("m_p"), "m_a": entry.get("m_a"),
        "learned": entry.get("learned"), "share": entry.get("share"), "null_baseline": case.get("null_baseline"),
        "replicates": entry.get("replicates"), "control_shift": control.get("shift"),
        "effect_under_scenario": control.get("effect_under_scenario"),
        "flags": case.get("flags"), "seconds": case.get("seconds"),
    }


def covers(estimate: dict | None, value: float | None) -> bool | None:
    if not estimate or value is None:
        return None
    lo, hi = estimate.get("ci_low"), estimate.get("ci_high")
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return None
    return float(lo) <= float(value) <= float(hi)


def coverage(rows: dict[int, dict], key: str) -> dict:
    pairs, hits, undefined = 0, 0, 0
    for i, j in itertools.permutations(sorted(rows), 2):
        est_i, est_j = rows[i].get(key), rows[j].get(key)
        c = covers(est_i, (est_j or {}).get("value"))
        if c is None:
            undefined += 1
            continue
        pairs += 1
        hits += bool(c)
    return {"covered": hits, "pairs": pairs, "undefined": undefined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--protections", nargs="+", default=["pid", "random"])
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/bench-verdicts"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("extra", nargs="*", help="more pytest options, after --")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[int, dict]]] = {}
    runs = []
    for seed in args.seeds:
        for protection in args.protections:
            path, seconds, code = run_audit(args.results_dir, protection, seed, args.extra)
            data = json.loads(path.read_text())
            runs.append({"protection": protection, "seed": seed, "seconds": round(seconds, 1), "exit": code,
                         "results": str(path), "run_id": data["run"]["run_id"]})
            for case in data["cases"]:
                row = case_row(case)
                rows.setdefault(protection, {}).setdefault(row["scenario"], {})[seed] = row
            print(f"{protection} seed {seed}: {seconds:.0f} s, " + ", ".join(
                f"{s}: {r[seed]['outcome']}" for s, r in sorted(rows[protection].items())), flush=True)
    table = {p: {s: {"outcomes": {seed: r["outcome"] for seed, r in by_seed.items()},
                     "effect_coverage": coverage(by_seed, "effect"),
                     "retained_coverage": coverage(by_seed, "retained")}
                 for s, by_seed in scenarios.items()} for p, scenarios in rows.items()}
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seeds": args.seeds, "runs": runs, "table": table,
        "rows": {p: {s: {str(k): v for k, v in by_seed.items()} for s, by_seed in sc.items()} for p, sc in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
