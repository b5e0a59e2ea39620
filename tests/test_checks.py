"""Validity checks (audit/judge/checks.py): each raises its flag when it should, and only then.

Verdicts are built by ``audit.judge.verdict.decide`` on synthetic per-replicate values, plans by
``audit.run.planner.plan_case`` on the bundled catalogue.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_overrides
from audit.judge import checks
from audit.judge.intervals import Estimate
from audit.judge.verdict import MetricVerdict, decide
from audit.parts.protections.build import build_protection
from audit.run.planner import ProtectionInfo, plan_case


def reps(mean: float, k: int = 3, n: int = 24, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [list(rng.normal(mean + rng.normal(0, 0.005), 0.02, n)) for _ in range(k)]


def verdict(clean: float = 0.8, protected: float = 0.3, attacked: float = 0.3,
            control: float | None = None,
            k: int = 3, direction: str = "down") -> MetricVerdict:
    return decide("m", direction, reps(clean, k), reps(protected, k, seed=1),
                  reps(attacked, k, seed=2), 0.5,
                  control=reps(control, k, seed=3) if control is not None else None)


def plan(name: str = "no-attack", k: int = 3, *items: str, path: Path | None = None):
    t = get_tier("smoke", parse_overrides([f"replicates={k}", *items]))
    protection, spec = build_protection("pid", t)
    return plan_case(load_scenario(path or CATALOGUE_DIR / f"{name}.yaml"),
                     ProtectionInfo(spec, protection.random), t, 0)


# -- replicates ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["no-attack", "jpeg-q75", "prompt-mismatch", "zero-sigma"])
@pytest.mark.parametrize("k", [2, 3])
def test_no_replicate_flag_with_several_replicates(name: str, k: int) -> None:
    assert checks.replicates(plan(name, k)) == []
    assert checks.replicates(plan(name, k, "controls.noise_floor=true")) == []


def test_one_replicate_is_flagged() -> None:
    (flag,) = checks.replicates(plan("no-attack", 1))
    assert flag.startswith("single replicate") and "--replicates 3" in flag


def test_one_replicate_with_attack_steps_flags_only_the_random_ones(tmp_path: Path) -> None:
    flags = checks.replicates(plan("jpeg-q75", 1))
    assert len(flags) == 1 and flags[0].startswith("single replicate")  # JPEG is deterministic
    noisy = tmp_path / "noisy.yaml"
    noisy.write_text("id: noisy\nversion: 1\ntitle: t\nwhy: w\nsource: s\nattack:\n  - "
                     "gaussian_noise: {std: 0.05}\n")
    flags = checks.replicates(plan(k=1, path=noisy))
    assert (len(flags) == 2
            and "randomised part without repeats: gaussian_noise drew once" in flags[1])


def test_the_noise_floor_control_is_not_a_randomised_attack() -> None:
    flags = checks.replicates(plan("no-attack", 1, "controls.noise_floor=true"))
    assert len(flags) == 1 and flags[0].startswith("single replicate")


# -- non-standard runs -----------------------------------------------------------------------------
def test_non_standard_flags_overridden_tiers_only() -> None:
    assert checks.non_standard(get_tier("smoke")) == []
    (flag,) = checks.non_standard(get_tier("smoke", parse_overrides(["dreambooth.steps=5"])))
    assert "non-standard run" in flag and "smoke" in flag and "'steps': 5" in flag


# -- metric coverage -------------------------------------------------------------------------------
def test_metric_coverage() -> None:
    full = {"values": {"clean": [0.1] * 4, "protected": [0.2] * 4},
            "missing": {"clean": 0, "protected": 0}}
    assert checks.metric_coverage("identity_similarity", full) == []
    assert checks.metric_coverage("m", {}) == []
    partial = {**full, "missing": {"clean": 1, "protected": 2}}
    (flag,) = checks.metric_coverage("identity_similarity", partial)
    assert (flag.startswith("identity_similarity:") and "5 of 8 images" in flag
            and "3 fell back" in flag)
    (flag,) = checks.metric_coverage("brisque", {"unavailable": "weights missing"})
    assert flag == "brisque: unavailable: weights missing"


# -- matched control shift -------------------------------------------------------------------------
def test_control_shift_only_when_the_changed_exploit_moves_the_clean_outcome() -> None:
    assert checks.control_shift(verdict(), "v") == []  # no control
    small = verdict(control=0.7)  # shift +0.1 < half the effect (0.25)
    assert small.control is not None and checks.control_shift(small, "v") == []
    big = verdict(control=0.45)  # shift +0.35 > 0.25
    (flag,) = checks.control_shift(big, "instance_prompt=a photo of sks face")
    assert "matched control (variant 'instance_prompt=a photo of sks face')" in flag
    assert f"{big.control.shift.value:+.4f}" in flag and f"{big.effect.value:+.4f}" in flag
    assert f"{big.control.effect_under_scenario.value:+.4f}" in flag
    # A shift in either direction counts (its size, not its sign).
    assert checks.control_shift(verdict(control=1.15), "")
    assert "(variant" not in checks.control_shift(verdict(control=1.15), "")[0]
    # Without a protective effect there is nothing to compare the shift with.
    assert checks.control_shift(verdict(protected=0.9, attacked=0.9, control=0.2), "v") == []


def test_control_shift_boundary_is_half_the_effect() -> None:
    v = verdict(control=0.5)
    share = abs(v.control.shift.value) / v.effect.value
    assert (share > checks.CONTROL_SHIFT_SHARE) == bool(checks.control_shift(v, "v"))


# -- unbounded retained protection -----------------------------------------------------------------
def test_unbounded() -> None:
    bounded = verdict()
    assert bounded.retained.bounded and checks.unbounded(bounded) == []
    # no effect: no retained at all
    assert checks.unbounded(verdict(protected=0.8, attacked=0.8)) == []
    wide = dataclasses.replace(bounded, retained=Estimate(0.7, -math.inf, math.inf, 3, 72,
                                                          "Fieller: unbounded"))
    (flag,) = checks.unbounded(wide)
    assert flag.startswith("m: retained protection's interval is unbounded (Fieller: unbounded)")


# -- noise floor -----------------------------------------------------------------------------------
def test_noise_floor() -> None:
    v = verdict()  # effect ≈ +0.5 on a ↓ metric, m_c ≈ 0.8
    info, flags = checks.noise_floor(v, v.m_c.value - 0.01)
    assert flags == [] and info["shift"] == pytest.approx(0.01) and info["effect"] == v.effect.value
    assert info["m_floor"] == pytest.approx(v.m_c.value - 0.01) and "±1/255" in info["perturbation"]
    # the exploit moves by 0.3 for any change
    info, flags = checks.noise_floor(v, v.m_c.value + 0.3)
    (flag,) = flags
    assert ("noise floor" in flag and "less than twice" in flag and info["shift"]
            == pytest.approx(0.3))
    # The boundary: an effect of exactly twice the shift is not flagged, just below it is.
    assert checks.noise_floor(v, v.m_c.value + v.effect.value / 2 * 0.999)[1] == []
    assert checks.noise_floor(v, v.m_c.value + v.effect.value / 2 * 1.001)[1]
    # No verdict to doubt when there was no effect at baseline.
    none = verdict(protected=0.8, attacked=0.8)
    assert (none.outcome == "no effect at baseline"
            and checks.noise_floor(none, none.m_c.value + 0.5)[1] == [])
    failed = verdict(attacked=0.75)
    assert failed.outcome == "fail" and checks.noise_floor(failed, failed.m_c.value + 0.3)[1]


# -- slots left out, metric cautions ---------------------------------------------------------------
def test_slots_left_out_flag() -> None:
    assert checks.slots_left_out("brisque", None) == []
    assert checks.slots_left_out("brisque", verdict()) == []
    holed = reps(0.3, seed=1)
    holed[0][3] = holed[2][7] = None  # type: ignore[call-overload]
    v = decide("brisque", "up", reps(0.8), holed, reps(0.3, seed=2), 0.5)
    (flag,) = checks.slots_left_out("brisque", v)
    assert (flag.startswith("brisque: 2 image slot(s) undefined")
            and "per replicate: 1, 0, 1" in flag)
    assert "left out of clean, protected and attacked alike" in flag


def test_metric_caution_flag() -> None:
    assert (checks.metric_caution("fid", {"caution": None}) == []
            and checks.metric_caution("fid", {}) == [])
    assert checks.metric_caution("fid", {"caution": "too few images"}) == ["fid: too few images"]


def test_engine_pairs_slots_undefined_in_one_exploit_and_flags_them(tmp_path: Path) -> None:
    """BRISQUE undefined on one generation of one protected run only: the engine leaves that
    slot out of clean, protected and attacked of the same replicate, counts it and flags it."""
    from audit.config.options import AuditOptions
    from audit.judge.case import CaseJudge

    p = plan("jpeg-q75", 3)
    rng = np.random.default_rng(0)
    level = {"clean": 20.0, "protected": 40.0, "attacked": 38.0, "control": 20.0,
             "noise_floor": 20.5}
    by_run = {}
    for run in p.unique_runs():
        values = list(rng.normal(level[run.role], 1.0, 6))
        if run.role == "protected" and run.replicate == 1:
            values[2] = None
        by_run[run.identity] = {"values": values, "direction": "up", "implementation": "test",
                                "missing": int(values.count(None))}
    options = AuditOptions(protection="pid", tier="smoke", results_dir=tmp_path)
    scenario = load_scenario(CATALOGUE_DIR / "jpeg-q75.yaml")
    judgement = CaseJudge(options.tier_settings, options.seed).judge(
        p, scenario, {"brisque": by_run}, "brisque")
    entry = judgement.metrics["brisque"]
    assert entry.slots_left_out == [0, 1, 0] and entry.replicates is not None
    protected_runs = p.runs_for("protected")
    clean_runs = p.runs_for("clean")
    kept = [v for i, v in enumerate(by_run[clean_runs[1].identity]["values"]) if i != 2]
    # slot 2 left out of clean too
    assert entry.replicates["clean"][1] == pytest.approx(float(np.mean(kept)))
    assert entry.replicates["protected"][1] == pytest.approx(
        float(np.mean([v for v in by_run[protected_runs[1].identity]["values"] if v is not None])))
    assert any(f.startswith("brisque: 1 image slot(s) undefined") for f in judgement.flags)
    assert entry.flags and judgement.outcome in ("pass", "fail")
