"""Interval estimates that cover what a rerun of the audit would give.

Sampling design
---------------
A verdict rests on K independent *replicates*. Replicate r fine-tunes and generates with its
own seed for each of the three exploits (clean, protected, attacked); the three exploits of one
replicate share that seed (paired by replicate) and, inside a replicate, image slot i shares
its prompt and initial noise across the three exploits (paired by slot).

This is two-stage (cluster) sampling: the replicates are the primary units, drawn from the
population of possible fine-tune runs, and the generated images are second-stage units inside
each. The quantity an audit is about is the expectation over replicates (over fine-tune seeds),
not the outcome of one particular fine-tune, so the unit of analysis is the replicate mean

    ȳ_r = mean of the per-image values of replicate r.

Two-stage sampling with the primary units drawn from an infinite population (Cochran, Sampling
Techniques, 3rd ed., 1977, §10.2, two-stage sampling with equal cluster sizes, first-stage
sampling fraction f₁ → 0): the variance of the mean of the K replicate means is
S₁²/K, where S₁² is the variance *between replicate means*, and that variance already contains
the within-replicate image variance (var ȳ_r = σ²_between + σ²_within / m). So its unbiased
estimate s₁²/K — the sample variance of the replicate means over K — accounts for both levels
at once, and a Student-t interval on K − 1 degrees of freedom is the interval for the mean.
Replicates with different numbers of images (a metric left some images out) are weighted
equally: each replicate mean is an unbiased estimate of the same replicate-level expectation and
the replicates are independent, so s₁²/K stays unbiased for the variance of their unweighted
mean even when their variances differ.

* ``mean_interval``: m_c, m_p, m_a — the t interval of the replicate means.
* ``effect_interval``: the protective effect d·(m_p − m_c) — the t interval of the paired
  replicate-level differences d·(p_r − c_r) (pairing by replicate removes the shared
  fine-tune-seed variation of m_c).
* ``retained_interval``: retained protection (m_a − m_c)/(m_p − m_c) — Fieller's interval
  (Fieller 1954, "Some problems in interval estimation", J. R. Stat. Soc. B 16:175–185) for the
  ratio of the means of the paired replicate-level numerator N_r = a_r − c_r and denominator
  D_r = p_r − c_r, with their sample variances and covariance over K and t_{K−1}.
* ``learned_interval``: what the exploit learned, d·(m_u − m_c) with m_u the untouched base
  model's generations (same prompts and seeds, no fine-tune) — the paired t interval again.
* ``share_interval``: the effect size (m_c − m_p)/(m_c − m_u), the share of what the exploit
  learned that the protection removed — Fieller's interval again, on N_r = p_r − c_r and
  D_r = u_r − c_r; bounded exactly when the learned margin's interval excludes 0.

Why not a (two-stage) cluster bootstrap
---------------------------------------
With few replicates a bootstrap over replicates cannot work. With K = 3 there are only
C(2K−1, K) = 10 distinct resamples of the replicates, and every resample mean lies between the
smallest and the largest replicate mean, so a percentile interval is inside [min_r ȳ_r,
max_r ȳ_r] — and the range of K draws from a symmetric distribution contains its centre with
probability only 1 − 2^(1−K) = 75 % for K = 3. Resampling images inside each replicate as a
second stage widens this only by the within-replicate part, which is not where the missing
width is. The t quantile on K − 1 degrees of freedom (4.30 for K = 3 at 95 %, against 1.96)
widens the interval by exactly what estimating the between-replicate variance from K values
requires; under normality of the replicate means (which are averages of 24+ images) the
t interval and Fieller's interval are exact. tests/test_intervals.py checks the coverage by
simulation with between-replicate variation calibrated from the smoke-tier benchmark.

Fieller's interval and "no effect at baseline"
-----------------------------------------------
Fieller's 1 − α confidence set for ρ = E[N]/E[D] is {ρ : (N̄ − ρ D̄)² ≤ t² · var(N̄ − ρ D̄)},
i.e. the ρ where the quadratic a ρ² − 2 b ρ + c ≤ 0 with

    a = D̄² − t² v_DD,   b = N̄ D̄ − t² v_ND,   c = N̄² − t² v_NN

(v = sample (co)variance / K, t = t_{1−α/2, K−1}). It is a bounded interval exactly when
a > 0, i.e. |D̄| > t · se(D̄): the denominator differs significantly from 0 at level α. Since
the effect is d·D̄ with the same standard error, **this is exactly the condition that the
effect's t interval at the same α excludes 0**. Otherwise the set is the whole line or the
complement of an interval; then ``retained_interval`` returns ci_low = −inf, ci_high = +inf and
says so in ``method`` — never a finite interval that would pretend to know more.

One replicate
-------------
With K = 1 there is no replicate-level interval: the functions return NaN bounds with method
"single replicate: no interval". The old image-level paired bootstrap over slots of one
fine-tune (as in ``audit.judge.verdict.decide``) is offered as ``image_bootstrap_mean``,
``image_bootstrap_effect`` and ``image_bootstrap_retained`` for reference only: it does NOT
cover the variation between reruns of the audit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

SINGLE_REPLICATE = "single replicate: no interval"
IMAGE_BOOTSTRAP = "image bootstrap over one fine-tune (does NOT cover rerun variation)"

PerReplicate = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 1 − α interval.

    n_replicates: K, the number of replicates the estimate rests on.
    n_images: per-image values per exploit, summed over replicates (the smallest count among
    the exploits involved when they differ).
    method: how the interval was made; says when it is missing (NaN) or unbounded (±inf).
    """

    value: float
    ci_low: float
    ci_high: float
    n_replicates: int
    n_images: int
    method: str

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.ci_low) and math.isfinite(self.ci_high)

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _sign(direction: str) -> float:
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    return 1.0 if direction == "up" else -1.0


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")


def replicate_means(values: PerReplicate) -> np.ndarray:
    """Per-replicate mean of the per-image values; replicates may have different image counts.

    Raises ValueError when there is no replicate, when a replicate is empty or when a value is
    not finite (naming the replicate).
    """
    if len(values) == 0:
        raise ValueError("no replicates: need at least one replicate of per-image values")
    means = np.empty(len(values))
    for r, v in enumerate(values):
        arr = np.asarray(v, dtype=float).ravel()
        if arr.size == 0:
            raise ValueError(f"replicate {r} has no per-image values")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"replicate {r} has non-finite per-image values")
        means[r] = arr.mean()
    return means


def _image_count(values: PerReplicate) -> int:
    return int(sum(len(v) for v in values))


def _paired_means(
        names: Sequence[str], groups: Sequence[PerReplicate]) -> tuple[list[np.ndarray], int]:
    counts = [len(g) for g in groups]
    if len(set(counts)) != 1:
        detail = ", ".join(f"{n} {k}" for n, k in zip(names, counts, strict=True))
        raise ValueError(
            f"the exploits must have the same number of replicates, paired by seed ({detail})"
        )
    means = []
    for name, g in zip(names, groups, strict=True):
        try:
            means.append(replicate_means(g))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return means, min(_image_count(g) for g in groups)


def _t_quantile(alpha: float, k: int) -> float:
    return float(stats.t.ppf(1.0 - alpha / 2.0, k - 1))


def _t_interval(x: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(mean, half-width, t) of the Student-t interval of x on len(x) − 1 df."""
    k = x.size
    mean = float(x.mean())
    t = _t_quantile(alpha, k)
    se = float(x.std(ddof=1)) / math.sqrt(k)
    return mean, t * se, t


def mean_interval(per_replicate_values: PerReplicate, alpha: float = 0.05) -> Estimate:
    """Mean of the replicate means with a Student-t interval on K − 1 df (for m_c, m_p, m_a).

    The between-replicate variance of the replicate means contains the within-replicate image
    variance (Cochran 1977, §10.2), so the interval covers a rerun of the audit.
    With K = 1: NaN bounds, method "single replicate: no interval".
    """
    _check_alpha(alpha)
    m = replicate_means(per_replicate_values)
    k, n = m.size, _image_count(per_replicate_values)
    if k == 1:
        return Estimate(float(m[0]), math.nan, math.nan, 1, n, SINGLE_REPLICATE)
    mean, half, _ = _t_interval(m, alpha)
    return Estimate(mean, mean - half, mean + half, k, n, "t interval on replicate means (K = "
                                                          f"{k}, {k - 1} df)")


def effect_interval(
    clean: PerReplicate, protected: PerReplicate, direction: str, alpha: float = 0.05
) -> Estimate:
    """The protective effect d·(m_p − m_c) with a t interval on K − 1 df.

    From the paired replicate-level differences d·(p_r − c_r), d = +1 for "up" metrics (larger
    = better protection), −1 for "down". > 0 means the protection worked. The interval excludes
    0 exactly when ``retained_interval`` at the same alpha is bounded (Fieller's condition).
    With K = 1: NaN bounds, method "single replicate: no interval".
    """
    d = _sign(direction)
    _check_alpha(alpha)
    (c, p), n = _paired_means(("clean", "protected"), (clean, protected))
    diff = p - c
    k = diff.size
    if k == 1:
        return Estimate(d * float(diff[0]), math.nan, math.nan, 1, n, SINGLE_REPLICATE)
    mean, half, _ = _t_interval(diff, alpha)
    value = d * mean  # negation is exact: the same numbers as the t interval of d·(p_r − c_r)
    return Estimate(
        value, value - half, value + half, k, n,
        f"paired t interval on replicate differences (K = {k}, {k - 1} df)",
    )


def retained_interval(
    clean: PerReplicate,
    protected: PerReplicate,
    attacked: PerReplicate,
    direction: str,
    alpha: float = 0.05,
) -> Estimate:
    """Retained protection (m_a − m_c)/(m_p − m_c) with Fieller's interval (Fieller 1954).

    N_r = a_r − c_r and D_r = p_r − c_r are the paired replicate-level numerator and denominator;
    the point estimate is N̄/D̄ = (ā − c̄)/(p̄ − c̄) (NaN when p̄ = c̄) and the confidence set is
    {ρ : (N̄ − ρD̄)² ≤ t²·(v_NN − 2ρ v_ND + ρ² v_DD)} with v = sample (co)variance / K and
    t = t_{1−α/2, K−1}.

    The set is a bounded interval exactly when |D̄| > t·se(D̄), i.e. when the denominator is
    significantly different from 0 at level alpha — which is exactly the condition that
    ``effect_interval(clean, protected, direction, alpha)`` excludes 0 (the effect is d·D̄ with
    the same standard error). Otherwise the set is the whole line or the complement of an
    interval, and this returns ci_low = −inf, ci_high = +inf with ``method`` saying which.
    Note a bounded interval can come from an effect significantly *below* 0 (a protection that
    helped the exploit); the engine must test the effect's sign first.

    Retained is invariant to shifting and scaling the metric and to its direction (the ratio's
    sign does not depend on d); ``direction`` is validated for symmetry with ``effect_interval``.
    With K = 1: NaN bounds, method "single replicate: no interval".
    """
    _sign(direction)
    _check_alpha(alpha)
    (c, p, a), n = _paired_means(("clean", "protected", "attacked"), (clean, protected, attacked))
    return fieller_ratio(a - c, p - c, alpha, n, "denominator m_p − m_c not significantly "
                                                 f"different from 0 at alpha {alpha:g} (the "
                                                 "effect's interval includes 0)")


def learned_interval(clean: PerReplicate, untrained: PerReplicate, direction: str,
                     alpha: float = 0.05) -> Estimate:
    """What the exploit learned: the margin d·(m_u − m_c) of the clean fine-tune over the
    untouched base model (m_u: its generations with the same prompts and seeds, no fine-tune),
    with the t interval on the K paired replicate differences (``effect_interval``'s method,
    with the untrained reference in the place of the protected exploit). > 0: the fine-tune
    moved the metric towards the subject. With K = 1: NaN bounds."""
    return effect_interval(clean, untrained, direction, alpha)


def share_interval(
    clean: PerReplicate, protected: PerReplicate, untrained: PerReplicate, direction: str,
    alpha: float = 0.05
) -> Estimate:
    """The effect size: the share of what the exploit learned that the protection removed,

        (m_c − m_p) / (m_c − m_u) = d·(m_p − m_c) / d·(m_u − m_c) = effect / learned margin,

    with Fieller's interval for the ratio of the means of the paired replicate-level N_r =
    p_r − c_r and D_r = u_r − c_r (the same construction as ``retained_interval``). 0 = the
    protection removed nothing, 1 = the exploit on protected images is no better than the base
    model. The set is bounded exactly when the learned margin's t interval at the same alpha
    excludes 0, so a case whose exploit learned (margin above a minimum ≥ 0) always has a
    bounded share. Invariant to shifting and scaling the metric and to its direction.
    With K = 1: NaN bounds, method "single replicate: no interval".
    """
    _sign(direction)
    _check_alpha(alpha)
    (c, p, u), n = _paired_means(("clean", "protected", "untrained"), (clean, protected, untrained))
    return fieller_ratio(p - c, u - c, alpha, n, "denominator m_u − m_c (what the exploit "
                                                 "learned) not significantly different from 0 at "
                                                 f"alpha {alpha:g}")


def fieller_ratio(
        num: np.ndarray, den: np.ndarray, alpha: float, n: int, unbounded_why: str) -> Estimate:
    """Fieller's interval (Fieller 1954) for E[N]/E[D] from K paired replicate-level values.

    The point estimate is N̄/D̄ (NaN when D̄ = 0); the confidence set is {ρ : (N̄ − ρD̄)² ≤
    t²·(v_NN − 2ρ v_ND + ρ² v_DD)} with v = sample (co)variance / K and t = t_{1−α/2, K−1}. It
    is bounded exactly when |D̄| > t·se(D̄); otherwise ci = (−inf, +inf) and ``method`` says
    why (``unbounded_why``) and what shape the set has. With K = 1: NaN bounds.
    """
    k = num.size
    n_bar, d_bar = float(num.mean()), float(den.mean())
    value = n_bar / d_bar if d_bar != 0 else math.nan
    if k == 1:
        return Estimate(value, math.nan, math.nan, 1, n, SINGLE_REPLICATE)
    _, half, t = _t_interval(den, alpha)  # the denominator's t half-width, to the last bit
    # Bounded exactly when |D̄| > t·se(D̄): the same comparison that decides whether the
    # denominator's t interval D̄ ± half excludes 0, so the two can never disagree.
    bounded = abs(d_bar) > half
    # Solve the quadratic on N and D scaled by a power of 2 (exact in floating point), so that
    # its coefficients are O(1) whatever the metric's scale (no under- or overflow).
    peak = float(max(np.abs(num).max(), np.abs(den).max()))
    shift = -math.frexp(peak)[1] if peak > 0 else 0
    ns, ds = np.ldexp(num, shift), np.ldexp(den, shift)
    nbs, dbs, hs = float(ns.mean()), float(ds.mean()), math.ldexp(half, shift)
    cov = np.cov(np.vstack([ns, ds]), ddof=1) / k
    t2 = t * t
    qa = (abs(dbs) - hs) * (abs(dbs) + hs)  # D̄² − t² v_DD, its sign that of |D̄| − half
    qb = nbs * dbs - t2 * float(cov[0, 1])  # N̄ D̄ − t² v_ND
    qc = nbs * nbs - t2 * float(cov[0, 0])  # N̄² − t² v_NN
    disc = qb * qb - qa * qc
    label = f"Fieller interval on replicate means (K = {k}, {k - 1} df)"
    if not bounded or qa <= 0:  # (qa ≤ 0 while bounded would need subnormal data)
        if qa < 0 and disc >= 0:
            root = math.sqrt(disc)
            r1, r2 = sorted(((qb - root) / qa, (qb + root) / qa))
            shape = f"the complement of ({r1:.4g}, {r2:.4g})"
        elif qa == 0 and qb == 0:
            shape = "degenerate (the denominator is 0 in every replicate)"
        elif qa == 0:  # |D̄| equals t·se(D̄) to the last bit: the quadratic is linear
            shape = "a half-line"
        else:
            shape = "the whole line"
        return Estimate(value, -math.inf, math.inf, k, n, f"{label}: unbounded — {unbounded_why}; "
                                                          f"Fieller's set is {shape}")
    # Bounded: qa > 0 and disc ≥ 0 in exact arithmetic (N̄/D̄ lies in the set), so clamp rounding.
    root = math.sqrt(max(disc, 0.0))
    q = qb + math.copysign(root, qb)  # numerically stable roots of qa ρ² − 2 qb ρ + qc
    if q == 0.0:
        lo = hi = 0.0
    else:
        lo, hi = sorted((q / qa, qc / q))
    return Estimate(value, lo, hi, k, n, label)


# --- one replicate only: the image-level paired bootstrap, for reference ----------------------


def _single(name: str, v: Sequence[float]) -> np.ndarray:
    arr = np.asarray(v, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: no per-image values")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: non-finite per-image values")
    return arr


def _slots(names: Sequence[str], values: Sequence[Sequence[float]]) -> list[np.ndarray]:
    arrs = [_single(n, v) for n, v in zip(names, values, strict=True)]
    if len({a.size for a in arrs}) != 1:
        detail = ", ".join(f"{n} {a.size}" for n, a in zip(names, arrs, strict=True))
        raise ValueError("image bootstrap pairs by slot: the exploits need equal image counts "
                         f"({detail})")
    return arrs


def _percentile(samples: np.ndarray, point: float, n: int, alpha: float) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Estimate(float(point), math.nan, math.nan, 1, n, IMAGE_BOOTSTRAP)
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(point), float(lo), float(hi), 1, n, IMAGE_BOOTSTRAP)


def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def image_bootstrap_mean(
    values: Sequence[float], alpha: float = 0.05, *, resamples: int = 1000, seed: int = 0
) -> Estimate:
    """Percentile bootstrap over the images of ONE fine-tune. Does NOT cover rerun variation."""
    _check_alpha(alpha)
    v = _single("values", values)
    idx = _resample_index(v.size, resamples, seed)
    return _percentile(v[idx].mean(1), float(v.mean()), v.size, alpha)


def image_bootstrap_effect(
    clean: Sequence[float],
    protected: Sequence[float],
    direction: str,
    alpha: float = 0.05,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """d·(m_p − m_c) by a paired (by slot) percentile bootstrap over the images of ONE fine-tune.

    The earlier verdict's method, used by ``audit.judge.verdict.decide`` only with K = 1: it ignores
    the variation between fine-tune runs and under-covers what a rerun of the audit gives.
    """
    d = _sign(direction)
    _check_alpha(alpha)
    c, p = _slots(("clean", "protected"), (clean, protected))
    idx = _resample_index(c.size, resamples, seed)
    return _percentile(d * (p[idx].mean(1) - c[idx].mean(1)), d * (p.mean() - c.mean()), c.size,
                       alpha)


def image_bootstrap_retained(
    clean: Sequence[float],
    protected: Sequence[float],
    attacked: Sequence[float],
    direction: str,
    alpha: float = 0.05,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """(m_a − m_c)/(m_p − m_c) by a paired percentile bootstrap over the images of ONE fine-tune.

    The earlier verdict's method, used by ``audit.judge.verdict.decide`` only with K = 1: it ignores
    the variation between fine-tune runs and under-covers what a rerun of the audit gives.
    """
    _sign(direction)
    _check_alpha(alpha)
    c, p, a = _slots(("clean", "protected", "attacked"), (clean, protected, attacked))
    idx = _resample_index(c.size, resamples, seed)
    cb, pb, ab = c[idx].mean(1), p[idx].mean(1), a[idx].mean(1)
    den = float(p.mean() - c.mean())
    point = float(a.mean() - c.mean()) / den if den != 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        rb = (ab - cb) / (pb - cb)
    return _percentile(rb, point, c.size, alpha)


def image_bootstrap_share(
    clean: Sequence[float],
    protected: Sequence[float],
    untrained: Sequence[float],
    direction: str,
    alpha: float = 0.05,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """(m_c − m_p)/(m_c − m_u) by a paired percentile bootstrap over the images of ONE fine-tune
    (``audit.judge.verdict.decide`` with K = 1 only): ``image_bootstrap_retained`` with the
    untrained reference as the denominator's exploit. Does NOT cover rerun variation."""
    return image_bootstrap_retained(clean, untrained, protected, direction, alpha,
                                    resamples=resamples, seed=seed)
