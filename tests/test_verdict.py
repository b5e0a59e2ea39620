"""Retained-protection maths and the verdict's outcomes (README, "What one case does", step 6).

``decide`` takes per-replicate lists of per-image values for each exploit (clean, protected,
attacked, and optionally the matched control); with K ≥ 2 replicates every interval rests on
the replicate means, with one replicate it falls back to the paired image bootstrap.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from audit.judge.verdict import decide, pair_slots, retained_protection, worst_variant

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@given(m_c=finite, m_p=finite, m_a=finite)
def test_retained_endpoints_and_affine_invariance(m_c: float, m_p: float, m_a: float) -> None:
    assume(abs(m_p - m_c) > 1e-3)
    assert retained_protection(m_c, m_p, m_p) == pytest.approx(1.0)
    assert retained_protection(m_c, m_p, m_c) == pytest.approx(0.0, abs=1e-12)
    r = retained_protection(m_c, m_p, m_a)
    # Invariant to shifting and scaling the metric (including flipping its sign).
    for scale, shift in ((2.0, 1.0), (-3.0, 0.5)):
        assert retained_protection(scale * m_c + shift, scale * m_p + shift, scale * m_a
                                   + shift) == pytest.approx(r, rel=1e-6, abs=1e-6)


def test_retained_nan_without_baseline_effect() -> None:
    assert math.isnan(retained_protection(0.3, 0.3, 0.5))


def values(mean: float, n: int = 24, spread: float = 0.02, seed: int = 0) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, spread, n))


def reps(mean: float, k: int = 3, n: int = 24, spread: float = 0.02, between: float = 0.005,
         seed: int = 0) -> list[list[float]]:
    """K replicates of n per-image values; each replicate's level moves by ~``between``."""
    shifts = np.random.default_rng(10_000 + seed).normal(0, between, k)
    return [values(mean + float(s), n, spread, seed * 100 + r) for r, s in enumerate(shifts)]


def test_pass_when_attack_removes_nothing() -> None:
    c, p = reps(0.8), reps(0.3, seed=1)
    v = decide("identity_similarity", "down", c, p, p, 0.5)
    assert v.outcome == "pass"
    assert v.retained.value == pytest.approx(1.0)
    assert v.retained.ci_low == pytest.approx(1.0) and v.retained.ci_high == pytest.approx(1.0)
    assert v.effect.value == pytest.approx(0.5, abs=0.02) and v.effect.ci_low > 0
    assert "holds" in v.sentence and "K = 3 replicates" in v.sentence
    assert v.m_c.n_replicates == 3 and v.m_c.n_images == 72
    assert v.replicates["clean"] == pytest.approx([float(np.mean(r)) for r in c])
    assert set(v.replicates) == {"clean", "protected", "attacked"} and v.control is None


def test_fail_when_attack_restores_clean_result() -> None:
    v = decide("identity_similarity", "down", reps(0.8), reps(0.3, seed=1), reps(0.75, seed=2), 0.5)
    assert v.outcome == "fail"
    assert v.retained.value == pytest.approx(0.1, abs=0.05)
    assert v.retained.ci_low < 0.5 and v.retained.bounded
    assert "does not hold" in v.sentence


def test_no_effect_at_baseline_and_direction_matters() -> None:
    v = decide("identity_similarity", "down", reps(0.5), reps(0.5, seed=3), reps(0.5, seed=4), 0.5)
    assert v.outcome == "no effect at baseline" and v.retained is None
    assert "no effect at baseline" in v.sentence
    # A protection that *raises* a ↓ metric had no protective effect either ...
    down = decide("identity_similarity", "down", reps(0.3), reps(0.8, seed=1), reps(0.8, seed=1),
                  0.5)
    assert down.outcome == "no effect at baseline" and down.effect.value < 0
    # ... while on a ↑ metric the same numbers are a protection that worked.
    up = decide("brisque", "up", reps(0.3), reps(0.8, seed=1), reps(0.8, seed=1), 0.5)
    assert up.outcome == "pass"
    assert up.effect.value == pytest.approx(-down.effect.value)
    assert (up.effect.ci_low, up.effect.ci_high) == pytest.approx((
        -down.effect.ci_high, -down.effect.ci_low))
    with pytest.raises(ValueError, match="direction"):
        decide("m", "sideways", reps(0.3), reps(0.8), reps(0.8), 0.5)


def test_replicate_variation_decides_not_the_pooled_images() -> None:
    """Images agree closely inside each replicate, but the replicates disagree about the effect:
    a verdict on the pooled images would see a clear effect; the replicate-level one must not."""
    clean = [values(0.80, spread=0.001, seed=r) for r in range(3)]
    protected = [values(m, spread=0.001, seed=10 + r) for r, m in enumerate((0.60, 0.82, 0.79))]
    v = decide("m", "down", clean, protected, protected, 0.5)
    assert v.effect.value > 0.05  # a pooled-image interval would be far above 0
    assert v.effect.ci_low <= 0 and v.outcome == "no effect at baseline"
    # One replicate of the same data: the image bootstrap sees only the images, and says so.
    single = decide("m", "down", clean[:1], protected[:1], protected[:1], 0.5)
    assert single.effect.ci_low > 0 and single.outcome == "pass"
    assert "bootstrap" in single.effect.method and "1 replicate (image bootstrap" in single.sentence


def test_one_replicate_falls_back_to_the_image_bootstrap() -> None:
    c, p, a = [values(0.8)], [values(0.3, seed=1)], [values(0.75, seed=2)]
    v = decide("m", "down", c, p, a, 0.5, resamples=500, seed=1)
    assert v.outcome == "fail"
    for est in (v.m_c, v.m_p, v.m_a, v.effect, v.retained):
        assert "bootstrap" in est.method and est.n_replicates == 1
        assert est.ci_low <= est.value <= est.ci_high
    assert v.m_c.value == pytest.approx(np.mean(c[0]))
    again = decide("m", "down", c, p, a, 0.5, resamples=500, seed=1)
    assert again == v  # the bootstrap is seeded
    passed = decide("m", "down", c, p, p, 0.5, resamples=500)
    assert passed.outcome == "pass" and passed.retained.value == pytest.approx(1.0)


def test_alpha_sets_the_interval_width() -> None:
    args = ("m", "down", reps(0.8), reps(0.3, seed=1), reps(0.4, seed=2), 0.5)
    wide, narrow = decide(*args, alpha=0.05), decide(*args, alpha=0.2)
    assert narrow.effect.ci_high - narrow.effect.ci_low < wide.effect.ci_high - wide.effect.ci_low
    assert narrow.retained.ci_low > wide.retained.ci_low
    assert "95%" in wide.sentence and "80%" in narrow.sentence


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 4),
    n=st.integers(4, 30),
    seed=st.integers(0, 1000),
    m_c=st.floats(0.5, 1.0),
    gap=st.floats(0.1, 0.5),
    frac=st.floats(-0.5, 1.5),
    threshold=st.floats(0.0, 1.0),
)
def test_outcome_follows_lower_bound_and_effect_ci_brackets_point(
    k: int, n: int, seed: int, m_c: float, gap: float, frac: float, threshold: float
) -> None:
    c = reps(m_c, k, n, seed=seed)
    p = reps(m_c - gap, k, n, seed=seed + 1)
    a = reps(m_c - frac * gap, k, n, seed=seed + 2)
    v = decide("m", "down", c, p, a, threshold, resamples=300, seed=seed)
    if v.retained is not None:
        assert v.effect.ci_low > 0
        assert v.retained.ci_low <= v.retained.value <= v.retained.ci_high
        assert (v.outcome == "pass") == (v.retained.ci_low >= threshold)
    else:
        assert v.outcome == "no effect at baseline" and not v.effect.ci_low > 0
    assert v.effect.ci_low <= v.effect.value <= v.effect.ci_high  # a mean difference: always inside
    assert v.m_c.n_replicates == k and v.m_c.n_images == k * n
    assert v.effect.value == pytest.approx(np.mean([np.mean(x) for x in c])
                                           - np.mean([np.mean(x) for x in p]))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("direction", ["down", "up"])
def test_matched_control_fields(k: int, direction: str) -> None:
    c, p, a, ctl = reps(0.8, k), reps(0.3, k, seed=1), reps(0.5, k, seed=2), reps(0.7, k, seed=3)
    d = 1.0 if direction == "up" else -1.0
    mean = lambda x: float(np.mean([np.mean(r) for r in x]))  # noqa: E731
    v = decide("m", direction, c, p, a, 0.5, control=ctl)
    control = v.control
    assert control is not None
    assert control.m_c_control.value == pytest.approx(mean(ctl))
    assert control.shift.value == pytest.approx(d * (mean(ctl) - mean(c)))  # d·(m_c′ − m_c)
    # d·(m_a − m_c′)
    assert control.effect_under_scenario.value == pytest.approx(d * (mean(a) - mean(ctl)))
    assert v.replicates["control"] == pytest.approx([float(np.mean(r)) for r in ctl])
    # The verdict itself still judges retained protection against the standard m_c.
    plain = decide("m", direction, c, p, a, 0.5)
    assert v.effect == plain.effect and v.retained == plain.retained and v.outcome == plain.outcome
    if k == 1:
        assert (math.isnan(control.shift.ci_low)
                and math.isnan(control.effect_under_scenario.ci_high))
    else:
        assert control.shift.ci_low <= control.shift.value <= control.shift.ci_high
        assert control.shift.n_replicates == 3


def test_worst_variant_is_the_lowest_retained() -> None:
    c, p = reps(0.8), reps(0.3, seed=1)
    strong = decide("m", "down", c, p, p, 0.5)  # retained 1
    weak = decide("m", "down", c, p, reps(0.7, seed=2), 0.5)  # retained ~0.2
    middle = decide("m", "down", c, p, reps(0.55, seed=3), 0.5)  # retained ~0.5
    # no effect: no retained
    none = decide("m", "down", c, reps(0.8, seed=4), reps(0.8, seed=5), 0.5)
    assert none.retained is None
    assert worst_variant([strong, weak, middle]) == 1
    assert worst_variant([weak, strong]) == 0
    assert worst_variant([None, strong, none, middle]) == 3
    assert worst_variant([None, none]) == 0 and worst_variant([]) == 0


def test_mismatched_or_empty_replicates_rejected() -> None:
    with pytest.raises(ValueError, match="same, non-zero number"):
        decide("m", "down", [[1.0]], [[1.0], [2.0]], [[1.0]], 0.5)
    with pytest.raises(ValueError, match="same, non-zero number"):
        decide("m", "down", [], [], [], 0.5)


# -- slot pairing: a value undefined in one slot leaves that slot out of every exploit ------------
def test_pair_slots_leaves_a_slot_undefined_in_one_exploit_out_of_all() -> None:
    clean = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    protected = [[1.5, None, 3.5], [4.5, 5.5, 6.5]]  # slot 1 of replicate 0 undefined here only
    # slot 2 of replicate 0 undefined here only
    attacked = [[1.2, 2.2, float("nan")], [4.2, 5.2, 6.2]]
    paired, left_out = pair_slots({"clean": clean, "protected": protected, "attacked": attacked})
    assert paired == {"clean": [[1.0], [4.0, 5.0, 6.0]], "protected": [[1.5], [4.5, 5.5, 6.5]],
                      "attacked": [[1.2], [4.2, 5.2, 6.2]]}
    assert left_out == [2, 0]
    with pytest.raises(
            ValueError, match="replicate 0: slot pairing needs one value per image slot"):
        pair_slots({"clean": [[1.0, 2.0]], "protected": [[1.0]]})
    with pytest.raises(ValueError, match="same number of replicates"):
        pair_slots({"clean": [[1.0]], "protected": [[1.0], [2.0]]})


def test_decide_with_a_slot_undefined_in_one_exploit_only() -> None:
    """BRISQUE undefined on one protected image: without pairing, the clean value of that slot
    would be averaged in while its protected counterpart is missing (slots unpaired)."""
    c, p, a = reps(0.8), reps(0.3, seed=1), reps(0.35, seed=2)
    holed = [list(r) for r in p]
    holed[1][5] = None
    verdict = decide("m", "down", c, holed, a, 0.5)
    by_hand = decide("m", "down", [c[0], c[1][:5] + c[1][6:], c[2]],
                     [p[0], p[1][:5] + p[1][6:], p[2]],
                     [a[0], a[1][:5] + a[1][6:], a[2]], 0.5)
    assert verdict.slots_left_out == [0, 1, 0] and by_hand.slots_left_out == [0, 0, 0]
    assert (verdict.m_c == by_hand.m_c and verdict.effect == by_hand.effect and verdict.retained
            == by_hand.retained)
    assert verdict.m_c.value != pytest.approx(
        decide("m", "down", c, p, a, 0.5).m_c.value, abs=1e-12)
    single = decide("m", "down", [c[0]], [[None] + p[0][1:]], [a[0]], 0.5, resamples=200)
    # the image bootstrap pairs the rest
    assert single.slots_left_out == [1] and single.m_c.n_images == 23


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), finite), min_size=3, max_size=3), min_size=1,
                max_size=6))
def test_pair_slots_keeps_only_slots_defined_everywhere(rows: list[list[float | None]]) -> None:
    clean, protected, attacked = ([[row[j] for row in rows]] for j in range(3))
    paired, left_out = pair_slots({"clean": clean, "protected": protected, "attacked": attacked})
    kept = [row for row in rows if all(v is not None for v in row)]
    assert left_out == [len(rows) - len(kept)]
    assert [list(t) for t in zip(paired["clean"][0], paired["protected"][0], paired["attacked"][0],
                                 strict=True)] == kept


def test_set_level_metric_needs_two_replicates() -> None:
    with pytest.raises(ValueError, match="fewer than 2 values per exploit.*--replicates 2"):
        decide("fid", "up", [[210.0]], [[320.0]], [[300.0]], 0.5)
    fid = decide("fid", "up", [[210.0], [215.0], [205.0]], [[320.0], [330.0], [318.0]],
                 [[300.0], [310.0], [305.0]], 0.5)
    assert fid.outcome == "pass" and fid.m_c.n_replicates == 3 and fid.effect.ci_low > 0
