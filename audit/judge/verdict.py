"""Retained protection and the verdict (README, "What one case does", step 6).

For a metric m whose direction says which way means better protection, with m_c the exploit
on clean images, m_p on protected images (no attack) and m_a after the scenario's attack:

    retained = (m_a − m_c) / (m_p − m_c)

1 = the attack removed nothing, 0 = it fully restored the clean result, < 0 = the exploit did
better than on clean data. Every estimate rests on K replicates (``audit/judge/intervals.py``): the
protective effect d·(m_p − m_c) with a t interval on the paired replicate-level differences,
retained protection with Fieller's interval on the replicate-level ratio. A case passes on the
three conditions below: the exploit learned, the protection's effect is meaningful, and the
lower bound of retained protection's 95 % interval is at least the scenario's threshold.

With one replicate no interval covers what a rerun gives; the verdict then falls back to the
paired image bootstrap of one fine-tune and says so (the checks flag it).

The three conditions of a pass (README "The verdict"): with m_u the untouched base model's
generations (same prompts and seeds as the exploits', no fine-tune),

1. the exploit learned the subject: the lower 95 % bound of the learned margin d·(m_u − m_c)
   exceeds ``min_learned`` (otherwise "exploit did not learn the subject": no protection can
   be judged against it, so it is neither a pass nor a fail);
2. the protection had a meaningful effect at baseline: the effect's interval lies above 0
   ("no effect at baseline" otherwise) and the lower bound of the effect size — the share of
   what the exploit learned that the protection removed, (m_c − m_p)/(m_c − m_u), Fieller's
   interval over replicates — is at least ``min_effect`` ("no meaningful effect at baseline");
3. the attack left enough of it: retained protection's lower bound ≥ the scenario's threshold.

The null baseline (``controls.null_baseline``): the same standard exploit on the images under
uniform noise of the protection's budget (the ``random`` protection), its effect and share
recorded beside the protection's (PID Table 1, PhotoGuard); shown, not a condition.

Matched control (a scenario that changes the exploit): m_c′ is the changed exploit on the
clean images. Retained protection against the standard m_c stays the verdict (the exploiter's
view, PID Table 6); the protective effect under the scenario's own exploit, d·(m_a − m_c′), and
the control's shift m_c′ − m_c are reported beside it. With ``controls.purified`` every attack
gets one: m_c′ is the clean images through the same attack (a purifier's own damage to the
subject), and d·(m_a − m_c′) is what the protection adds to it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from audit.config.settings import VerdictSettings
from audit.judge import intervals
from audit.judge.intervals import Estimate
from audit.judge.outcomes import LABELS
from audit.judge.outcomes import Label as Outcome

# Every outcome's label, weakest first (audit/judge/outcomes.py: ranks and colours).
OUTCOMES: tuple[str, ...] = LABELS
NOT_LEARNED: Final = "exploit did not learn the subject"
NO_MEANINGFUL_EFFECT: Final = "no meaningful effect at baseline"
DEFAULT_MIN_LEARNED = float(VerdictSettings.model_fields["min_learned"].default)
DEFAULT_MIN_EFFECT = float(VerdictSettings.model_fields["min_effect"].default)
PerReplicate = list[list[float]]


@dataclass(frozen=True)
class MatchedControl:
    m_c_control: Estimate  # the scenario's exploit on the clean images
    shift: Estimate  # d·(m_c′ − m_c): how far the changed exploit alone moves the clean outcome
    # d·(m_a − m_c′): what the protection still does under the changed exploit
    effect_under_scenario: Estimate


@dataclass(frozen=True)
class NullBaseline:
    """Uniform noise of the protection's budget (the ``random`` protection) under the standard
    exploit: the effect any perturbation of that size has, beside the protection's."""

    m_null: Estimate  # the exploit on the noised images
    effect: Estimate  # d·(m_null − m_c)
    share: Estimate | None  # (m_c − m_null)/(m_c − m_u); None without the untrained reference


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
    # per replicate: slots undefined in some exploit
    slots_left_out: list[int] = field(default_factory=list)
    m_u: Estimate | None = None  # the untouched base model's generations (untrained reference)
    learned: Estimate | None = None  # d·(m_u − m_c): > 0 means the exploit learned the subject
    # (m_c − m_p)/(m_c − m_u): the share of what it learned that the protection removed
    share: Estimate | None = None
    min_learned: float | None = None  # the learned margin's lower bound must exceed it
    min_effect: float | None = None  # the share's lower bound must reach it
    # uniform noise of the same budget (controls.null_baseline)
    null_baseline: NullBaseline | None = None

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
               alpha: float, resamples: int,
               seed: int) -> tuple[Estimate, Estimate, Estimate, Estimate, bool]:
    """m_c, m_p, m_a and the effect; replicate-level when K ≥ 2, else the image bootstrap."""
    if len(clean) >= 2:
        return (intervals.mean_interval(clean, alpha), intervals.mean_interval(protected, alpha),
                intervals.mean_interval(attacked, alpha),
                intervals.effect_interval(clean, protected, direction, alpha), True)
    c, p, a = clean[0], protected[0], attacked[0]
    return (intervals.image_bootstrap_mean(c, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_mean(p, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_mean(a, alpha, resamples=resamples, seed=seed),
            intervals.image_bootstrap_effect(
                c, p, direction, alpha, resamples=resamples, seed=seed), False)


def _defined(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def pair_slots(groups: dict[str, PerReplicate]) -> tuple[dict[str, PerReplicate], list[int]]:
    """Keep the exploits paired by slot where a metric is undefined for some images.

    Inside replicate r, slot i of every exploit shares its prompt and initial noise
    (``audit/judge/intervals.py``, sampling design). A slot whose value is undefined (None or NaN:
    BRISQUE on a flat image, ISM without a face) in any exploit of that replicate is left out
    of all of them, so the i-th clean value never meets the j-th protected one. Returns the
    paired values (finite floats only) and, per replicate, how many slots were left out.
    """
    names = list(groups)
    k = {len(groups[n]) for n in names}
    if len(k) != 1:
        detail = ", ".join(f"{n} {len(groups[n])}" for n in names)
        raise ValueError("the exploits need the same number of replicates, paired by seed "
                         f"({detail})")
    paired: dict[str, PerReplicate] = {n: [] for n in names}
    left_out: list[int] = []
    for r in range(k.pop()):
        rows = {n: list(groups[n][r]) for n in names}
        sizes = {len(v) for v in rows.values()}
        if len(sizes) != 1:
            detail = ", ".join(f"{n} {len(v)}" for n, v in rows.items())
            raise ValueError(f"replicate {r}: slot pairing needs one value per image slot in every "
                             f"exploit ({detail}); a metric marks an undefined slot with None "
                             "instead of dropping it")
        keep = [i for i in range(sizes.pop()) if all(_defined(v[i]) for v in rows.values())]
        left_out.append(len(next(iter(rows.values()))) - len(keep))
        for n, v in rows.items():
            paired[n].append([float(v[i]) for i in keep])
    return paired, left_out


def decide(metric: str, direction: str, clean: PerReplicate, protected: PerReplicate,
           attacked: PerReplicate,
           threshold: float, *, alpha: float = 0.05, control: PerReplicate | None = None,
           untrained: PerReplicate | None = None, null: PerReplicate | None = None,
           min_learned: float = DEFAULT_MIN_LEARNED, min_effect: float = DEFAULT_MIN_EFFECT,
           resamples: int = 1000, seed: int = 0) -> MetricVerdict:
    """The verdict for one metric from per-replicate, per-image values of the three exploits.

    ``untrained``: the base model's generations with the same prompts and seeds, per replicate
    (the engine always gives them); with them a pass needs all three conditions (module
    docstring), without them (earlier callers) the learned margin and the effect size are not
    checked and are None. ``null``: the standard exploit on uniformly noised images
    (``controls.null_baseline``), recorded beside the protection's effect.

    Values may be None (undefined in that slot): such a slot is left out of every exploit of
    its replicate (``pair_slots``) and counted in ``slots_left_out``. The untrained reference and
    the null baseline are paired with clean and protected separately, so that a slot undefined
    only in them never changes m_c, m_p, m_a, the effect or retained protection.
    """
    _sign(direction)  # validates the direction
    paired, left_out = _paired(metric, {"clean": clean, "protected": protected,
                                        "attacked": attacked,
                                        "control": control})
    reference = {"clean": clean, "protected": protected, "untrained": untrained, "null": null}
    reference = {k: v for k, v in reference.items() if v is not None}
    clean, protected, attacked = paired["clean"], paired["protected"], paired["attacked"]
    control = paired.get("control")
    est_c, est_p, est_a, effect, replicated = _estimates(direction, clean, protected, attacked,
                                                         alpha, resamples, seed)
    means = {"clean": _means(clean), "protected": _means(protected), "attacked": _means(attacked)}
    matched = None
    if control is not None:
        matched = _matched(direction, clean, attacked, control, alpha)
        means["control"] = _means(control)
    ref = (_reference(direction, reference, alpha, resamples, seed, replicated)  # type: ignore[arg-type]
           if len(reference) > 2 else {})
    means.update(ref.pop("means", {}))
    extra = {**ref, "min_learned": float(min_learned) if untrained is not None else None,
             "min_effect": float(min_effect) if untrained is not None else None}
    ctx = _Words(metric, "↑" if direction == "up" else "↓", f"{100 * (1 - alpha):g}%",
                 f"K = {len(clean)} replicates" if replicated else "1 replicate (image bootstrap: "
                         "a rerun may differ)",
                 est_c, est_p, effect)
    learned, share, m_u = ref.get("learned"), ref.get("share"), ref.get("m_u")
    gate = _baseline_gate(ctx, learned, share, m_u, min_learned, min_effect)
    if gate is not None:
        outcome, sentence = gate
        return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, None,
                             outcome, sentence,
                             means, matched, left_out, **extra)
    retained = _retained(direction, clean, protected, attacked, alpha, replicated, resamples, seed)
    passed = bool(math.isfinite(retained.ci_low) and retained.ci_low >= threshold)
    sentence = _retained_sentence(ctx, retained, passed, threshold, est_a, learned, share, m_u,
                                  min_effect)
    return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, retained,
                         "pass" if passed else "fail", sentence, means, matched, left_out, **extra)


def _retained_sentence(ctx: _Words, retained: Estimate, passed: bool, threshold: float,
                       est_a: Estimate, learned: Estimate | None, share: Estimate | None,
                       m_u: Estimate | None, min_effect: float) -> str:
    """The verdict's sentence when the baseline conditions are met: retained protection against
    the threshold, with the exploit's learned margin and the protection's share of it."""
    verb = "holds" if passed else "does not hold"
    size = ""
    if share is not None and learned is not None and m_u is not None:
        size = (f" The exploit learned {learned.value:+.4f} over the base model (m_u "
                f"{m_u.value:.4f}); the protection removed {share.value:.0%} of it "
                f"[{share.ci_low:.0%}, {share.ci_high:.0%}] (minimum {min_effect:.0%}).")
    return (
        f"protection {verb}: retained {retained.value:.2f}, {ctx.level} CI [{retained.ci_low:.2f}, "
        f"{retained.ci_high:.2f}], lower bound {'≥' if passed else '<'} threshold {threshold:.2f} "
        f"on {ctx.metric} {ctx.arrow} (m_c {ctx.m_c.value:.4f}, m_p {ctx.m_p.value:.4f}, m_a "
        f"{est_a.value:.4f}; {ctx.basis}).{size}"
    )


def _retained(direction: str, clean: PerReplicate, protected: PerReplicate, attacked: PerReplicate,
              alpha: float,
              replicated: bool, resamples: int, seed: int) -> Estimate:
    """Retained protection's interval: over the replicates (Fieller), or the image bootstrap of
    the one replicate."""
    if replicated:
        return intervals.retained_interval(clean, protected, attacked, direction, alpha)
    return intervals.image_bootstrap_retained(clean[0], protected[0], attacked[0], direction, alpha,
                                              resamples=resamples, seed=seed)


@dataclass(frozen=True)
class _Words:
    """What every verdict sentence of one metric names."""

    metric: str
    arrow: str  # ↑ / ↓: the direction of better protection
    level: str  # "95%"
    basis: str  # "K = 3 replicates" or the one-replicate bootstrap
    m_c: Estimate
    m_p: Estimate
    effect: Estimate


def _baseline_gate(w: _Words, learned: Estimate | None, share: Estimate | None,
                   m_u: Estimate | None,
                   min_learned: float, min_effect: float) -> tuple[Outcome, str] | None:
    """The first of the baseline conditions that fails, as (outcome, sentence), or None when the
    exploit learned and the protection's effect is meaningful (module docstring, conditions 1–2)."""
    if learned is not None and m_u is not None and not learned.ci_low > min_learned:
        return NOT_LEARNED, (
            f"{NOT_LEARNED}: on {w.metric} ({w.arrow} = better protection) the clean fine-tune's "
            f"generations (m_c {w.m_c.value:.4f}) beat the base model's without fine-tuning (m_u "
            f"{m_u.value:.4f}, same prompts and seeds) by {learned.value:+.4f}; the {w.level} "
            f"interval [{learned.ci_low:+.4f}, {learned.ci_high:+.4f}] ({w.basis}) does not lie "
            f"above the minimum {min_learned:g} (verdict.min_learned). An exploit that did not "
            "learn the subject cannot show whether a protection works, so this is neither a pass "
            f"nor a fail (m_p {w.m_p.value:.4f}, effect {w.effect.value:+.4f}). Fix: fine-tune "
            "longer or at another learning rate (--audit-set dreambooth.steps=… / "
            "dreambooth.lr=…; lora.steps / lora.lr for LoRA), or check the subject's images."
        )
    effect = w.effect
    if not effect.ci_low > 0:
        return "no effect at baseline", (
            f"no effect at baseline: {w.metric} ({w.arrow} = better protection) moved by "
            f"{effect.value:+.4f} from clean (m_c {w.m_c.value:.4f}) to protected (m_p "
            f"{w.m_p.value:.4f}); the {w.level} interval [{effect.ci_low:+.4f}, "
            f"{effect.ci_high:+.4f}] ({w.basis}) does not lie above 0, so there is no protection "
            "for the attack to remove."
        )
    if (share is not None and learned is not None and m_u is not None
            and not share.ci_low >= min_effect):
        return NO_MEANINGFUL_EFFECT, (
            f"{NO_MEANINGFUL_EFFECT}: the protection removed {share.value:.1%} of what the exploit "
            f"learned on {w.metric} ({w.arrow} = better protection): (m_c − m_p)/(m_c − m_u) = "
            f"({w.m_c.value:.4f} − {w.m_p.value:.4f})/({w.m_c.value:.4f} − {m_u.value:.4f}), "
            f"{w.level} interval [{share.ci_low:.1%}, {share.ci_high:.1%}] ({w.basis}); its lower "
            f"bound is below the minimum {min_effect:.0%} (verdict.min_effect). The effect "
            f"{effect.value:+.4f} [{effect.ci_low:+.4f}, {effect.ci_high:+.4f}] lies above 0 but "
            f"is small next to the {learned.value:+.4f} the exploit learned, so there is no "
            "meaningful protection for the attack to remove."
        )
    return None


def _paired(metric: str, groups: dict[str, PerReplicate
                                      | None]) -> tuple[dict[str, PerReplicate], list[int]]:
    """The exploits' values paired by slot (``pair_slots``), after checking what the verdict
    needs."""
    clean, protected, attacked = groups["clean"], groups["protected"], groups["attacked"]
    assert clean is not None and protected is not None and attacked is not None
    if not (len(clean) == len(protected) == len(attacked)) or not clean:
        raise ValueError(f"{metric}: the exploits need the same, non-zero number of replicates "
                         f"(clean {len(clean)}, protected {len(protected)}, attacked "
                         f"{len(attacked)})")
    paired, left_out = pair_slots({k: v for k, v in groups.items() if v is not None})
    if len(paired["clean"]) == 1 and min(len(v[0]) for v in paired.values()) < 2:
        raise ValueError(f"{metric}: one replicate with fewer than 2 values per exploit (a "
                         "set-level metric such as FID gives one per replicate): the image "
                         "bootstrap has nothing to resample; run --replicates 2 or more")
    return paired, left_out


def _reference(direction: str, groups: dict[str, PerReplicate], alpha: float, resamples: int,
               seed: int,
               replicated: bool) -> dict[str, Any]:
    """m_u, the learned margin and the effect size (with ``untrained``), and the null baseline
    (with ``null``), on clean, protected and these paired by slot among themselves."""
    paired, _ = pair_slots(groups)
    c, p = paired["clean"], paired["protected"]
    u, n = paired.get("untrained"), paired.get("null")
    out: dict[str, Any] = {"means": {}}
    if replicated:
        mean = functools.partial(intervals.mean_interval, alpha=alpha)
        diff = functools.partial(intervals.effect_interval, direction=direction, alpha=alpha)
        ratio = functools.partial(intervals.share_interval, direction=direction, alpha=alpha)
    else:  # one replicate: the image bootstrap of one fine-tune (flagged by the checks)
        boot: dict[str, Any] = {"alpha": alpha, "resamples": resamples, "seed": seed}

        def mean(v: PerReplicate) -> Estimate:  # type: ignore[misc]
            return intervals.image_bootstrap_mean(v[0], **boot)

        def diff(a: PerReplicate, b: PerReplicate) -> Estimate:  # type: ignore[misc]
            return intervals.image_bootstrap_effect(a[0], b[0], direction, **boot)

        def ratio(a: PerReplicate, b: PerReplicate, ref: PerReplicate) -> Estimate:  # type: ignore[misc]
            return intervals.image_bootstrap_share(a[0], b[0], ref[0], direction, **boot)
    if u is not None:
        out.update(m_u=mean(u), learned=diff(c, u), share=ratio(c, p, u))
        out["means"]["untrained"] = _means(u)
    if n is not None:
        out["null_baseline"] = NullBaseline(mean(n), diff(c, n),
                                            ratio(c, n, u) if u is not None else None)
        out["means"]["null_baseline"] = _means(n)
    return out


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
    return MatchedControl(mean, Estimate(shift, nan, nan, 1, mean.n_images,
                                         intervals.SINGLE_REPLICATE),
                          Estimate(effect, nan, nan, 1, mean.n_images, intervals.SINGLE_REPLICATE))


def worst_variant(verdicts: list[MetricVerdict | None]) -> int:
    """Index of the variant with the lowest retained protection (the exploiter's best; 0 if
    none)."""
    best_i, best = 0, math.inf
    for i, v in enumerate(verdicts):
        if v is None or v.retained is None or not math.isfinite(v.retained.value):
            continue
        if v.retained.value < best:
            best_i, best = i, v.retained.value
    return best_i
