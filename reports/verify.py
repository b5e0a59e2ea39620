"""A case's outcome is re-derived from its recorded numbers, never taken on trust.

A results file is JSON: an edited ``outcome`` (``"fail"`` → ``"pass"``) would otherwise turn the
report's answer into "Holds in all scenarios" while the recorded interval holds nothing. For
every case of a file that records per-replicate values (schema 2 and later), the verdict is
recomputed with the engine's own decision function, ``audit.judge.verdict.decide``, on the verdict
metric's recorded per-replicate values of the decisive variant, with the settings the audit
ran with (α and bootstrap resamples from the run's tier settings, the scenario's threshold, the
recorded minimums, the case's seed). Where the recorded outcome or the recorded effect and
retained-protection estimates disagree with the recomputed ones, the report shows the
recomputed outcome, flags the case, and says so in its headline.

Where the recorded values cannot reproduce the engine's inputs exactly — a matched control
whose own undefined slots changed the pairing (its values are not in the metric entry), an
unknown tier — the case is left as recorded, unchecked: a disagreement is only ever claimed on
a like-for-like recomputation.
"""

from __future__ import annotations

import math
from typing import Any

from audit.results.schema import CaseRecord, Estimate, MetricEntry, RunInfo
from reports.load import ResultsFile

# Outcomes a verdict decides (the others — error, skipped — come from no verdict).
NOT_A_VERDICT = ("error", "skipped")
CHECKED_ESTIMATES = ("effect", "retained")


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _estimate_differs(recorded: Estimate | None, derived: dict[str, Any] | None) -> bool:
    if recorded is None or not derived:
        return (recorded is not None) != bool(derived)
    return not all(_same(getattr(recorded, k), derived.get(k)) for k in ("value", "ci_low",
                                                                          "ci_high"))


def _verdict_settings(run: RunInfo) -> Any:
    """The run's resolved verdict settings (α, bootstrap resamples), as the engine resolved them."""
    from audit.config.tiers import Tier

    tier = run.tier_settings
    return Tier(tier["name"], tier["settings"], tier.get("overrides") or {}).verdict


def rederive(case: CaseRecord, run: RunInfo) -> dict[str, Any] | None:
    """The verdict ``decide`` gives on the case's recorded values, as a dict (``MetricVerdict``),
    or None where they cannot reproduce the engine's inputs (then nothing is claimed)."""
    from audit.judge.verdict import decide

    metric = case.verdict_metric or ""
    entry = case.metrics.get(metric) or MetricEntry()
    per = entry.per_replicate
    if not all(per.get(role)
               for role in ("clean", "protected", "attacked")) or entry.direction not in (
                       "up", "down"):
        return None
    try:
        settings = _verdict_settings(run)
        limits = {k: float(v) for k in ("min_learned", "min_effect")
                  if (v := getattr(entry, k)) is not None}
        threshold = entry.threshold if entry.threshold is not None else case.threshold
        verdict = decide(metric, entry.direction, per["clean"], per["protected"],  # type: ignore[arg-type]
                         per["attacked"], float(threshold),  # type: ignore[arg-type]
                         alpha=settings.alpha, untrained=per.get("untrained") or None,  # type: ignore[arg-type]
                         null=per.get("null_baseline") or None,  # type: ignore[arg-type]
                         resamples=settings.bootstrap_resamples,
                         seed=case.seed, **limits).to_dict()
    except (KeyError, TypeError, ValueError):  # a record too partial to recompute: left unchecked
        return None
    if list(verdict.get("slots_left_out") or []) != list(entry.slots_left_out
                                                         or verdict.get("slots_left_out") or []):
        return None  # the matched control's undefined slots paired differently: not like for like
    return verdict


def verify_outcomes(file: ResultsFile) -> list[dict[str, Any]]:
    """Re-derive every case's outcome in ``file`` (in place): where the record disagrees with its
    numbers, the case shows the recomputed outcome and a flag naming both; returns those cases."""
    disagreements = []
    for case in file.cases:
        recorded = case.outcome
        if recorded in NOT_A_VERDICT or case.budget_exceeded:
            continue
        derived = rederive(case, file.run)
        entry = case.metrics.get(case.verdict_metric or "")
        if derived is None:
            if recorded == "pass" and not (entry is not None and entry.per_replicate):
                problem = {"recorded": recorded, "derived": "error",
                           "why": "no recorded verdict values support it"}
            else:
                continue
        else:
            assert entry is not None
            edited = [k for k in CHECKED_ESTIMATES
                      if _estimate_differs(getattr(entry, k), derived.get(k))]
            if derived["outcome"] == recorded and not edited:
                continue
            why = "the recorded per-replicate values give this outcome"
            if edited:
                why += f"; the recorded {' and '.join(edited)} differ from what those values give"
            problem = {"recorded": recorded, "derived": derived["outcome"], "why": why}
        case.outcome = problem["derived"]  # type: ignore[assignment]
        case.flags = [
            f"RECORD DISAGREES WITH ITS NUMBERS: the results file says '{problem['recorded']}', "
            f"but {problem['why']} ('{problem['derived']}', recomputed by "
            "audit.judge.verdict.decide); the file was edited or written by other code — shown as "
            f"'{problem['derived']}'",
            *case.flags,
        ]
        disagreements.append({"case_id": case.case_id, "file": str(file.path), **problem})
    return disagreements
