"""Issue 18's trade-off curve: cold-audit minutes against detection rate (PID passes no-attack)
and false-pass rate (uniform noise passes), for every miniature design measured so far.

    ./dev python benchmarks/power_curve.py [--sims 1000] [--out benchmarks/results/power-curve.json]

For each design the measured replicate-level rows — the untrained reference u_r, the clean
exploit c_r and the protected exploit p_r of one replicate (its own seed), on the smoke tier's
verdict metric ``subject_similarity`` — are resampled K at a time (with replacement: what a
rerun with K fresh replicates gives) and judged by the toolkit's own ``audit.verdict.decide``
(no-attack: the attacked run is the protected run), so a "pass" here is exactly the plugin's
pass: learned margin above ``verdict.min_learned``, effect share's lower bound above
``verdict.min_effect``, effect interval above 0. Where a source kept only per-seed K = 3 means
and intervals (B-hf), replicates are drawn from a normal model fitted to them (stated per row).

Minutes: the default audit's measured cold pytest time (``bench-audit-host-c.json``: 1042.7 s,
K = 3, 2 cores, AMD EPYC) scaled linearly in K (every stage of a case runs per replicate) and,
for a longer recipe, its fine-tunes (the measured share of the audit's time) scaled by steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
KS = (3, 5, 10, 20, 40)
AUDIT_SECONDS_K3 = 1042.7  # bench-audit-host-c.json: cold `pytest --protection=pid`, 2 cores, AMD EPYC


def _recipe_rows(name: str) -> dict[str, Any]:
    """bench-recipe.json (shipped model, 64 px, CPU): one replicate per seed."""
    summary = json.loads((RESULTS / "bench-recipe.json").read_text())["summary"][name]
    clean = summary["clean"]["values"]
    u = summary["untrained_mean"]  # only its mean was kept: u_r held at it (its spread is < 0.01)
    rows = {"pid": [(u, c, c - e) for c, e in zip(clean, summary["pid_effect"]["values"], strict=True)],
            "random": [(u, c, c - e) for c, e in zip(clean, summary["random_effect"]["values"], strict=True)]}
    steps = summary["recipe"]["steps"]
    return {"rows": rows, "steps": steps, "source": f"bench-recipe.json[{name}] ({len(clean)} replicates, "
            f"{steps}-step recipe, CPU; u_r = the recorded untrained mean {u})"}


def _power_rows(path: Path) -> dict[str, Any]:
    """bench_power.py output: K = 3 replicate means per role per seed."""
    data = json.loads(path.read_text())
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for r in data["rows"]:
        m = r["replicate_means"]
        if not m.get("untrained"):
            continue
        rows.setdefault(r["protection"], []).extend(zip(m["untrained"], m["clean"], m["protected"], strict=True))
    return {"rows": rows, "steps": 450, "source": f"{path.name} ({len(data['meta']['seeds_done'])} seeds × K = 3)"}


def _bhf_rows(rng: np.random.Generator, n: int = 2000) -> dict[str, Any]:
    """B-hf: only the per-seed lines of bench-power-gpu-b-hf.log were kept (mean and 95 % t interval of
    the K = 3 effect, m_c). Replicates drawn from normals fitted to them: effect N(mean of seeds,
    pooled within-seed sd from the interval half-widths), c N(mean m_c, sd of m_c · √3), u = 0.10
    (the shipped model's untrained mean: B-hf's was not logged)."""
    rows = {}
    for protection in ("pid", "random"):
        effects, sds, cleans = [], [], []
        for line in (RESULTS / "bench-power-gpu-b-hf.log").read_text().splitlines():
            parts = line.split()
            if not line.startswith("seed ") or parts[2] != protection:
                continue
            value = float(line.split(" effect ")[-1].split()[0])
            low, high = (float(v) for v in line.split("[")[1].split("]")[0].split(", "))
            effects.append(value)
            sds.append((high - low) / 2 * 3**0.5 / 4.302653)  # t(0.975, 2 df)
            cleans.append(float(line.split(" m_c ")[1].split()[0]))
        e_sd = float(np.sqrt(np.mean(np.square(sds))))
        c = rng.normal(statistics.fmean(cleans), statistics.stdev(cleans) * 3**0.5, n)
        e = rng.normal(statistics.fmean(effects), e_sd, n)
        rows[protection] = list(zip([0.10] * n, c.tolist(), (c - e).tolist(), strict=True))
    return {"rows": rows, "steps": 450, "source": "bench-power-gpu-b-hf.log (6 seeds × K = 3, per-seed lines only: "
            "normal model; u = 0.10 assumed)"}


def pass_rate(rows: list[tuple[float, float, float]], k: int, sims: int, rng: np.random.Generator) -> dict[str, Any]:
    from audit.judge.verdict import DEFAULT_MIN_EFFECT, DEFAULT_MIN_LEARNED, decide

    arr = np.asarray(rows)
    outcomes: dict[str, int] = {}
    for _ in range(sims):
        pick = arr[rng.integers(0, len(arr), k)]
        u, c, p = ([[float(v)] for v in pick[:, j]] for j in range(3))
        verdict = decide("subject_similarity", "down", c, p, p, 0.5, untrained=u,
                         min_learned=DEFAULT_MIN_LEARNED, min_effect=DEFAULT_MIN_EFFECT)
        outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
    return {"pass": round(outcomes.get("pass", 0) / sims, 4), "outcomes": outcomes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "power-curve.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    timings = [t for c in json.loads((RESULTS / "bench-audit-host-c.json").read_text())["cases"] for t in c["timings"]]
    fine_tune_share = (sum(t["seconds"] for t in timings if "fine-tune" in t["stage"])
                       / sum(t["seconds"] for t in timings))  # of the cold audit's stage seconds (0.57)
    designs = {
        "shipped (64 px, factor 4, 450 steps)": _recipe_rows("current"),
        "shipped, 1000-step recipe": _recipe_rows("s1000"),
        "B-hf (64 px, high-frequency VAE loss)": _bhf_rows(rng),
        "H-f8-hf (128 px, factor 8)": _power_rows(RESULTS / "bench-power-f8.json"),
    }
    table = []
    for name, design in designs.items():
        scale = (1 - fine_tune_share) + fine_tune_share * design["steps"] / 450
        for k in KS:
            minutes = AUDIT_SECONDS_K3 / 60 * k / 3 * scale
            row = {"design": name, "K": k, "cold_audit_minutes": round(minutes, 1), "source": design["source"]}
            for protection in ("pid", "random", "pid-flipped"):
                if protection in design["rows"]:
                    row[protection] = pass_rate(design["rows"][protection], k, args.sims, rng)
            table.append(row)
            print(f"{name:42s} K {k:3d} {row['cold_audit_minutes']:6.1f} min  PID pass {row['pid']['pass']:.3f}  "
                  f"random pass {row['random']['pass']:.3f}" + (f"  flipped pass {row['pid-flipped']['pass']:.3f}"
                                                                 if "pid-flipped" in row else ""), flush=True)
    meta = {"sims": args.sims, "seed": args.seed, "ks": KS, "fine_tune_share": round(fine_tune_share, 3),
            "audit_seconds_k3": AUDIT_SECONDS_K3}
    args.out.write_text(json.dumps({"meta": meta, "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
