"""Validity checks: what makes a verdict less reliable, each said next to it.

As AutoAttack's ``checks.py`` warns about randomised defences and zero gradients, every
function here looks at one thing and returns the flags it raises (plain sentences that say
what was seen and what it means). A flagged verdict is shown as flagged, never as a clean
pass. The budget check is not here: a protection over its budget fails its case outright
(``audit/parts/protections/base.py``).
"""

from __future__ import annotations

import math
from typing import Any

from audit.judge.verdict import MetricVerdict
from audit.run.planner import CasePlan

# A scenario's own effect on the clean outcome above this share of the protective effect
# makes retained protection mix the scenario's effect on the exploit with its effect on the
# protection (DESIGN "Matched controls").
CONTROL_SHIFT_SHARE = 0.5


def replicates(plan: CasePlan) -> list[str]:
    """One replicate: the interval covers the generated images of one fine-tune, not a rerun."""
    if plan.replicates > 1:
        return []
    random_steps = sorted({s.spec.name for r in plan.runs if r.role == "attacked"
                           for s in r.chain if s.kind == "transform" and s.seed is not None})
    flags = ["single replicate: the interval is a bootstrap over one fine-tune's generations and "
             "does not cover what a rerun of the audit would give (use --replicates 3 or more)"]
    if random_steps:
        flags.append(f"randomised part without repeats: {', '.join(random_steps)} drew once; the "
                     "worst case over several draws is needed (AutoAttack's EoT lesson) — use "
                     "--replicates 3 or more")
    return flags


def non_standard(tier: Any) -> list[str]:
    if not tier.non_standard:
        return []
    return [f"non-standard run: tier '{tier.name}' settings changed: {tier.overrides}"]


def metric_coverage(name: str, entry: dict[str, Any]) -> list[str]:
    """Fewer images measured as intended than asked (no face found, metric undefined), or none."""
    flags = []
    if entry.get("unavailable"):
        flags.append(f"{name}: unavailable: {entry['unavailable']}")
    missing = sum((entry.get("missing") or {}).values())
    if missing:
        total = sum(len(v) for v in (entry.get("values") or {}).values())
        flags.append(f"{name}: computed as intended on {total - missing} of {total} images "
                     f"({missing} fell back or were left out, see notes)")
    return flags


def control_shift(verdict: MetricVerdict, variant_label: str) -> list[str]:
    """The scenario alone — its changed exploit, or its attack on the clean images
    (``controls.purified``) — moves the clean outcome by more than half the effect."""
    control = verdict.control
    if control is None or verdict.effect.value <= 0:
        return []
    shift = control.shift.value
    if abs(shift) <= CONTROL_SHIFT_SHARE * verdict.effect.value:
        return []
    where = f" (variant '{variant_label}')" if variant_label else ""
    return [
        f"matched control{where}: the scenario alone (its exploit, or its attack on the clean "
        f"images) moves the clean outcome of "
        f"{verdict.metric} by {shift:+.4f}, more than half the protective effect "
        f"({verdict.effect.value:+.4f}); retained protection then mixes the scenario's effect on "
        "the exploit with its effect on the protection — the protective effect measured from the "
        f"control is {control.effect_under_scenario.value:+.4f} "
        f"[{control.effect_under_scenario.ci_low:+.4f}, "
        f"{control.effect_under_scenario.ci_high:+.4f}]"
    ]


def inconclusive(verdict: MetricVerdict) -> list[str]:
    """"No effect at baseline" that is not evidence of absence: the estimate favours the
    protection but the interval also holds 0 — too few replicates to tell the effect from none."""
    e = verdict.effect
    # the same doubt about the effect's size
    if verdict.outcome == "no meaningful effect at baseline":
        return _inconclusive_minimum(verdict, verdict.share, verdict.min_effect, "effect share",
                                     "verdict.min_effect")
    if verdict.outcome == "exploit did not learn the subject":
        return _inconclusive_minimum(verdict, verdict.learned, verdict.min_learned,
                                     "learned margin", "verdict.min_learned")
    if verdict.outcome != "no effect at baseline" or not e.value > 0 or not math.isfinite(e.ci_low):
        return []
    return [
        f"inconclusive: {verdict.metric}'s protective effect is estimated at {e.value:+.4f} but "
        f"its 95% interval [{e.ci_low:+.4f}, {e.ci_high:+.4f}] over {e.n_replicates} replicate(s) "
        "also holds 0; the audit cannot tell this effect from none — more replicates "
        "(--replicates) narrow it"
    ]


def _inconclusive_minimum(verdict: MetricVerdict, estimate: Any, minimum: float | None, what: str,
                          setting: str) -> list[str]:
    """A verdict below a minimum whose interval also reaches it: too few replicates to tell."""
    if (estimate is None or minimum is None or not math.isfinite(estimate.ci_high)
            or estimate.ci_high < minimum):
        return []
    return [
        f"inconclusive: {verdict.metric}'s {what} is estimated at {estimate.value:+.4f}, 95% "
        f"interval [{estimate.ci_low:+.4f}, {estimate.ci_high:+.4f}] over {estimate.n_replicates} "
        f"replicate(s): below the minimum {minimum:g} ({setting}) at its lower bound, above it at "
        "its upper; more replicates (--replicates) narrow it"
    ]


def unbounded(verdict: MetricVerdict) -> list[str]:
    r = verdict.retained
    if r is None or r.bounded:
        return []
    return [f"{verdict.metric}: retained protection's interval is unbounded ({r.method}); the "
            "replicates cannot pin it down — add replicates"]


def noise_floor(verdict: MetricVerdict, m_floor: float) -> tuple[dict[str, Any], list[str]]:
    """The exploit's outcome under an imperceptible ±1/255 change of the clean images.

    |m_floor − m_c| says how far the exploit moves for any change of its data; a protective
    effect below twice that cannot be told from that sensitivity.
    """
    shift = abs(m_floor - verdict.m_c.value)
    effect = verdict.effect.value
    info = {"metric": verdict.metric, "m_floor": m_floor, "shift": shift, "effect": effect,
            "perturbation": "uniform integer levels in [-1, 1] (±1/255)"}
    if verdict.outcome in ("pass", "fail") and effect < 2 * shift:
        return info, [
            "noise floor: an imperceptible ±1/255 change of the clean images moves "
            f"{verdict.metric} by {shift:.4f}; the protective effect ({effect:+.4f}) is less than "
            "twice that, so this verdict cannot tell the protection from the exploit's "
            "sensitivity to any change of its training images"
        ]
    return info, []


def null_baseline(verdict: MetricVerdict) -> list[str]:
    """Uniform noise of the protection's budget (``controls.null_baseline``) itself meets the
    effect-size minimum, or does at least as much as the protection: then a pass cannot tell the
    protection from any perturbation of its size on this model (PID Table 1's comparison)."""
    null = verdict.null_baseline
    if null is None or verdict.outcome not in ("pass", "fail"):
        return []
    share = null.share
    meets = share is not None and verdict.min_effect is not None and math.isfinite(share.ci_low) \
        and share.ci_low >= verdict.min_effect
    if not meets and not null.effect.value >= verdict.effect.value:
        return []
    size = (f", share {share.value:.0%} [{share.ci_low:.0%}, {share.ci_high:.0%}]"
            if share is not None else "")
    return [
        f"null baseline: uniform noise of the same budget moves {verdict.metric} by "
        f"{null.effect.value:+.4f} [{null.effect.ci_low:+.4f}, {null.effect.ci_high:+.4f}]{size}, "
        f"against the protection's {verdict.effect.value:+.4f}; on this model the verdict cannot "
        "tell the protection from any perturbation of its size"
    ]


def slots_left_out(name: str, verdict: MetricVerdict | None) -> list[str]:
    """Image slots where the metric is undefined in some exploit (BRISQUE on a flat image, ISM
    without a face): left out of every exploit of their replicate (``verdict.pair_slots``)."""
    if verdict is None or not sum(verdict.slots_left_out):
        return []
    total = sum(verdict.slots_left_out)
    per = ", ".join(str(n) for n in verdict.slots_left_out)
    return [f"{name}: {total} image slot(s) undefined in at least one exploit of their replicate "
            f"(per replicate: {per}); each is left out of clean, protected and attacked alike, so "
            "the comparison stays paired by slot but rests on fewer images"]


def metric_caution(name: str, entry: dict[str, Any]) -> list[str]:
    """A metric's own warning about its value (e.g. FID on too few images to estimate it)."""
    caution = entry.get("caution")
    return [f"{name}: {caution}"] if caution else []
