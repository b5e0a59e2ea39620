"""Retained-protection maths and the verdict's outcomes (DESIGN.md 'Verdict')."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audit.verdict import decide, retained_protection

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@given(m_c=finite, m_p=finite, m_a=finite)
def test_retained_endpoints_and_affine_invariance(m_c: float, m_p: float, m_a: float) -> None:
    assume(abs(m_p - m_c) > 1e-3)
    assert retained_protection(m_c, m_p, m_p) == pytest.approx(1.0)
    assert retained_protection(m_c, m_p, m_c) == pytest.approx(0.0, abs=1e-12)
    r = retained_protection(m_c, m_p, m_a)
    # Invariant to shifting and scaling the metric (including flipping its sign).
    for scale, shift in ((2.0, 1.0), (-3.0, 0.5)):
        assert retained_protection(scale * m_c + shift, scale * m_p + shift, scale * m_a + shift) == pytest.approx(r, rel=1e-6, abs=1e-6)


def test_retained_nan_without_baseline_effect() -> None:
    assert math.isnan(retained_protection(0.3, 0.3, 0.5))


def values(mean: float, n: int = 24, spread: float = 0.02, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, spread, n))


def test_pass_when_attack_removes_nothing() -> None:
    v = decide("identity_similarity", "down", values(0.8), values(0.3, seed=1), values(0.3, seed=1), 0.5)
    assert v.outcome == "pass"
    assert v.retained.value == pytest.approx(1.0)
    assert v.retained.ci_low == pytest.approx(1.0)


def test_fail_when_attack_restores_clean_result() -> None:
    v = decide("identity_similarity", "down", values(0.8), values(0.3, seed=1), values(0.75, seed=2), 0.5)
    assert v.outcome == "fail"
    assert v.retained.value == pytest.approx(0.1, abs=0.05)
    assert "does not hold" in v.sentence


def test_no_effect_at_baseline_and_direction_matters() -> None:
    v = decide("identity_similarity", "down", values(0.5), values(0.5, seed=3), values(0.5, seed=4), 0.5)
    assert v.outcome == "no effect at baseline" and v.retained is None
    # A protection that *raises* a ↓ metric had no protective effect either.
    v = decide("identity_similarity", "down", values(0.3), values(0.8, seed=1), values(0.8, seed=1), 0.5)
    assert v.outcome == "no effect at baseline"
    v = decide("brisque", "up", values(0.3), values(0.8, seed=1), values(0.8, seed=1), 0.5)
    assert v.outcome == "pass"


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 30),
    seed=st.integers(0, 1000),
    m_c=st.floats(0.5, 1.0),
    gap=st.floats(0.1, 0.5),
    frac=st.floats(-0.5, 1.5),
)
def test_outcome_follows_lower_bound_and_effect_ci_brackets_point(n: int, seed: int, m_c: float, gap: float, frac: float) -> None:
    c = values(m_c, n, seed=seed)
    p = values(m_c - gap, n, seed=seed + 1)
    a = values(m_c - frac * gap, n, seed=seed + 2)
    v = decide("m", "down", c, p, a, 0.5, resamples=300, seed=seed)
    if v.retained is not None:
        assert v.retained.ci_low <= v.retained.ci_high
        assert (v.outcome == "pass") == (v.retained.ci_low >= 0.5)
    assert v.effect.ci_low <= v.effect.value <= v.effect.ci_high  # a mean difference: always inside
    assert v.m_c.n == n


def test_mismatched_lengths_rejected() -> None:
    with pytest.raises(ValueError, match="same, non-zero number"):
        decide("m", "down", [1.0], [1.0, 2.0], [1.0], 0.5)
