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
