"""``python -m audit plan --estimate``: the work left after cache hits and its device-hours,
checked on a fake calibration (no model is loaded, nothing is timed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from audit.__main__ import main
from audit.config.options import AuditOptions
from audit.config.scenario import CATALOGUE_DIR, catalogue_files, load_scenario
from audit.parts.exploits import trains
from audit.run.estimate import (
    Calibration,
    Work,
    calibration_path,
    cost_seconds,
    count_work,
    device_name,
    estimate,
    fit_line,
    save_calibration,
    summary_lines,
)
from audit.run.planner import plan_case
from audit.run.progress import Progress
from audit.run.session import AuditSession

FAKE = Calibration("FakeGPU 24GB", protect_fixed=2.0, protect_per_iteration=0.5,
                   finetune_fixed={"dreambooth": 10.0, "lora": 5.0},
                   finetune_per_step={"dreambooth": 0.4, "lora": 0.2},
                   generate_fixed=3.0, generate_per_image_step=0.02)


def test_the_cost_is_each_stage_line_summed_by_hand() -> None:
    work = Work(crafts=[1000, 1000], finetunes=[("dreambooth", 1000)] * 3 + [("lora", 500)],
                generations=[(60, 50)] * 4 + [(200, 50)])
    cost = cost_seconds(work, FAKE)
    assert cost["protection_crafts"] == pytest.approx(2 * (2 + 1000 * 0.5))  # 1004 s
    assert cost["fine_tunes"] == pytest.approx(3 * (10 + 400) + (5 + 100))  # 1335 s
    assert cost["generations"] == pytest.approx(4 * (3 + 60) + (3 + 200))  # 455 s
    assert cost["total"] == pytest.approx(1004 + 1335 + 455)
    lines = summary_lines(work, FAKE, gpus=4)
    assert "2 protection crafts, 4 fine-tunes, 5 generation batches (440 images)" in lines[0]
    assert f"{2794 / 3600:.2f} GPU-hours on FakeGPU 24GB" in lines[1]
    assert f"≈ {2794 / 3600 / 4:.2f} h of wall time on 4 GPUs" in lines[1]
    with pytest.raises(KeyError, match="advdm"):
        cost_seconds(Work(finetunes=[("advdm", 10)]), FAKE)


@given(st.floats(0, 100), st.floats(0, 10), st.integers(1, 50), st.integers(1, 50))
def test_two_timings_recover_the_fixed_and_per_unit_cost(fixed: float, per: float, a: int,
                                                           extra: int) -> None:
    b = a + extra
    got = fit_line((a, fixed + a * per), (b, fixed + b * per))
    assert got == pytest.approx((fixed, per), abs=1e-6 * (1 + fixed + b * per))


def test_plan_estimate_on_the_paper_tier_prices_every_distinct_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The paper tier's full catalogue, one subject, an empty cache and a fake calibration in
    the cache folder: every distinct run is one fine-tune and one generation batch of 60
    images at 50 steps, every replicate's PID craft is 1000 iterations."""
    results = tmp_path / "res"
    ident = {"device": device_name(torch.device("cpu")), "model": "tiny", "tier": "paper",
             "resolution": "native"}
    save_calibration(calibration_path(results / "cache", *ident.values()), FAKE, ident)
    code = main(["plan", "--estimate", "--tier", "paper", "--full-catalogue", "--device", "cpu",
                 "--results-dir", str(results), "--no-calibrate", "--gpus", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    options = AuditOptions(protection="pid", tier="paper", results_dir=results, device="cpu")
    session = AuditSession(options, Progress(None))
    scenarios = [load_scenario(p) for p in catalogue_files()]
    work = count_work(session, [(s, "astronaut") for s in scenarios], lookup=False)
    info = session.audited().info
    runs = {r.identity for s in scenarios
            if "objective" not in s.requires or session.protection.has_objective
            for r in plan_case(s, info, options.tier_settings, 0).runs
            if trains(r.exploit.name)}  # editing runs generate, they fine-tune nothing
    assert len(work.finetunes) == len(runs) > 50 and work.crafts == [1000] * 3
    assert (60, 50) in work.generations and (200, 50) in work.generations  # class images
    hours = cost_seconds(work, FAKE)["total"] / 3600
    assert f"{len(runs)} fine-tunes" in out and f"{hours:.2f} GPU-hours on FakeGPU" in out
    assert f"{len(scenarios)} scenario(s) × 1 subject(s)" in out


def test_cached_runs_are_not_counted_again(tmp_path: Path, monkeypatch) -> None:
    """With the cache consulted, a run whose generations are cached costs nothing."""
    options = AuditOptions(protection="random", results_dir=tmp_path, device="cpu", replicates=2)
    session = AuditSession(options, Progress(None))
    scenario = load_scenario(next(p for p in catalogue_files() if p.stem == "no-attack"))
    pending = count_work(session, [(scenario, "astronaut")], lookup=True)
    assert len(pending.finetunes) == 4 and pending.cached_runs == 0
    # cache the clean runs' generations under their real keys, as a finished run leaves them
    plan = session.plan(scenario)
    images = __import__("audit.data.images", fromlist=["to_uint8"]).to_uint8(
        session.subject("astronaut").images)
    for run in plan.runs_for("clean"):
        _, gkey = session.stages.exploit_keys(run, images, session.tier.generation)
        session.cache.put("generate", gkey, {"generations": torch.zeros(1, 3, 8, 8,
                                                                        dtype=torch.uint8)}, {})
    after = count_work(session, [(scenario, "astronaut")], lookup=True)
    assert len(after.finetunes) == 2 and after.cached_runs == 2
    assert dataclasses.asdict(after)["crafts"] == [0, 0]  # random noise: no iterations


def test_several_protections_count_each_ones_runs_and_share_the_clean_ones(tmp_path: Path) -> None:
    """--protection=pid,random: each protection's crafts and protected fine-tunes are counted, the
    clean runs once (the leaderboard's sharing), as the plan command counts them."""
    scenario = load_scenario(CATALOGUE_DIR / "no-attack.yaml")
    one = AuditSession(AuditOptions(protection="pid", results_dir=tmp_path / "a"))
    both = AuditSession(AuditOptions(protection="pid,random", results_dir=tmp_path / "b"))
    alone = count_work(one, [(scenario, "astronaut", "pid")], lookup=False)
    together = count_work(both, [(scenario, "astronaut", "pid"), (scenario, "astronaut", "random")],
                          lookup=False)
    k = one.tier.replicates
    assert len(alone.finetunes) == 2 * k and len(alone.crafts) == k  # clean + protected
    assert len(together.finetunes) == 3 * k  # + random's protected runs; clean shared
    assert len(together.crafts) == 2 * k  # pid's and random's


def test_a_catalogue_with_editing_exploits_calibrates_only_the_fine_tunes(tmp_path: Path) -> None:
    """An editing exploit (img2img) trains nothing: the calibration times the fine-tuning
    exploits only (timing an edit as a fine-tune raised, and the estimate had no price)."""
    session = AuditSession(AuditOptions(protection="pid", results_dir=tmp_path), Progress(None))
    cases = [(load_scenario(CATALOGUE_DIR / f"{name}.yaml"), "astronaut")
             for name in ("edit-no-attack", "no-attack")]
    work, cal, lines = estimate(session, cases)
    assert cal is not None and set(cal.finetune_per_step) == {"dreambooth"}, lines
    assert any("-hours on" in line for line in lines), lines
    assert len(work.finetunes) == 2 * session.tier.replicates  # clean + protected; edits are not
