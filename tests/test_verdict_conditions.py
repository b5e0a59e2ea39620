"""The three conditions of a pass (audit/judge/verdict.py, README "The verdict").

1. the exploit learned: the learned margin d·(m_u − m_c) lies above ``min_learned``, or the
   outcome is "exploit did not learn the subject" — never pass or fail;
2. a meaningful effect: the effect lies above 0 and the effect share (m_c − m_p)/(m_c − m_u)
   has its lower bound ≥ ``min_effect``, or "no meaningful effect at baseline";
3. retained protection's lower bound ≥ the scenario's threshold.

Verdicts are built by ``decide`` on synthetic per-replicate values (K = 3 unless said), m_u
from an untrained reference; the null baseline is recorded beside the protection's effect.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from audit.config.settings import VerdictSettings
from audit.judge import checks, intervals
from audit.judge.verdict import NO_MEANINGFUL_EFFECT, NOT_LEARNED, OUTCOMES, decide


def reps(mean: float, k: int = 3, n: int = 24, spread: float = 0.02, between: float = 0.005,
         seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0, between, k)
    return [list(rng.normal(mean + float(s), spread, n)) for s in shifts]


# the smoke tier's levels: the exploit learned 0.38
CLEAN, UNTRAINED = reps(0.48, seed=1), reps(0.10, seed=2)


def test_the_defaults_are_the_stated_ones() -> None:
    v = VerdictSettings()
    assert v.min_learned == 0.05 and v.min_effect == 0.1
    with pytest.raises(ValueError):
        VerdictSettings(min_effect=1.5)
    with pytest.raises(ValueError):
        # a negative minimum would accept an exploit worse than the base model
        VerdictSettings(min_learned=-0.1)


def test_a_protection_that_removes_a_large_share_passes_with_every_number_recorded() -> None:
    protected = reps(0.25, seed=3)  # removes (0.48 − 0.25)/(0.48 − 0.10) ≈ 60 % of what was learned
    v = decide("subject_similarity", "down", CLEAN, protected, protected, 0.5, untrained=UNTRAINED)
    assert v.outcome == "pass"
    assert v.m_u.value == pytest.approx(np.mean([np.mean(r) for r in UNTRAINED]))
    assert v.learned.value == pytest.approx(v.m_c.value - v.m_u.value) and v.learned.ci_low > 0.05
    assert v.share.value == pytest.approx((v.m_c.value - v.m_p.value) / (v.m_c.value - v.m_u.value))
    assert 0.5 < v.share.value < 0.7 and v.share.ci_low >= 0.1 and v.share.bounded
    assert (v.min_learned, v.min_effect) == (0.05, 0.1)
    assert set(v.replicates) == {"clean", "protected", "attacked", "untrained"}
    assert "learned" in v.sentence and "removed" in v.sentence
    assert (v.to_dict()["share"]["value"] == v.share.value and v.to_dict()["m_u"]["value"]
            == v.m_u.value)


def test_an_exploit_that_did_not_learn_has_its_own_outcome_whatever_the_protection_did() -> None:
    # The clean fine-tune is no better than the base model: nothing to protect, nothing to judge,
    # even though the 'protected' exploit moved a lot (pass on the old rule).
    untrained = reps(0.47, seed=4)
    protected = reps(0.20, seed=3)
    old = decide("subject_similarity", "down", CLEAN, protected, protected, 0.5)
    assert old.outcome == "pass"  # without the untrained reference this would pass ...
    v = decide("subject_similarity", "down", CLEAN, protected, protected, 0.5, untrained=untrained)
    # ... with it, it is neither
    assert v.outcome == NOT_LEARNED and v.outcome not in ("pass", "fail")
    assert v.retained is None and not v.learned.ci_low > 0.05
    for number in (f"{v.m_c.value:.4f}", f"{v.m_u.value:.4f}", f"{v.learned.value:+.4f}", "0.05"):
        assert number in v.sentence
    # the fix: more steps, another lr
    assert "dreambooth.steps" in v.sentence and "dreambooth.lr" in v.sentence


def test_a_learned_margin_significant_but_below_the_minimum_is_not_learning() -> None:
    untrained = [[x - 0.03 for x in r] for r in CLEAN]  # a clear 0.03 gain, under the 0.05 minimum
    protected = reps(0.40, seed=3)
    v = decide("subject_similarity", "down", CLEAN, protected, protected, 0.5, untrained=untrained)
    assert v.learned.ci_low > 0 and v.outcome == NOT_LEARNED
    assert decide("subject_similarity", "down", CLEAN, protected, protected, 0.5,
                  untrained=untrained,
                  min_learned=0.01, min_effect=0.0).outcome == "pass"


def test_an_effect_above_zero_but_below_the_minimum_share_is_not_a_pass() -> None:
    protected = reps(0.46, seed=3, between=0.001)  # effect ≈ 0.02 of a 0.38 gain: ≈ 5 %
    clean = reps(0.48, seed=1, between=0.001)
    v = decide("subject_similarity", "down", clean, protected, protected, 0.5, untrained=UNTRAINED)
    assert v.effect.ci_low > 0, "the effect is real (its interval lies above 0) ..."
    assert v.retained is None and v.outcome == NO_MEANINGFUL_EFFECT, "... but too small to pass"
    assert v.share.ci_low < 0.1 and 0 < v.share.value < 0.1
    assert (f"{v.share.value:.1%}" in v.sentence and "10%" in v.sentence
            and "verdict.min_effect" in v.sentence)
    # The old rule passed it; a lower minimum passes it too: the minimum is what decides.
    assert decide("subject_similarity", "down", clean, protected, protected, 0.5).outcome == "pass"
    assert decide("subject_similarity", "down", clean, protected, protected, 0.5,
                  untrained=UNTRAINED,
                  min_effect=0.01).outcome == "pass"


def test_the_three_conditions_are_checked_in_order() -> None:
    # meaningful effect, the attack removes it
    protected, attacked = reps(0.25, seed=3), reps(0.47, seed=5)
    assert decide(
        "m", "down", CLEAN, protected, attacked, 0.5, untrained=UNTRAINED).outcome == "fail"
    no_effect = decide("m", "down", CLEAN, reps(0.48, seed=6), attacked, 0.5, untrained=UNTRAINED)
    assert no_effect.outcome == "no effect at baseline" and no_effect.share is not None
    assert decide(
        "m", "down", CLEAN, protected, attacked, 0.5,
        untrained=reps(0.48, seed=7)).outcome == NOT_LEARNED


def test_direction_and_affine_invariance_of_the_share() -> None:
    protected = reps(0.25, seed=3)
    down = decide("m", "down", CLEAN, protected, protected, 0.5, untrained=UNTRAINED)
    # ↑: larger = better
    flip = [[[1 - 2 * x for x in r] for r in group] for group in (CLEAN, protected, UNTRAINED)]
    up = decide("m", "up", flip[0], flip[1], flip[1], 0.5, untrained=flip[2])
    assert up.outcome == down.outcome == "pass"
    assert up.share.value == pytest.approx(down.share.value)
    assert (up.share.ci_low, up.share.ci_high) == pytest.approx((
        down.share.ci_low, down.share.ci_high))
    assert up.learned.value == pytest.approx(2 * down.learned.value)
    # On an ↑ metric a "gain" below the base model is not learning.
    assert decide(
        "m", "up", flip[2], flip[1], flip[1], 0.5, untrained=flip[0]).outcome == NOT_LEARNED


def test_share_interval_is_fieller_on_the_learned_margin() -> None:
    c, p, u = CLEAN, reps(0.30, seed=3), UNTRAINED
    s = intervals.share_interval(c, p, u, "down")
    same = intervals.retained_interval(c, u, p, "down")  # (p − c)/(u − c): the same ratio
    assert (s.value, s.ci_low, s.ci_high) == (same.value, same.ci_low, same.ci_high)
    assert s.method.startswith("Fieller")
    # Unbounded exactly when the learned margin's interval includes 0, and says why.
    flat = intervals.share_interval(c, p, reps(0.48, seed=8), "down")
    assert not flat.bounded and "what the exploit learned" in flat.method
    learned = intervals.learned_interval(c, reps(0.48, seed=8), "down")
    assert learned.ci_low <= 0 <= learned.ci_high


def test_one_replicate_uses_the_image_bootstrap_for_the_share() -> None:
    c, p, u = CLEAN[:1], reps(0.25, k=1, seed=3), UNTRAINED[:1]
    v = decide("m", "down", c, p, p, 0.5, untrained=u)
    assert v.share.method == intervals.IMAGE_BOOTSTRAP and math.isfinite(v.share.ci_low)
    assert v.share.value == pytest.approx((np.mean(c[0]) - np.mean(p[0]))
                                          / (np.mean(c[0]) - np.mean(u[0])))


def test_slots_undefined_only_in_the_untrained_reference_leave_the_effect_unchanged() -> None:
    protected = reps(0.25, seed=3)
    holed = [list(r) for r in UNTRAINED]
    holed[1][3] = None
    base = decide("m", "down", CLEAN, protected, protected, 0.5)
    v = decide("m", "down", CLEAN, protected, protected, 0.5, untrained=holed)
    assert (v.m_c, v.m_p, v.effect, v.retained) == (base.m_c, base.m_p, base.effect, base.retained)
    assert v.slots_left_out == base.slots_left_out == [0, 0, 0]
    # The share pairs clean, protected and untrained among themselves: slot 3 of replicate 1 out of
    # all three.
    def drop(group: list[list[float]]) -> list[list[float]]:
        return [[x for i, x in enumerate(r) if not (j == 1 and i == 3)]
                for j, r in enumerate(group)]

    expected = intervals.share_interval(drop(CLEAN), drop(protected), drop(holed), "down")
    assert (v.share.value, v.share.ci_low, v.share.ci_high) == (expected.value, expected.ci_low,
                                                                expected.ci_high)
    assert (v.replicates["untrained"][1]
            == pytest.approx(float(np.mean([x for x in holed[1] if x is not None]))))


def test_the_null_baseline_is_recorded_beside_the_protection_and_flagged_if_it_would_pass() -> None:
    protected, noise = reps(0.25, seed=3), reps(0.47, seed=9)
    v = decide("m", "down", CLEAN, protected, protected, 0.5, untrained=UNTRAINED, null=noise)
    null = v.null_baseline
    assert null.effect.value == pytest.approx(intervals.effect_interval(CLEAN, noise, "down").value)
    assert null.share.value == pytest.approx(intervals.share_interval(
        CLEAN, noise, UNTRAINED, "down").value)
    assert null.m_null.value == pytest.approx(np.mean([np.mean(r) for r in noise]))
    assert v.outcome == "pass" and checks.null_baseline(v) == []
    # Noise that does as much as the protection: the pass cannot tell them apart, and says so.
    strong_noise = decide("m", "down", CLEAN, protected, protected, 0.5, untrained=UNTRAINED,
                          null=reps(0.25, seed=10))
    (flag,) = checks.null_baseline(strong_noise)
    assert (flag.startswith("null baseline:")
            and "cannot tell the protection from any perturbation" in flag)
    # Nothing to say when there is no verdict to doubt.
    small = decide("m", "down", CLEAN, reps(0.47, seed=3), reps(0.47, seed=3), 0.5,
                   untrained=UNTRAINED,
                   null=reps(0.25, seed=10))
    assert small.outcome != "pass" and checks.null_baseline(small) == []


def test_every_outcome_is_listed_once_with_the_new_ones() -> None:
    assert len(set(OUTCOMES)) == len(OUTCOMES) == 6
    assert set(OUTCOMES) == {NOT_LEARNED, NO_MEANINGFUL_EFFECT, "pass", "fail",
                             "no effect at baseline", "error"}


# -- where outcomes are enumerated: the summary, the report ----------------------------------------
def _case(case_id: str, outcome: str, share: float | None = None, null: bool = False) -> Any:
    from tests.records import case_record, estimate

    entry = {"m_u": estimate(0.103), "m_c": estimate(0.48), "m_p": estimate(0.46),
             "m_a": estimate(0.46)}
    if share is not None:
        entry["share"] = estimate(share, share - 0.05, share + 0.05)
    fields: dict[str, Any] = {}
    if null:
        fields["null_baseline"] = {
            "metric": "m", "protection": "random", "epsilon": 0.05, "m_null": estimate(0.47),
            "effect": estimate(-0.006, -0.03, 0.02), "share": estimate(-0.016, -0.08, 0.05),
            "protection_effect": estimate(0.02), "protection_share": estimate(0.04),
            "same_runs_as_protected": True}
    return case_record(case_id, outcome, verdict_metric="m", metrics={"m": entry}, **fields)


def test_the_summary_answers_and_prints_the_new_outcomes_and_numbers() -> None:
    import io
    from types import SimpleNamespace

    from audit.results.summary import STYLE, audit_answer, summary_table

    assert set(STYLE) == set(OUTCOMES)
    assert audit_answer([_case("a", NOT_LEARNED), _case("b", NOT_LEARNED)]).startswith(
        "No verdict: the exploit did not learn the subject")
    small = audit_answer([_case("a", NO_MEANINGFUL_EFFECT, 0.04),
                          _case("b", "no effect at baseline")])
    assert (small.startswith("No meaningful protective effect at baseline")
            and "in 1 case(s)" in small)
    mixed = audit_answer([_case("a", "pass", 0.6), _case("b", NOT_LEARNED)])
    assert ("1 had an exploit that did not learn the subject" in mixed
            and not mixed.startswith("Holds"))
    buffer = io.StringIO()
    summary_table([_case("x", NO_MEANINGFUL_EFFECT, 0.04, null=True)],
                  SimpleNamespace(protection="pid", model="tiny", tier="smoke", seed=0), buffer)
    text = buffer.getvalue()
    assert "m_u" in text and "0.103" in text and "share" in text and "0.04 [-0.01, 0.09]" in text
    assert ("noise baseline (uniform noise, ε 0.0500): m effect -0.0060 [-0.0300, 0.0200], share "
            "-0.02") in text


def test_the_report_ranks_colours_and_counts_the_new_outcomes() -> None:
    from reports.context import OUTCOME_RANK
    from reports.context import OUTCOMES as SHOWN
    from reports.plots import OUTCOME_COLOURS
    from reports.render import outcome_class

    assert set(SHOWN) == set(OUTCOMES) == set(OUTCOME_COLOURS) == set(OUTCOME_RANK)
    classes = {outcome_class(o) for o in OUTCOMES}
    assert len(classes) == len(OUTCOMES) and "o-none" not in classes
    rank = OUTCOME_RANK
    assert (rank["error"] < rank[NOT_LEARNED] < rank["fail"] < rank["no effect at baseline"]
            < rank[NO_MEANINGFUL_EFFECT] < rank["pass"])


def test_below_a_minimum_with_an_interval_that_reaches_it_is_flagged_inconclusive() -> None:
    clean, protected = reps(0.48, seed=1, between=0.001), reps(0.46, seed=3, between=0.001)
    wide = decide("m", "down", clean, protected, protected, 0.5, untrained=UNTRAINED,
                  min_effect=0.06)
    assert wide.outcome == NO_MEANINGFUL_EFFECT and wide.share.ci_low < 0.06 <= wide.share.ci_high
    (flag,) = checks.inconclusive(wide)
    assert (flag.startswith("inconclusive:") and "effect share" in flag
            and "verdict.min_effect" in flag)
    clear = decide("m", "down", clean, protected, protected, 0.5, untrained=UNTRAINED,
                   min_effect=0.5)
    assert clear.outcome == NO_MEANINGFUL_EFFECT and checks.inconclusive(clear) == []
    untrained = reps(0.42, seed=11)
    # a minimum at its estimate: straddled
    margin = intervals.learned_interval(clean, untrained, "down")
    near = decide("m", "down", clean, protected, protected, 0.5, untrained=untrained,
                  min_learned=margin.value)
    assert near.outcome == NOT_LEARNED and "learned margin" in checks.inconclusive(near)[0]
