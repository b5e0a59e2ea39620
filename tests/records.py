"""Case records for tests of the summary and the report: the typed record
(``audit/results/schema.py``) with the fields a test does not care about filled in."""

from __future__ import annotations

from typing import Any

from audit.results.schema import CaseRecord


def estimate(value: float, low: float | None = None, high: float | None = None,
             replicates: int = 3) -> dict[str, Any]:
    """An interval estimate as the verdict writes it (``audit.judge.intervals.Estimate``)."""
    return {"value": value, "ci_low": value if low is None else low,
            "ci_high": value if high is None else high, "n_replicates": replicates,
            "n_images": 12 * replicates, "method": "t"}


def case_record(case_id: str, outcome: str, scenario: str | None = None,
                subject: str = "s", **fields: Any) -> CaseRecord:
    """A validated record of one case; ``fields`` set (or replace) any of its fields."""
    data: dict[str, Any] = {
        "case_id": case_id, "protection": {"name": "pid"},
        "scenario": {"id": scenario or case_id}, "subject": {"name": subject},
        "tier": "smoke", "seed": 0, "outcome": outcome, "reason": "", "metrics": {},
        "variants": [], "flags": [], "error": None, "seconds": 1.0, "timings": [],
        "cache": {"hits": [], "misses": [], "corrupt": []}, **fields}
    return CaseRecord.model_validate(data)


def judged(case: dict[str, Any], m_a: float) -> dict[str, Any]:
    """The case judged by the engine's ``decide`` on per-replicate values of a clear outcome
    (m_u 0.2, m_c 0.8, m_p 0.3, the attack's m_a given; ↓ metric), written into its record as
    the engine writes them, so that the report's re-derivation agrees with it."""
    from audit.judge.verdict import decide

    metric = case["metrics"][case["verdict_metric"]]
    per = {role: [[mean + 0.01 * ((r + i) % 3 - 1) for i in range(6)] for r in range(3)]
           for role, mean in (("clean", 0.8), ("protected", 0.3), ("attacked", m_a),
                              ("untrained", 0.2))}
    verdict = decide(case["verdict_metric"], metric["direction"], per["clean"], per["protected"],
                     per["attacked"], metric["threshold"], untrained=per["untrained"],
                     min_learned=metric["min_learned"], min_effect=metric["min_effect"],
                     resamples=100, seed=case["seed"]).to_dict()
    metric.update(verdict, per_replicate=per)
    case["outcome"] = verdict["outcome"]
    return verdict
