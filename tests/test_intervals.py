"""Replicate-level intervals (audit/judge/intervals.py): hand-computed cases, properties,
coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from audit.judge.intervals import (
    SINGLE_REPLICATE,
    Estimate,
    effect_interval,
    image_bootstrap_effect,
    image_bootstrap_mean,
    image_bootstrap_retained,
    learned_interval,
    mean_interval,
    replicate_means,
    retained_interval,
    share_interval,
)
from audit.judge.verdict import decide

T2 = 4.302652729911275  # t_{0.975, 2 df}

# K = 3 replicates with unequal image counts; replicate means written next to each.
CLEAN = [[0.50, 0.60], [0.40], [0.55, 0.45, 0.50]]  # 0.55, 0.40, 0.50
PROTECTED = [[0.30], [0.25, 0.25], [0.30, 0.40]]  # 0.30, 0.25, 0.35
ATTACKED = [[0.45], [0.30], [0.40, 0.50]]  # 0.45, 0.30, 0.45


# --- hand-computed cases ------------------------------------------------------------------


def test_replicate_means_unequal_sizes_and_empty_replicate() -> None:
    assert replicate_means(CLEAN) == pytest.approx([0.55, 0.40, 0.50])
    with pytest.raises(ValueError, match="replicate 1 has no per-image values"):
        replicate_means([[0.1, 0.2], [], [0.3]])
    with pytest.raises(ValueError, match="replicate 0 has non-finite"):
        replicate_means([[0.1, math.nan]])
    with pytest.raises(ValueError, match="no replicates"):
        replicate_means([])


def test_mean_interval_by_hand() -> None:
    # Replicate means 0.55, 0.40, 0.50: mean 0.48333, deviations 0.06667, −0.08333, 0.01667,
    # s² = (0.0044444 + 0.0069444 + 0.0002778)/2 = 0.0058333, se = sqrt(s²/3).
    e = mean_interval(CLEAN)
    se = math.sqrt(0.0058333333333333 / 3)
    assert e.value == pytest.approx(0.4833333333)
    assert (e.ci_low, e.ci_high) == pytest.approx((0.4833333333 - T2 * se, 0.4833333333 + T2 * se))
    assert (e.n_replicates, e.n_images) == (3, 6)
    assert "t interval" in e.method


def test_effect_interval_is_the_t_interval_of_paired_differences() -> None:
    # "down" metric: d·(p_r − c_r) = 0.25, 0.15, 0.15 → mean 0.18333, s = 0.057735,
    # se = s/√3 = 1/30 exactly, half-width t_{0.975,2}/30.
    e = effect_interval(CLEAN, PROTECTED, "down")
    assert e.value == pytest.approx(0.1833333333)
    assert e.ci_low == pytest.approx(0.1833333333 - T2 / 30)
    assert e.ci_high == pytest.approx(0.1833333333 + T2 / 30)
    assert e.n_replicates == 3 and e.n_images == 5  # protected has 5 images, clean 6
    # "up": the same metric read the other way round flips the effect and its interval.
    up = effect_interval(CLEAN, PROTECTED, "up")
    assert (up.value, up.ci_low, up.ci_high) == (-e.value, -e.ci_high, -e.ci_low)
    wider = effect_interval(CLEAN, PROTECTED, "down", alpha=0.01)
    assert wider.ci_low < e.ci_low and wider.ci_high > e.ci_high


def test_retained_point_estimate_and_fieller_bounds_by_hand() -> None:
    r = retained_interval(CLEAN, PROTECTED, ATTACKED, "down")
    c, p, a = (np.array(m) for m in ([0.55, 0.40, 0.50], [0.30, 0.25, 0.35], [0.45, 0.30, 0.45]))
    assert r.value == pytest.approx((a.mean() - c.mean()) / (p.mean() - c.mean()))  # 0.4545
    assert r.value == pytest.approx(0.4545454545)
    assert r.bounded and r.ci_low < r.value < r.ci_high
    assert r.method.startswith("Fieller interval")
    # Each bound solves (N̄ − ρD̄)² = t²(v_NN − 2ρ v_ND + ρ² v_DD), v = sample (co)variance / K.
    num, den = a - c, p - c  # −0.10, −0.10, −0.05 and −0.25, −0.15, −0.15
    v = np.cov(num, den, ddof=1) / 3
    assert v[0, 0] == pytest.approx(1 / 1200 / 3)  # s²_N = (2 · 0.016667² + 0.033333²)/2
    assert v[0, 1] == pytest.approx(1 / 1200 / 3)
    assert v[1, 1] == pytest.approx(1 / 300 / 3)  # s²_D = (0.066667² + 2 · 0.033333²)/2
    for rho in (r.ci_low, r.ci_high):
        lhs = (num.mean() - rho * den.mean()) ** 2
        rhs = T2**2 * (v[0, 0] - 2 * rho * v[0, 1] + rho**2 * v[1, 1])
        assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-15)
    # Retained does not depend on the metric's direction.
    up = retained_interval(CLEAN, PROTECTED, ATTACKED, "up")
    assert (up.value, up.ci_low, up.ci_high) == (r.value, r.ci_low, r.ci_high)


def test_no_attack_effect_retains_exactly_one() -> None:
    r = retained_interval(CLEAN, PROTECTED, PROTECTED, "down")
    assert (r.value, r.ci_low, r.ci_high) == pytest.approx((1.0, 1.0, 1.0))


def test_unbounded_when_denominator_is_insignificant() -> None:
    clean, protected = [[0.5], [0.4], [0.6]], [[0.45], [0.42], [0.55]]  # D = −0.05, +0.02, −0.05
    e = effect_interval(clean, protected, "down")
    assert e.ci_low < 0 < e.ci_high
    r = retained_interval(clean, protected, [[0.5], [0.41], [0.58]], "down")
    assert (r.ci_low, r.ci_high) == (-math.inf, math.inf)
    assert not r.bounded
    assert "unbounded" in r.method and "not significantly different from 0" in r.method
    assert math.isfinite(r.value)  # the point estimate is still reported
    # No baseline shift at all: the ratio is undefined and the set is unbounded.
    flat = retained_interval(clean, clean, protected, "up")
    assert math.isnan(flat.value) and (flat.ci_low, flat.ci_high) == (-math.inf, math.inf)


def test_single_replicate_gives_nan_bounds() -> None:
    c, p, a = [[0.5, 0.6]], [[0.3, 0.35]], [[0.4, 0.5]]
    for est in (
            mean_interval(c), effect_interval(c, p, "down"), retained_interval(c, p, a, "down")):
        assert math.isnan(est.ci_low) and math.isnan(est.ci_high)
        assert est.method == SINGLE_REPLICATE and est.n_replicates == 1 and est.n_images == 2
    assert effect_interval(c, p, "down").value == pytest.approx(0.225)
    assert retained_interval(c, p, a, "down").value == pytest.approx(-0.1 / -0.225)


def test_mismatched_replicates_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"same number of replicates.*clean 3, protected 2"):
        effect_interval(CLEAN, PROTECTED[:2], "down")
    with pytest.raises(ValueError, match=r"clean 3, protected 3, attacked 1"):
        retained_interval(CLEAN, PROTECTED, ATTACKED[:1], "down")
    with pytest.raises(ValueError, match="protected: replicate 2 has no per-image values"):
        effect_interval(CLEAN, [[0.3], [0.2], []], "up")
    with pytest.raises(ValueError, match="direction must be 'up' or 'down'"):
        effect_interval(CLEAN, PROTECTED, "higher")
    with pytest.raises(ValueError, match="alpha"):
        mean_interval(CLEAN, alpha=1.5)


def test_estimate_to_dict() -> None:
    d = effect_interval(CLEAN, PROTECTED, "down").to_dict()
    assert set(d) == {"value", "ci_low", "ci_high", "n_replicates", "n_images", "method"}
    with pytest.raises(AttributeError):
        Estimate(0.0, 0.0, 0.0, 1, 1, "x").value = 1.0  # type: ignore[misc]


def test_image_bootstrap_is_the_verdict_bootstrap_and_says_what_it_misses() -> None:
    rng = np.random.default_rng(3)
    c, p = rng.normal(0.8, 0.05, 24), rng.normal(0.3, 0.05, 24)
    a = p + rng.normal(0.05, 0.02, 24)
    old = decide("identity_similarity", "down", [list(c)], [list(p)], [list(a)], 0.5, resamples=400,
                 seed=7)
    eff = image_bootstrap_effect(c, p, "down", resamples=400, seed=7)
    ret = image_bootstrap_retained(c, p, a, "down", resamples=400, seed=7)
    assert (eff.value, eff.ci_low, eff.ci_high) == pytest.approx((
        old.effect.value, old.effect.ci_low, old.effect.ci_high))
    assert (ret.value, ret.ci_low, ret.ci_high) == pytest.approx((
        old.retained.value, old.retained.ci_low, old.retained.ci_high))
    m = image_bootstrap_mean(c, resamples=400, seed=7)
    assert (m.value, m.ci_low, m.ci_high) == pytest.approx((old.m_c.value, old.m_c.ci_low,
                                                            old.m_c.ci_high))
    for est in (eff, ret, m):
        assert "does NOT cover rerun variation" in est.method and est.n_replicates == 1
    with pytest.raises(ValueError, match="equal image counts"):
        image_bootstrap_effect(c, p[:20], "down")


# --- properties -----------------------------------------------------------------------------

unit = st.floats(0, 1, allow_nan=False, allow_infinity=False)


@st.composite
def audits(draw: st.DrawFn) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """K = 2..6 replicates of 1..4 images each; protection and attack shift the values."""
    k = draw(st.integers(2, 6))
    effect = draw(st.floats(-2, 2))
    removal = draw(st.floats(-2, 2))

    def exploit(shift: float) -> list[list[float]]:
        return [[v + shift for v in draw(st.lists(unit, min_size=1, max_size=4))] for _ in range(k)]

    return exploit(0.0), exploit(effect), exploit(effect + removal)


def _inside(est: Estimate) -> bool:
    tol = 1e-9 * (1 + abs(est.value))
    return est.ci_low - tol <= est.value <= est.ci_high + tol


@settings(max_examples=150, deadline=None)
@given(audit=audits(), direction=st.sampled_from(["up", "down"]))
def test_point_estimate_inside_interval(audit, direction: str) -> None:
    c, p, a = audit
    for est in (mean_interval(c), mean_interval(p), effect_interval(c, p, direction)):
        assert est.bounded and _inside(est)
    r = retained_interval(c, p, a, direction)
    if r.bounded:
        assert _inside(r)
    else:
        assert (r.ci_low, r.ci_high) == (-math.inf, math.inf)


@settings(max_examples=150, deadline=None)
@given(audit=audits(), alpha=st.floats(0.001, 0.4), factor=st.floats(1.05, 2.0))
def test_intervals_widen_as_alpha_shrinks(audit, alpha: float, factor: float) -> None:
    c, p, a = audit
    for make in (
        lambda al: mean_interval(a, al),
        lambda al: effect_interval(c, p, "up", al),
        lambda al: retained_interval(c, p, a, "down", al),
    ):
        narrow, wide = make(alpha * factor), make(alpha)
        scale = [abs(x) for x in (narrow.ci_low, narrow.ci_high) if math.isfinite(x)]
        tol = 1e-9 * (1 + max(scale, default=0.0))
        assert wide.ci_low <= narrow.ci_low + tol and wide.ci_high >= narrow.ci_high - tol


@settings(max_examples=200, deadline=None)
@given(audit=audits(), alpha=st.sampled_from([0.01, 0.05, 0.2]))
def test_fieller_bounded_exactly_when_effect_significant(audit, alpha: float) -> None:
    c, p, a = audit
    for direction in ("up", "down"):
        e = effect_interval(c, p, direction, alpha)
        r = retained_interval(c, p, a, direction, alpha)
        assert r.bounded == (e.ci_low > 0 or e.ci_high < 0)


@settings(max_examples=150, deadline=None)
@given(
    audit=audits(),
    shift=st.floats(-5, 5),
    scale=st.one_of(st.floats(0.1, 10), st.floats(-10, -0.1)),
)
def test_retained_invariant_to_shift_and_scale(audit, shift: float, scale: float) -> None:
    c, p, a = audit
    e = effect_interval(c, p, "up")
    half = (e.ci_high - e.ci_low) / 2
    # Away from the boundary of significance, where rounding could flip boundedness.
    assume(abs(e.value) > 1e-3 and abs(abs(e.value) - half) > 1e-3 * max(abs(e.value), half))

    def tr(x: list[list[float]]) -> list[list[float]]:
        return [[scale * v + shift for v in rep] for rep in x]

    r = retained_interval(c, p, a, "up")
    r2 = retained_interval(tr(c), tr(p), tr(a), "down")
    assert r2.value == pytest.approx(r.value, rel=1e-6, abs=1e-8)
    assert r2.bounded == r.bounded
    if r.bounded:
        assert (r2.ci_low, r2.ci_high) == pytest.approx((r.ci_low, r.ci_high), rel=1e-5, abs=1e-7)


@settings(max_examples=100, deadline=None)
@given(audit=audits(), alpha=st.floats(0.01, 0.3))
def test_effect_flips_with_direction(audit, alpha: float) -> None:
    c, p, _ = audit
    up, down = effect_interval(c, p, "up", alpha), effect_interval(c, p, "down", alpha)
    assert (down.value, down.ci_low, down.ci_high) == (-up.value, -up.ci_high, -up.ci_low)


# --- coverage simulation ------------------------------------------------------------------

N_IMAGES = 24  # 8 generations × 3 prompts, as on the smoke tier
MU_C, SD_C = 0.486, 0.025  # clean outcome; between-replicate sd of its true mean
SD_E = 0.017  # between-replicate sd of the protection's effect
SD_G = 0.045  # between-replicate sd of the attack's removal
SD_SLOT, SD_IMAGE = 0.085, 0.053  # per-image noise: shared by a slot's 3 exploits / own


def simulate(rng: np.random.Generator, audits: int, k: int, mu_e: float, mu_g: float):
    """Synthetic per-image values of `audits` audits with k replicates each, "down" metric.

    Generative model (per audit; replicate r = 1..k; image slot i = 1..24):

        c_r ~ N(MU_C, SD_C²)   replicate's clean level (fine-tune seed)
        e_r ~ N(mu_e, SD_E²)   replicate's protective effect
        g_r ~ N(mu_g, SD_G²)   how far the attack moves replicate r back towards clean
        s_ri ~ N(0, SD_SLOT²)  slot i's prompt/noise effect, shared by the three exploits
        clean_ri     = c_r             + s_ri + ε
        protected_ri = c_r − e_r       + s_ri + ε
        attacked_ri  = c_r − e_r + g_r + s_ri + ε,   ε ~ N(0, SD_IMAGE²) independent

    True effect = E[d·(m_p − m_c)] = mu_e (d = −1); true retained = E[m_a − m_c]/E[m_p − m_c]
    = 1 − mu_g/mu_e. Calibration (benchmarks/results/bench-tiny-effects.json, smoke tier,
    subject_similarity, 3 seeds): per-image sd √(SD_SLOT² + SD_IMAGE²) ≈ 0.10 and paired
    per-image difference sd SD_IMAGE·√2 ≈ 0.075 (from the per-seed bootstrap CI widths of the
    effect, se 0.012–0.020 over 24 images); estimated effect sd across replicates
    √(SD_E² + 2 SD_IMAGE²/24) ≈ 0.023 (measured 0.077/0.033/0.042); m_c sd across replicates
    √(SD_C² + 0.1²/24) ≈ 0.032 (measured); m_a − m_p across replicates under JPEG
    0.038/0.027/−0.052 (sd 0.049) gives SD_G ≈ √(0.049² − 0.015²). mu_e = 0.05 is PID's mean
    effect; mu_g = mu_e/2 puts the true retained at 0.5, the usual threshold.
    """
    shape = (audits, k, 1)
    c = MU_C + SD_C * rng.standard_normal(shape)
    e = mu_e + SD_E * rng.standard_normal(shape)
    g = mu_g + SD_G * rng.standard_normal(shape)
    slot = SD_SLOT * rng.standard_normal((audits, k, N_IMAGES))
    eps = SD_IMAGE * rng.standard_normal((3, audits, k, N_IMAGES))
    return c + slot + eps[0], c - e + slot + eps[1], c - e + g + slot + eps[2]


def _covers(est: Estimate, truth: float) -> bool:
    return est.ci_low <= truth <= est.ci_high


def test_coverage_replicate_level_vs_image_bootstrap() -> None:
    rng = np.random.default_rng(20240611)
    audits, k, mu_e, mu_g = 2000, 3, 0.05, 0.025
    true_effect, true_retained = mu_e, 1 - mu_g / mu_e
    c, p, a = simulate(rng, audits, k, mu_e, mu_g)
    cov_c = cov_e = cov_r = bounded = cov_r_bounded = 0
    for i in range(audits):
        cov_c += _covers(mean_interval(c[i]), MU_C)
        cov_e += _covers(effect_interval(c[i], p[i], "down"), true_effect)
        r = retained_interval(c[i], p[i], a[i], "down")
        cov_r += _covers(r, true_retained)
        bounded += r.bounded
        cov_r_bounded += r.bounded and _covers(r, true_retained)
    rep = {
        "m_c": cov_c / audits, "effect": cov_e / audits, "retained": cov_r / audits,
        "retained | bounded": cov_r_bounded / bounded, "bounded": bounded / audits,
    }

    # Today's method: an image-level paired bootstrap over the slots of replicate 0 only.
    boot_audits = 1000
    bc = be = br = 0
    for i in range(boot_audits):
        bc += _covers(image_bootstrap_mean(c[i, 0], resamples=500, seed=i), MU_C)
        be += _covers(image_bootstrap_effect(c[i, 0], p[i, 0], "down", resamples=500, seed=i),
                      true_effect)
        br += _covers(image_bootstrap_retained(c[i, 0], p[i, 0], a[i, 0], "down", resamples=500,
                                               seed=i), true_retained)
    boot = {"m_c": bc / boot_audits, "effect": be / boot_audits, "retained": br / boot_audits}
    print(f"\nK = {k} replicate-level coverage ({audits} audits): {rep}")
    print(f"single-replicate image bootstrap coverage ({boot_audits} audits): {boot}")

    assert rep["m_c"] >= 0.90 and rep["effect"] >= 0.90 and rep["retained"] >= 0.90, rep
    assert rep["retained | bounded"] >= 0.90 and rep["bounded"] > 0.3, rep
    assert boot["effect"] < 0.85 and boot["retained"] < 0.85 and boot["m_c"] < 0.85, boot


def test_coverage_of_retained_when_the_interval_is_bounded() -> None:
    """A stronger protection (effect 3× PID's smoke effect): Fieller is bounded almost always,
    so its coverage is not bought with infinite intervals."""
    rng = np.random.default_rng(7)
    audits, k, mu_e, mu_g = 2000, 3, 0.15, 0.075
    c, p, a = simulate(rng, audits, k, mu_e, mu_g)
    res = [retained_interval(c[i], p[i], a[i], "down") for i in range(audits)]
    bounded = np.mean([r.bounded for r in res])
    coverage = np.mean([_covers(r, 1 - mu_g / mu_e) for r in res])
    print(f"\nstrong protection, K = {k}: retained coverage {coverage:.3f}, bounded {bounded:.3f}")
    assert bounded >= 0.95 and coverage >= 0.90


# The untrained reference (the base model's generations, no fine-tune) on the smoke tier:
# subject_similarity 0.103 against the clean exploit's 0.475–0.486 (README, model card). Its
# replicate mean moves only with the generation seed; per-image spread as a fine-tuned set's.
MU_U, SD_U = 0.103, 0.010


def simulate_untrained(
        rng: np.random.Generator, audits: int, k: int, mu_u: float = MU_U) -> np.ndarray:
    """Per-image values of the untrained reference: u_ri = mu_u + U_r + s'_ri + ε, with its own
    slot effects s'_ri ~ N(0, SD_SLOT²) (the base model does not share the fine-tuned models'
    response to a slot's prompt and noise) and ε ~ N(0, SD_IMAGE²); U_r ~ N(0, SD_U²)."""
    level = mu_u + SD_U * rng.standard_normal((audits, k, 1))
    return level + SD_SLOT * rng.standard_normal(
        (audits, k, N_IMAGES)) + SD_IMAGE * rng.standard_normal((audits, k, N_IMAGES))


@pytest.mark.parametrize(("mu_e", "mu_u"), [(0.05, MU_U), (0.15, MU_U), (0.05, 0.40)])
def test_coverage_of_the_effect_share_and_the_learned_margin(mu_e: float, mu_u: float) -> None:
    """The effect size (m_c − m_p)/(m_c − m_u), Fieller over K = 3 replicates, covers the true
    share in ≥ 90 % of 2000 simulated audits at nominal 95 %: at PID's smoke effect (share 0.13),
    at 3× it (0.39), and with an exploit that learned only 0.086 (m_u 0.40), where the share's
    interval is unbounded in about half the audits and the verdict reads it only in those (~17 %)
    whose learned margin clears its minimum: there too it covers, and is bounded."""
    rng = np.random.default_rng(20240612)
    audits, k = 2000, 3
    c, p, _ = simulate(rng, audits, k, mu_e, 0.0)
    u = simulate_untrained(rng, audits, k, mu_u)
    true_share, true_learned = mu_e / (MU_C - mu_u), MU_C - mu_u
    shares = [share_interval(c[i], p[i], u[i], "down") for i in range(audits)]
    learned = [learned_interval(c[i], u[i], "down") for i in range(audits)]
    coverage = float(np.mean([_covers(s, true_share) for s in shares]))
    bounded = float(np.mean([s.bounded for s in shares]))
    covered_bounded = float(np.mean([_covers(s, true_share) for s in shares if s.bounded]))
    learned_coverage = float(np.mean([_covers(e, true_learned) for e in learned]))
    # The verdict reads the share only where the exploit learned (margin's lower bound > 0.05).
    judged = [s for s, e in zip(shares, learned, strict=True) if e.ci_low > 0.05]
    covered_judged = float(np.mean([_covers(s, true_share) for s in judged]))
    print(f"\nshare {true_share:.3f} (K = {k}): coverage {coverage:.3f}, bounded {bounded:.3f}, "
          f"coverage | bounded {covered_bounded:.3f}, | learned {covered_judged:.3f} "
          f"({len(judged)} audits); learned margin coverage {learned_coverage:.3f}")
    assert coverage >= 0.90 and covered_bounded >= 0.90 and learned_coverage >= 0.90
    # learned ⇒ bounded (Fieller's condition)
    assert covered_judged >= 0.90 and all(s.bounded for s in judged)
    # a smoke-sized learned margin: the coverage is not bought with infinite intervals
    if mu_u == MU_U:
        assert bounded >= 0.95 and len(judged) >= 0.95 * audits
    # Its point estimate is the ratio of the replicate-level means, as decide reports it.
    v = decide("m", "down", c[0].tolist(), p[0].tolist(), p[0].tolist(), 0.5,
               untrained=u[0].tolist())
    assert (v.share.value == pytest.approx(shares[0].value) and v.learned.value
            == pytest.approx(learned[0].value))


def test_t_quantile_used_is_students() -> None:
    assert stats.t.ppf(0.975, 2) == pytest.approx(T2)
