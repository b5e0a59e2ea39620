"""Can the smoke tier tell a working protection from noise and from a broken one? (issue 18)

    ./dev python benchmarks/bench_power.py --seeds 100-109 [--device cuda] [--parallel 8] \
        [--out benchmarks/results/bench-power.json]

For each seed, the real engine (``AuditSession.run_case``) runs the smoke tier's ``no-attack``
case, K = the tier's replicates, for three protections into one results folder, so that the clean
runs of a seed are computed once and shared (same seed, same images, same cache key):

- ``pid``: PID as the tier sets it (ε 0.05, the tier's iterations);
- ``random``: uniform noise of the same budget (the papers' null baseline);
- ``pid-flipped``: PID with the sign of its objective flipped, so that PGD *descends* L_add-log
  from its uniform start: a broken protection (same class, budget and iterations).

Only the verdict metric is computed (``subject_similarity`` on the smoke tier): the other metrics
cost time and do not enter the outcome. Seeds run in parallel worker processes (``--parallel``),
each with one exploit worker, so on a GPU several small fine-tunes share the device. The rows
hold each case's outcome, m_c, m_p, the effect with its interval and the per-replicate means;
the summary, the pass / "no effect" rates per protection and the replicate-level effect
standard deviation that the coverage simulation takes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRIC = "subject_similarity"
PROTECTIONS = ("pid", "random", "pid-flipped")


def flipped_pid() -> Any:
    """PID whose gradient ascent runs on −L_add-log: a broken protection (``--protection`` factory)."""
    import audit.parts.protections.pid as pid

    class FlippedPID(pid.PID):
        name = "pid-flipped"

        def protect(self, images: Any, ctx: Any) -> Any:
            original = pid.pid_objective
            pid.pid_objective = lambda *a, **k: -original(*a, **k)
            try:
                return super().protect(images, ctx)
            finally:
                pid.pid_objective = original

    return FlippedPID()


def session_class() -> type:
    """The engine with only the verdict metric computed (the outcome depends on nothing else):
    ``audit.run.case`` picks a case's metrics through ``metric_choice``, narrowed here."""
    import audit.run.case as case
    from audit.run.session import AuditSession

    if not getattr(case.metric_choice, "verdict_metric_only", False):
        choose = case.metric_choice

        def verdict_metric_only(*args: Any, **kwargs: Any) -> Any:
            choice = choose(*args, **kwargs)  # audit.judge.case.MetricChoice
            return choice._replace(names=[choice.verdict_metric])

        verdict_metric_only.verdict_metric_only = True  # type: ignore[attr-defined]
        case.metric_choice = verdict_metric_only
    return AuditSession


def run_seed(seed: int, device: str, results: str, replicates: int | None, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    from audit.config.options import AuditOptions
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.run.progress import Progress

    torch.set_num_threads(1)
    rows = []
    for protection in PROTECTIONS:
        spec = "benchmarks.bench_power:flipped_pid" if protection == "pid-flipped" else protection
        options = AuditOptions(protection=spec, results_dir=Path(results), device=device, seed=seed,
                               replicates=replicates, overrides=overrides, exploit_workers=1)
        session = session_class()(options, Progress(None))
        start = time.perf_counter()
        try:
            record = session.run_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), "astronaut", f"{protection}-{seed}").dump()
        finally:
            session.close()
        m = (record.get("metrics") or {}).get(METRIC) or {}
        rows.append({
            "seed": seed, "protection": protection, "outcome": record["outcome"], "reason": record.get("reason"),
            "flags": record.get("flags"), "m_c": (m.get("m_c") or {}).get("value"),
            "m_p": (m.get("m_p") or {}).get("value"), "effect": m.get("effect"),
            "replicate_means": {role: [statistics.fmean(v) for v in values if v]
                                for role, values in (m.get("per_replicate") or {}).items() if role != "attacked"}, "seconds": round(time.perf_counter() - start, 1),
            "objective_final_8bit": [r.get("objective_final_8bit") for r in record.get("protection_runs") or []],
        })
        r = rows[-1]
        print(f"seed {seed} {protection:11s} {r['outcome']:24s} m_c {r['m_c']} m_p {r['m_p']} "
              f"effect {(r['effect'] or {}).get('value')} [{(r['effect'] or {}).get('ci_low')}, "
              f"{(r['effect'] or {}).get('ci_high')}] ({r['seconds']} s)", flush=True)
    return rows


def seeds_arg(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for protection in PROTECTIONS:
        mine = [r for r in rows if r["protection"] == protection]
        outcomes = [r["outcome"] for r in mine]
        effects = [(r["effect"] or {}).get("value") for r in mine if (r["effect"] or {}).get("value") is not None]
        out[protection] = {
            "n": len(mine),
            "outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
            "pass": outcomes.count("pass"),
            "effect_mean": statistics.mean(effects) if effects else None,
            "effect_seed_sd": statistics.stdev(effects) if len(effects) > 1 else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("100-109"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="seeds run side by side, one process each")
    parser.add_argument("--replicates", type=int, default=None, help="K (default: the tier's)")
    parser.add_argument("--audit-set", action="append", default=[], help="SECTION.key=VALUE, as the plugin's option")
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/bench-power"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench-power.json"))
    args = parser.parse_args()
    from audit.config.tiers import parse_overrides

    overrides = parse_overrides(args.audit_set)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    jobs = [(seed, args.device, str(args.results_dir / f"seed-{seed}"), args.replicates, overrides) for seed in args.seeds]
    if args.parallel > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_seed, *job) for job in jobs]
            for future in as_completed(futures):
                rows.extend(future.result())
                write(args, rows, start)  # after every seed: a run stopped by a time limit keeps what it has
    else:
        for job in jobs:
            rows.extend(run_seed(*job))
            write(args, rows, start)
    print(json.dumps(write(args, rows, start), indent=1, default=str))


def write(args: argparse.Namespace, rows: list[dict[str, Any]], start: float) -> dict[str, Any]:
    import torch

    from audit.results.provenance import cpu_description

    meta = {"seeds": args.seeds, "seeds_done": sorted({r["seed"] for r in rows}), "device": args.device,
            "parallel": args.parallel, "audit_set": args.audit_set, "replicates": args.replicates,
            "seconds_total": round(time.perf_counter() - start, 1), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu_description(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    data = {"meta": meta, "summary": summarise(rows), "rows": sorted(rows, key=lambda r: (r["seed"], r["protection"]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return {"meta": meta, "summary": data["summary"]}


if __name__ == "__main__":
    main()
