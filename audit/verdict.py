"""Retained protection and the verdict (DESIGN.md "Verdict: retained protection").

For a metric m whose direction says which way means better protection, with m_c the exploit
on clean images, m_p on protected images (no attack) and m_a after the scenario's attack:

    retained = (m_a − m_c) / (m_p − m_c)

1 = the attack removed nothing, 0 = it fully restored the clean result, < 0 = the exploit did
better than on clean data. Every estimate rests on K replicates (``audit/intervals.py``): the
protective effect d·(m_p − m_c) with a t interval on the paired replicate-level differences,
retained protection with Fieller's interval on the replicate-level ratio. A case passes when
the protection was effective at baseline (the effect's 95 % interval lies above 0) and the
lower bound of retained protection's 95 % interval is at least the scenario's threshold.

With one replicate no interval covers what a rerun gives; the verdict then falls back to the
paired image bootstrap of one fine-tune and says so (the checks flag it).

Matched control (a scenario that changes the exploit): m_c′ is the changed exploit on the
clean images. Retained protection against the standard m_c stays the verdict (the exploiter's
view, PID Table 6); the protective effect under the scenario's own exploit, d·(m_a − m_c′), and
the control's shift m_c′ − m_c are reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from audit import intervals
from audit.intervals import Estimate

Outcome = Literal["pass", "fail", "no effect at baseline", "error"]
PerReplicate = list[list[float]]


@dataclass(frozen=True)
class MatchedControl:
    m_c_control: Estimate  # the scenario's exploit on the clean images
    shift: Estimate  # d·(m_c′ − m_c): how far the changed exploit alone moves the clean outcome
    effect_under_scenario: Estimate  # d·(m_a − m_c′): what the protection still does under the changed exploit


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    direction: str
    threshold: float
    m_c: Estimate  # exploit on clean images
    m_p: Estimate  # exploit on protected images, no attack
    m_a: Estimate  # exploit after the scenario's attack
    effect: Estimate  # d·(m_p − m_c): > 0 means the protection worked at baseline
    retained: Estimate | None  # None when there was no effect to retain
    outcome: Outcome
    sentence: str
    replicates: dict[str, list[float]] = field(default_factory=dict)  # role -> replicate means
    control: MatchedControl | None = None
    slots_left_out: list[int] = field(default_factory=list)  # per replicate: slots undefined in some exploit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retained_protection(m_c: float, m_p: float, m_a: float) -> float:
    """(m_a − m_c) / (m_p − m_c); NaN when m_p = m_c (nothing to retain)."""
    denom = m_p - m_c
    if denom == 0:
        return float("nan")
    return (m_a - m_c) / denom


def _sign(direction: str) -> float:
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    return 1.0 if direction == "up" else -1.0


def _estimates(direction: str, clean: PerReplicate, protected: PerReplicate, attacked: PerReplicate,
               alpha: float, resamples: int, seed: int) -> tuple[Estimate, Estimate, Estimate, Estimate, bool]:
    """m_c, m_p, m_a and the effect; replicate-level when K ≥ 2, else the image bootstrap."""
    if len(clean) >= 2:
        return (intervals.mean_interval(clean, alpha), intervals.mean_interval(protected, alpha),
                intervals.mean_interval(attacked, alpha), intervals.effect_interval(clean, protected, direction, alpha), True)
    c, p, a = clean[0], protected[0], attacked[0]
    return (intervals.image_bootstrap_mean(c, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_mean(p, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_mean(a, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_effect(c, p, direction, alpha, resamples=resamples, seed=seed), False)


def _defined(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def pair_slots(groups: dict[str, PerReplicate]) -> tuple[dict[str, PerReplicate], list[int]]:
    """Keep the exploits paired by slot where a metric is undefined for some images.

    Inside replicate r, slot i of every exploit shares its prompt and initial noise
    (``audit/intervals.py``, sampling design). A slot whose value is undefined (None or NaN:
    BRISQUE on a flat image, ISM without a face) in any exploit of that replicate is left out
    of all of them, so the i-th clean value never meets the j-th protected one. Returns the
    paired values (finite floats only) and, per replicate, how many slots were left out.
    """
    names = list(groups)
    k = {len(groups[n]) for n in names}
    if len(k) != 1:
        detail = ", ".join(f"{n} {len(groups[n])}" for n in names)
        raise ValueError(f"the exploits need the same number of replicates, paired by seed ({detail})")
    paired: dict[str, PerReplicate] = {n: [] for n in names}
    left_out: list[int] = []
    for r in range(k.pop()):
        rows = {n: list(groups[n][r]) for n in names}
        sizes = {len(v) for v in rows.values()}
        if len(sizes) != 1:
            detail = ", ".join(f"{n} {len(v)}" for n, v in rows.items())
            raise ValueError(f"replicate {r}: slot pairing needs one value per image slot in every exploit ({detail}); "
                             "a metric marks an undefined slot with None instead of dropping it")
        keep = [i for i in range(sizes.pop()) if all(_defined(v[i]) for v in rows.values())]
        left_out.append(len(next(iter(rows.values()))) - len(keep))
        for n, v in rows.items():
            paired[n].append([float(v[i]) for i in keep])  # type: ignore[arg-type]
    return paired, left_out


def decide(metric: str, direction: str, clean: PerReplicate, protected: PerReplicate, attacked: PerReplicate,
           threshold: float, *, alpha: float = 0.05, control: PerReplicate | None = None,
           resamples: int = 1000, seed: int = 0) -> MetricVerdict:
    """The verdict for one metric from per-replicate, per-image values of the three exploits.

    Values may be None (undefined in that slot): such a slot is left out of every exploit of
    its replicate (``pair_slots``) and counted in ``slots_left_out``.
    """
    _sign(direction)  # validates the direction
    if not (len(clean) == len(protected) == len(attacked)) or not clean:
        raise ValueError(f"{metric}: the exploits need the same, non-zero number of replicates "
                         f"(clean {len(clean)}, protected {len(protected)}, attacked {len(attacked)})")
    groups = {"clean": clean, "protected": protected, "attacked": attacked}
    if control is not None:
        groups["control"] = control
    paired, left_out = pair_slots(groups)
    clean, protected, attacked = paired["clean"], paired["protected"], paired["attacked"]
    control = paired.get("control")
    if len(clean) == 1 and min(len(v[0]) for v in paired.values()) < 2:
        raise ValueError(f"{metric}: one replicate with fewer than 2 values per exploit (a set-level metric such as "
                         "FID gives one per replicate): the image bootstrap has nothing to resample; run "
                         "--replicates 2 or more")
    est_c, est_p, est_a, effect, replicated = _estimates(direction, clean, protected, attacked, alpha, resamples, seed)
    means = {"clean": _means(clean), "protected": _means(protected), "attacked": _means(attacked)}
    matched = None
    if control is not None:
        matched = _matched(direction, clean, attacked, control, alpha)
        means["control"] = _means(control)
    arrow = "↑" if direction == "up" else "↓"
    level = f"{100 * (1 - alpha):g}%"
    basis = f"K = {len(clean)} replicates" if replicated else "1 replicate (image bootstrap: a rerun may differ)"
    if not effect.ci_low > 0:
        sentence = (
            f"no effect at baseline: {metric} ({arrow} = better protection) moved by {effect.value:+.4f} from clean "
            f"(m_c {est_c.value:.4f}) to protected (m_p {est_p.value:.4f}); the {level} interval "
            f"[{effect.ci_low:+.4f}, {effect.ci_high:+.4f}] ({basis}) does not lie above 0, so there is no protection "
            "for the attack to remove."
        )
        return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, None,
                             "no effect at baseline", sentence, means, matched, left_out)
    if replicated:
        retained = intervals.retained_interval(clean, protected, attacked, direction, alpha)
    else:
        retained = intervals.image_bootstrap_retained(clean[0], protected[0], attacked[0], direction, alpha,
                                                      resamples=resamples, seed=seed)
    passed = bool(math.isfinite(retained.ci_low) and retained.ci_low >= threshold)
    outcome: Outcome = "pass" if passed else "fail"
    verb = "holds" if passed else "does not hold"
    sentence = (
        f"protection {verb}: retained {retained.value:.2f}, {level} CI [{retained.ci_low:.2f}, {retained.ci_high:.2f}], "
        f"lower bound {'≥' if passed else '<'} threshold {threshold:.2f} on {metric} {arrow} "
        f"(m_c {est_c.value:.4f}, m_p {est_p.value:.4f}, m_a {est_a.value:.4f}; {basis})."
    )
    return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, retained, outcome, sentence,
                         means, matched, left_out)


def _means(values: PerReplicate) -> list[float]:
    return [float(v) for v in intervals.replicate_means(values)]


def _matched(direction: str, clean: PerReplicate, attacked: PerReplicate, control: PerReplicate,
             alpha: float) -> MatchedControl:
    """The matched control's level, its shift from the standard clean outcome, and the
    protective effect measured against it (both as d·(…) so that > 0 favours the protector)."""
    if len(control) >= 2:
        return MatchedControl(
            intervals.mean_interval(control, alpha),
            intervals.effect_interval(clean, control, direction, alpha),
            intervals.effect_interval(control, attacked, direction, alpha),
        )
    mean = intervals.image_bootstrap_mean(control[0], alpha)
    nan = float("nan")
    shift = _sign(direction) * (mean.value - float(sum(clean[0]) / len(clean[0])))
    effect = _sign(direction) * (float(sum(attacked[0]) / len(attacked[0])) - mean.value)
    return MatchedControl(mean, Estimate(shift, nan, nan, 1, mean.n_images, intervals.SINGLE_REPLICATE),
                          Estimate(effect, nan, nan, 1, mean.n_images, intervals.SINGLE_REPLICATE))


def worst_variant(verdicts: list[MetricVerdict | None]) -> int:
    """Index of the variant with the lowest retained protection (the exploiter's best; 0 if none)."""
    best_i, best = 0, math.inf
    for i, v in enumerate(verdicts):
        if v is None or v.retained is None or not math.isfinite(v.retained.value):
            continue
        if v.retained.value < best:
            best_i, best = i, v.retained.value
    return best_i
