"""Does the smoke tier measure real protection effects? (issue 4; numbers in the model card)

    ./dev python benchmarks/bench_tiny_effects.py [--seeds 0,1,2] [--out bench-tiny-effects.json]

On the smoke tier, the bundled subject and the embedded tiny model, for each seed it runs the
real audit engine (``AuditSession.run_case``) for PID and for random noise of the same budget on
the scenarios ``no-attack``, ``jpeg-q75`` and ``zero-sigma``, and generates from the untrained
(not fine-tuned) model with the same prompts and seeds. It reports, on the verdict metric
``subject_similarity`` (SSIM to the nearest clean subject image, ↓ = better protection):

- untrained vs clean DreamBooth: does fine-tuning on the clean images learn the subject?
- m_c − m_p for PID and for random, against the seed-to-seed spread of m_c;
- retained protection of PID (and random) under JPEG and zero-σ;
- each case's outcome (⚑ where the noise-floor control flags it), the exploit's noise floor
  (shift of the outcome under an imperceptible ±1/255 change of the clean images), and the
  wall time of everything.

Clean exploits are shared by PID and random through the cache (same seed, same images).
Each seed is one replicate (``replicates=1``) with the noise-floor control on, as when the
numbers in the model card were taken; ``benchmarks/bench_verdicts.py`` runs the default audit
with the tier's replicates instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.config.options import AuditOptions  # noqa: E402
from audit.config.scenario import CATALOGUE_DIR, load_scenario  # noqa: E402
from audit.diffusion.sampling import generate  # noqa: E402
from audit.parts.metrics.build import get_metric  # noqa: E402
from audit.run.progress import Progress  # noqa: E402
from audit.run.session import AuditSession  # noqa: E402
from audit.run.stages import generation_config  # noqa: E402

METRIC = "subject_similarity"
SCENARIOS = ("no-attack", "jpeg-q75", "zero-sigma")


def session(protection: str, seed: int, results: Path) -> AuditSession:
    options = AuditOptions(
        protection=protection, model="tiny", tier="smoke", data=None, results_dir=results, device="cpu",
        seed=seed, scenarios=None, allow_download=False, overrides={"controls": {"noise_floor": True}}, no_cache=False,
        replicates=1,
    )
    return AuditSession(options, Progress(None))


def untrained_similarity(s: AuditSession) -> float:
    """Mean subject similarity of generations from the base model (no fine-tuning)."""
    subject = s.subject("astronaut")
    config = generation_config(s.tier.generation, s.options.seed)
    images = generate(s.model, s.model.unet, s.model.text_encoder, config, s.resolution, s.progress)
    values = get_metric(METRIC).compute(images, subject.images).values
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/bench-tiny-effects"))
    parser.add_argument("--out", type=Path, default=Path("bench-tiny-effects.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    rows: list[dict] = []
    untrained: dict[int, float] = {}
    for seed in seeds:
        for protection in ("pid", "random"):
            s = session(protection, seed, args.results_dir)
            if protection == "pid":
                untrained[seed] = untrained_similarity(s)
            for scenario_id in SCENARIOS:
                t0 = time.perf_counter()
                record = s.run_case(load_scenario(CATALOGUE_DIR / f"{scenario_id}.yaml"), "astronaut", f"{protection}-{scenario_id}").dump()
                m = record["metrics"].get(METRIC, {})
                rows.append({
                    "seed": seed, "protection": protection, "scenario": scenario_id, "outcome": record["outcome"],
                    "m_c": m.get("m_c", {}).get("value"), "m_p": m.get("m_p", {}).get("value"), "m_a": m.get("m_a", {}).get("value"),
                    "effect": m.get("effect"), "retained": m.get("retained"), "seconds": round(time.perf_counter() - t0, 1),
                    "error": record.get("error"), "noise_floor": (record.get("noise_floor") or {}).get("shift"),
                    "flagged": any(f.startswith("noise floor") for f in record.get("flags", [])),
                })
                r = rows[-1]
                print(f"seed {seed} {protection:6s} {scenario_id:10s} {r['outcome']:22s} m_c {r['m_c']:.4f} m_p {r['m_p']:.4f} "
                      f"m_a {r['m_a']:.4f} retained {(r['retained'] or {}).get('value')} ({r['seconds']} s)", flush=True)
    total = time.perf_counter() - start

    def pick(protection: str, scenario: str, key: str) -> list[float]:
        return [r[key] for r in rows if r["protection"] == protection and r["scenario"] == scenario and r[key] is not None]

    clean = pick("pid", "no-attack", "m_c")
    spread = statistics.stdev(clean) if len(clean) > 1 else float("nan")
    summary = {
        "metric": METRIC,
        "seeds": seeds,
        "untrained_mean": statistics.mean(untrained.values()),
        "untrained": untrained,
        "clean_mean": statistics.mean(clean),
        "clean_seed_std": spread,
        "pid_effect": [c - p for c, p in zip(pick("pid", "no-attack", "m_c"), pick("pid", "no-attack", "m_p"), strict=True)],
        "random_effect": [c - p for c, p in zip(pick("random", "no-attack", "m_c"), pick("random", "no-attack", "m_p"), strict=True)],
        "retained": {
            f"{p}/{sc}": [(r["retained"] or {}).get("value") for r in rows if r["protection"] == p and r["scenario"] == sc]
            for p in ("pid", "random") for sc in SCENARIOS
        },
        "outcomes": {f"{r['protection']}/{r['scenario']}/seed{r['seed']}": r["outcome"] + (" ⚑" if r["flagged"] else "")
                     for r in rows},
        "noise_floor": {seed: next(r["noise_floor"] for r in rows if r["seed"] == seed) for seed in seeds},
        "seconds_total": round(total, 1),
        "torch_threads": torch.get_num_threads(),
    }
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str) + "\n")
    print(json.dumps(summary, indent=1, default=str))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
