"""Retained protection and the verdict (DESIGN.md "Verdict: retained protection").

For a metric m whose direction says which way means better protection, with m_c the exploit
on clean images, m_p on protected images (no attack) and m_a after the scenario's attack:

    retained = (m_a − m_c) / (m_p − m_c)

1 = the attack removed nothing, 0 = it fully restored the clean result, < 0 = the exploit did
better than on clean data. Confidence intervals come from a paired percentile bootstrap over
generated-image slots: slot i of the clean, protected and attacked exploits shares its prompt
and initial noise, so the three are resampled with the same indices. A case passes when the
protection was effective at baseline — the 95 % interval of the protective effect
d·(m_p − m_c) lies above 0 (d = +1 for ↑ metrics, −1 for ↓) — and the lower bound of the 95 %
interval of retained protection is at least the scenario's threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Outcome = Literal["pass", "fail", "no effect at baseline", "error"]


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


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

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        return data


def retained_protection(m_c: float, m_p: float, m_a: float) -> float:
    """(m_a − m_c) / (m_p − m_c); NaN when m_p = m_c (nothing to retain)."""
    denom = m_p - m_c
    if denom == 0:
        return float("nan")
    return (m_a - m_c) / denom


def _estimate(samples: np.ndarray, point: float, n: int, alpha: float) -> Estimate:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return Estimate(point, float("nan"), float("nan"), n)
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(point), float(lo), float(hi), n)


def decide(
    metric: str,
    direction: str,
    clean: list[float],
    protected: list[float],
    attacked: list[float],
    threshold: float,
    *,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> MetricVerdict:
    """The verdict for one metric from per-image values of the three exploits (paired by slot)."""
    if direction not in ("up", "down"):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    c, p, a = (np.asarray(v, dtype=float) for v in (clean, protected, attacked))
    if not (len(c) == len(p) == len(a)) or len(c) == 0:
        raise ValueError(
            f"{metric}: the three exploits must give the same, non-zero number of values "
            f"(clean {len(c)}, protected {len(p)}, attacked {len(a)})"
        )
    d = 1.0 if direction == "up" else -1.0
    n = len(c)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    cb, pb, ab = c[idx].mean(1), p[idx].mean(1), a[idx].mean(1)
    mc, mp, ma = float(c.mean()), float(p.mean()), float(a.mean())
    effect = _estimate(d * (pb - cb), d * (mp - mc), n, alpha)
    est_c, est_p, est_a = (_estimate(b, m, n, alpha) for b, m in ((cb, mc), (pb, mp), (ab, ma)))
    arrow = "↑" if direction == "up" else "↓"
    if not effect.ci_low > 0:
        sentence = (
            f"no effect at baseline: {metric} ({arrow} = better protection) moved by "
            f"{d * (mp - mc):+.4f} from clean (m_c {mc:.4f}) to protected (m_p {mp:.4f}); the 95% "
            f"interval [{effect.ci_low:+.4f}, {effect.ci_high:+.4f}] does not lie above 0, so there "
            "is no protection for the attack to remove."
        )
        return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, None,
                             "no effect at baseline", sentence)
    with np.errstate(divide="ignore", invalid="ignore"):
        rb = (ab - cb) / (pb - cb)
    retained = _estimate(rb, retained_protection(mc, mp, ma), n, alpha)
    passed = bool(np.isfinite(retained.ci_low) and retained.ci_low >= threshold)
    outcome: Outcome = "pass" if passed else "fail"
    verb = "holds" if passed else "does not hold"
    sentence = (
        f"protection {verb}: retained {retained.value:.2f}, 95% CI [{retained.ci_low:.2f}, "
        f"{retained.ci_high:.2f}], lower bound {'≥' if passed else '<'} threshold {threshold:.2f} "
        f"on {metric} {arrow} (m_c {mc:.4f}, m_p {mp:.4f}, m_a {ma:.4f}; n = {n} images)."
    )
    return MetricVerdict(metric, direction, threshold, est_c, est_p, est_a, effect, retained, outcome, sentence)
