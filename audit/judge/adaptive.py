"""The adaptive protector's matched comparison: does adapting help against this attack?

An adaptive scenario's verdict judges the adaptive protection (crafted through the exploiter's
transform by EoT) under the attack. Beside it, the same judgement of the protection as it is,
under the same attack, exploit and seeds (the plan's ``non_adaptive_*`` roles), and the paired
difference of what is left after the attack:

    gain = d·(m_a^adaptive − m_a^as-is)

with a paired t interval over replicates (the replicates share their seeds and clean runs, so
the difference is paired by replicate; the image bootstrap with one replicate). gain > 0: the
adaptive protection keeps more of its effect through the attack. Retained protection of each
is shown too; they have different denominators (the adaptive protection's own baseline effect
may be smaller: EoT trades strength on the untransformed image for strength through the
transform), so the gain, not the difference of the two ratios, answers the question.
"""

from __future__ import annotations

import math
from typing import Any

from audit.judge import intervals
from audit.judge.verdict import MetricVerdict, decide, pair_slots
from audit.run.planner import CasePlan


def gain_interval(direction: str, adaptive: list[list[Any]], as_is: list[list[Any]],
                  alpha: float, resamples: int, seed: int) -> intervals.Estimate:
    """d·(m_a^adaptive − m_a^as-is): paired t interval over replicates (K ≥ 2), else the paired
    image bootstrap of the one replicate; slots undefined in either are left out of both."""
    paired, _ = pair_slots({"as_is": as_is, "adaptive": adaptive})
    if len(paired["as_is"]) >= 2:
        return intervals.effect_interval(paired["as_is"], paired["adaptive"], direction, alpha)
    return intervals.image_bootstrap_effect(paired["as_is"][0], paired["adaptive"][0], direction,
                                            alpha, resamples=resamples, seed=seed)


def answer(gain: intervals.Estimate, metric: str) -> str:
    """The comparison in one sentence, from the gain's interval."""
    where = (f"{gain.value:+.4g} on {metric} (95 % interval [{gain.ci_low:.4g}, "
             f"{gain.ci_high:.4g}], {gain.method})")
    if not (math.isfinite(gain.ci_low) and math.isfinite(gain.ci_high)):
        return f"no interval on the difference: {where}"
    if gain.ci_low > 0:
        return ("adapting helps against this attack: after it the adaptive protection keeps "
                f"more of its effect than the protection as it is, {where}")
    if gain.ci_high < 0:
        return ("adapting hurts against this attack: after it the adaptive protection keeps "
                f"less of its effect than the protection as it is, {where}")
    return f"no detectable difference between adapting and not: {where}"


def _side(verdict: MetricVerdict) -> dict[str, Any]:
    return {"m_p": verdict.m_p.to_dict(), "m_a": verdict.m_a.to_dict(),
            "effect": verdict.effect.to_dict(),
            "retained": verdict.retained.to_dict() if verdict.retained is not None else None,
            "outcome": verdict.outcome}


def adaptive_comparison(plan: CasePlan, by_run: dict[tuple, dict[str, Any]], variant: int,
                        verdict: MetricVerdict, *, alpha: float, resamples: int,
                        seed: int, limits: dict[str, float],
                        untrained: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The record's ``adaptive`` entry for the verdict metric and the variant that decided; None
    for a scenario without an adaptive protector or a metric unavailable on some run."""
    if plan.adaptation is None:
        return None
    roles = {"clean": plan.runs_for("clean"),
             "protected": plan.runs_for("non_adaptive_protected"),
             "attacked": plan.runs_for("non_adaptive_attacked", variant),
             "control": plan.runs_for("control", variant),
             "adaptive": plan.runs_for("attacked", variant)}
    results = {role: [by_run[r.identity] for r in runs] for role, runs in roles.items()}
    if any(x.get("unavailable") for rs in results.values() for x in rs):
        return None
    per = {role: [x["values"] for x in rs] for role, rs in results.items()}
    reference = [x["values"] for x in untrained or []] or None
    direction = verdict.direction
    as_is = decide(verdict.metric, direction, per["clean"], per["protected"], per["attacked"],
                   verdict.threshold, alpha=alpha, control=per["control"] or None,
                   untrained=reference, resamples=resamples, seed=seed,
                   min_learned=limits["min_learned"], min_effect=limits["min_effect"])
    gain = gain_interval(direction, per["adaptive"], per["attacked"], alpha, resamples, seed)
    return {"metric": verdict.metric, "variant": variant,
            "adaptation": plan.adaptation.to_dict(),
            "adaptive": _side(verdict), "non_adaptive": _side(as_is),
            "gain_after_attack": gain.to_dict(),
            "answer": answer(gain, verdict.metric)}
