"""Editing exploits (PhotoGuard §5): seeded img2img, edits compared with the clean run's edits of
the same replicate, the verdict measured from the null baseline, the editing scenarios."""

from __future__ import annotations

import pytest
import torch

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_exploit
from audit.diffusion.editing import EditConfig, edit
from audit.judge.case import CaseJudge
from audit.parts import PROTECTIONS
from audit.parts.metrics.edits import EditSSIM
from audit.parts.registry import InvalidParams, PartSpec
from audit.run.planner import ProtectionInfo, plan_case
from audit.run.progress import Progress
from audit.run.stages import single_thread

EDIT_SCENARIOS = ("edit-no-attack", "edit-jpeg-q75", "edit-impress-photoguard", "edit-inpainting")
CFG = EditConfig(("a person in an airplane",), 0.5, 6, 7.5, "", 1.0, seed=3)


def test_img2img_is_seeded_per_slot_and_clean_vs_clean_is_identical(tiny, images) -> None:
    with single_thread(torch.device("cpu")):  # as the engine runs edits on the CPU
        _seeded_per_slot(tiny, images[:2])


def _seeded_per_slot(tiny, x: torch.Tensor) -> None:
    first, again = edit(tiny, x, CFG, 64, Progress()), edit(tiny, x, CFG, 64, Progress())
    assert torch.equal(first, again)
    assert EditSSIM().compute(again, first).values == pytest.approx([1.0, 1.0])
    # the seed matters (so equality above is the seeding, not a constant output) ...
    other = edit(tiny, x, EditConfig(**{**CFG.to_dict(), "prompts": CFG.prompts, "seed": 4}), 64,
                 Progress())
    assert not torch.equal(first, other)
    # ... and so does the input: the edit starts from the image (SDEdit), not from noise alone
    moved = edit(tiny, x.flip(-1), CFG, 64, Progress())
    assert min(EditSSIM().compute(moved, first).values) < 0.99


@pytest.mark.parametrize("name", EDIT_SCENARIOS)
def test_editing_scenarios_validate_and_plan_the_edit_as_the_standard_exploit(name: str) -> None:
    scenario = load_scenario(CATALOGUE_DIR / f"{name}.yaml")
    assert scenario.verdict.metric == "edit_ssim"
    plan = plan_case(scenario, _info("photoguard-encoder"), get_tier("smoke"), 0)
    exploit = "inpainting" if name == "edit-inpainting" else "img2img"
    assert plan.standard_exploit.name == exploit
    assert plan.standard_exploit.params["steps"] == 20  # the smoke tier's cap
    assert {r.exploit.name for r in plan.runs} == {exploit}
    assert not plan.runs_for("control")  # the clean edits are the reference, no matched control
    # the null baseline runs on the smoke tier too: the editing verdict is measured from it
    null = plan.runs_for("null_baseline")
    assert len(null) == 3 and null[0].chain[0].spec.params["epsilon"] == pytest.approx(16 / 255)


def test_an_editing_exploit_is_not_a_standard_exploit() -> None:
    with pytest.raises(InvalidParams, match="edit-"):
        parse_exploit("img2img")


def _info(name: str) -> ProtectionInfo:
    params = PROTECTIONS.get(name).validate({}).model_dump()
    return ProtectionInfo(PartSpec("protection", name, params))


def test_edits_are_measured_against_the_clean_edits_of_their_own_replicate(tmp_path) -> None:
    from audit.config.options import AuditOptions
    from audit.run.case import measure_edits
    from audit.run.session import AuditSession
    from audit.run.stages import ExploitOutput

    scenario = load_scenario(CATALOGUE_DIR / "edit-no-attack.yaml")
    session = AuditSession(AuditOptions(protection="photoguard-encoder", results_dir=tmp_path,
                                        no_cache=True))
    plan = plan_case(scenario, _info("photoguard-encoder"), session.tier, 0)
    g = torch.Generator().manual_seed(0)
    clean = [torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8)
             for _ in plan.seeds]
    outputs = {}
    for run in plan.unique_runs():
        # protected edits = their own replicate's clean edits; the null baseline's = another's
        edits = (clean[run.replicate] if run.role != "null_baseline"
                 else clean[(run.replicate + 1) % len(clean)])
        outputs[run.identity] = ExploitOutput("", "key", edits, {})
    values = measure_edits(session, plan, outputs, ["edit_ssim"])
    for run in plan.runs_for("protected") + plan.runs_for("clean"):
        assert values["edit_ssim"][run.identity]["values"] == pytest.approx([1.0, 1.0])
    for run in plan.runs_for("null_baseline"):
        assert max(values["edit_ssim"][run.identity]["values"]) < 0.5


def _judge(protection: str, protected: list[list[float]], null: list[list[float]]) -> dict:
    scenario = load_scenario(CATALOGUE_DIR / "edit-no-attack.yaml")
    tier = get_tier("smoke")
    plan = plan_case(scenario, _info(protection), tier, 0)
    per_role = {"clean": [[1.0] * 4] * 3, "protected": protected, "attacked": protected,
                "null_baseline": null}
    by_run: dict = {}
    for role in ("clean", "protected", "null_baseline", "attacked"):
        for run in plan.runs_for(role, 0 if role == "attacked" else None):
            by_run.setdefault(run.identity, {"values": per_role[role][run.replicate],
                                             "direction": "down", "name": "edit_ssim"})
    return CaseJudge(tier, 0).judge(plan, scenario, {"edit_ssim": by_run}, "edit_ssim",
                                    editing=True).model_dump()


def test_the_editing_verdict_is_measured_from_the_null_baseline() -> None:
    null = [[0.999, 0.998, 0.999, 0.997], [0.998, 0.999, 0.999, 0.998], [0.999, 0.999, 0.997,
                                                                          0.998]]
    # auditing random: its protected runs are the null baseline's, so no effect by construction,
    # although every value lies below the clean-vs-clean 1
    record = _judge("random", null, null)
    assert record["outcome"] == "no effect at baseline"
    assert record["edit_baseline"]["role"] == "null_baseline"
    # a protection whose edits move further from the clean edits than noise's do: a pass (no
    # attack retains everything), the effect measured from m_null, not from 1
    protected = [[v - 0.05 - 0.01 * i for i, v in enumerate(row)] for row in null]
    record = _judge("photoguard-encoder", protected, null)
    assert record["outcome"] == "pass", record["reason"]
    entry = record["metrics"]["edit_ssim"]
    assert entry["m_c"]["value"] == pytest.approx(sum(map(sum, null)) / 12)
    assert entry["effect"]["value"] == pytest.approx(0.065, abs=1e-6)
    # the same protection measured against edits of noise that moves them as far: no effect
    record = _judge("photoguard-encoder", protected, protected)
    assert record["outcome"] == "no effect at baseline"
