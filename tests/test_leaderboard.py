"""Several protections in one audit (``--protection=pid,photoguard-encoder,random``): the list,
its errors before compute, the shared runs in the plan, and the leaderboard built from the
records (terminal and report). No model: the report is drawn from the recorded PID audit
(``tests/data/results-pid-smoke.json``) copied under a second protection.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest

from audit.__main__ import main as audit_main
from audit.config.options import AuditOptions, split_protections
from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.startup import check_options
from audit.config.tiers import get_tier
from audit.parts.protections.build import build_protection
from audit.results.leaderboard import leaderboard
from audit.results.schema import CaseRecord, load_case
from audit.results.summary import audit_answer, summary_table, worst_cases
from audit.run.planner import ProtectionInfo, plan_case
from reports import load_results, render_html
from tests.records import judged

RECORDED = Path(__file__).parent / "data" / "results-pid-smoke.json"


# The recording's cases are judged afresh (``tests.records.judged``: m_c 0.8, m_p 0.3 on a ↓
# metric) with these attacked means: PID passes without an attack and fails under the others.
PID_M_A = {"jpeg-q75": 0.75, "no-attack": 0.3, "zero-sigma": 0.7}


def two_protections(m_a_random: float = 0.7) -> dict:
    """The recorded PID audit (judged as ``PID_M_A`` says) plus the same cases under 'random',
    each judged with the attacked mean ``m_a_random`` (retained ≈ (m_a − 0.8)/(0.3 − 0.8))."""
    data = json.loads(RECORDED.read_text(encoding="utf-8"))
    extra = []
    for case in data["cases"]:
        judged(case, PID_M_A[case["scenario"]["id"]])
        other = copy.deepcopy(case)
        other["case_id"] = "random" + case["case_id"].removeprefix("pid")
        other["protection"] = {**case["protection"], "name": "random", "spec": "random",
                               "params": {"epsilon": 0.05}}
        judged(other, m_a_random)
        extra.append(other)
    data["cases"] += extra
    data["run"]["options"]["protection"] = "pid,random"
    return data


def _interval(case: dict) -> tuple[float, float, float]:
    r = case["metrics"][case["verdict_metric"]]["retained"]
    return r["value"], r["ci_low"], r["ci_high"]


def typed(data: dict) -> list[CaseRecord]:
    """The results file's cases as the summary and the report read them."""
    return [load_case(c) for c in data["cases"]]


@pytest.mark.parametrize(("spec", "items"), [
    ("pid", ("pid",)),
    ("pid,photoguard-encoder,random", ("pid", "photoguard-encoder", "random")),
    (" pid , random", ("pid", "random")),
    ("pkg.mod:make,random", ("pkg.mod:make", "random")),
])
def test_protection_list_is_split_on_commas(spec: str, items: tuple[str, ...]) -> None:
    assert split_protections(spec) == items
    assert AuditOptions(protection=spec).protections == items


def test_a_folder_whose_path_holds_a_comma_stays_one_protection(tmp_path: Path) -> None:
    folder = tmp_path / "protected,v2"
    folder.mkdir()
    assert split_protections(f"dir:{folder}") == (f"dir:{folder}",)
    assert split_protections(f"dir:{tmp_path / 'absent,b'}") == (f"dir:{tmp_path / 'absent'}",
                                                                 "b")


@pytest.mark.parametrize(("spec", "message"), [
    ("pid,,random", "empty item"),
    ("pid,random,", "empty item"),
    ("pid,random,pid", "pid is listed more than once"),
])
def test_empty_or_repeated_items_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_protections(spec)
    with pytest.raises(pytest.UsageError, match=message):
        check_options(AuditOptions(protection=spec))


def test_an_unknown_item_is_named_with_the_registered_protections(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError) as info:
        check_options(AuditOptions(protection="pid,photoguard-encoder,pdi,random",
                                   results_dir=tmp_path))
    message = str(info.value)
    assert message.startswith("--protection=pid,photoguard-encoder,pdi,random: item 'pdi'")
    assert "did you mean 'pid'" in message
    assert "advdm, aspl, aspl+pid, dir" in message and "photoguard-encoder, " in message
    check_options(AuditOptions(protection="pid,photoguard-encoder,random", results_dir=tmp_path))


def test_the_clean_runs_and_matched_controls_are_planned_once_for_every_protection() -> None:
    """The plan's run identities (what the cache keys follow): equal for the clean runs and the
    matched controls of every protection, distinct for the protected runs."""
    tier = get_tier("smoke")
    scenario = load_scenario(CATALOGUE_DIR / "zero-sigma.yaml")
    plans = {name: plan_case(scenario, ProtectionInfo.of(*build_protection(name, tier)), tier, 0)
             for name in ("pid", "photoguard-encoder", "random")}
    for role in ("clean", "control"):
        runs = {name: [r.identity for r in plan.runs if r.role == role]
                for name, plan in plans.items()}
        assert len(runs["pid"]) == tier.replicates
        assert runs["pid"] == runs["photoguard-encoder"] == runs["random"]
    protected = {name: {r.identity for r in plan.runs if r.role == "protected"}
                 for name, plan in plans.items()}
    assert not protected["pid"] & protected["random"]


def test_plan_command_counts_the_runs_shared_across_protections(
        capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(CATALOGUE_DIR / f"{s}.yaml") for s in ("no-attack", "jpeg-q75", "zero-sigma")]
    assert audit_main(["plan", "--protection", "pid", *paths]) == 0
    single = capsys.readouterr().out.splitlines()[-1]
    assert audit_main(["plan", "--protection", "pid,random", *paths]) == 0
    both = capsys.readouterr().out.splitlines()[-1]
    # pid alone: 3 clean + 3 protected + 3 JPEG + 3 zero-σ + 3 matched controls = 15; random adds
    # its own 3 + 3 + 3, and shares the 3 clean runs and the 3 controls.
    assert "15 distinct exploits in all" in single
    assert "2 protections × 3 scenario(s), 24 distinct exploits in all" in both
    assert "30 when each protection is audited on its own" in both


def test_leaderboard_rows_ranked_by_worst_case_with_intervals() -> None:
    data = two_protections()
    board = leaderboard(typed(data))
    assert board.columns == ["jpeg-q75", "no-attack", "zero-sigma"]
    assert [r.protection for r in board.rows] == ["pid", "random"] or \
        [r.protection for r in board.rows] == ["random", "pid"]
    by_name = {r.protection: r for r in board.rows}
    random_row, pid_row = by_name["random"], by_name["pid"]
    random_lows = [_interval(c)[1] for c in data["cases"] if c["protection"]["name"] == "random"]
    assert random_row.worst is not None
    assert random_row.worst.ci_low == pytest.approx(min(random_lows))
    # pid's worst case is its own weakest case, from its records
    pid_lows = [c["metrics"][c["verdict_metric"]]["retained"]["ci_low"] for c in data["cases"]
                if c["protection"]["name"] == "pid" and c["outcome"] == "fail"]
    assert pid_row.worst is not None and pid_row.worst.ci_low == pytest.approx(min(pid_lows))
    assert pid_row.passed == 1 and random_row.passed == 0
    # best worst case first: both rows' worst cases are fails, so the higher lower bound leads
    expected = "pid" if min(pid_lows) > min(random_lows) else "random"
    assert board.rows[0].protection == expected
    # a protection that holds everywhere leads whatever its numbers
    for case in data["cases"]:
        if case["protection"]["name"] == "random":
            case["outcome"] = case["metrics"][case["verdict_metric"]]["outcome"] = "pass"
    assert leaderboard(typed(data)).rows[0].protection == "random"


def test_terminal_summary_has_the_leaderboard_and_one_answer_per_protection() -> None:
    data = two_protections()
    buffer = io.StringIO()
    summary_table(typed(data), AuditOptions(protection="pid,random"), buffer)
    out = buffer.getvalue()
    assert "leaderboard: retained protection" in out
    value, low, high = _interval(data["cases"][-1])
    assert f"{value:.2f} [{low:.2f}, {high:.2f}]" in out
    assert "worst case for random on subject astronaut" in out
    answer = audit_answer(typed(data))
    assert answer.startswith("pid: Does not hold") and " random: Does not hold" in answer
    assert {row["protection"] for row in worst_cases(typed(data))} == {"pid", "random"}


def test_report_has_a_sortable_leaderboard_for_two_protections(tmp_path: Path) -> None:
    data = two_protections()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    html = render_html([load_results(path)])
    assert "Robustness report: " in html and 'id="leaderboard-section"' in html
    board = html[html.index('<table id="leaderboard"'):]
    board = board[:board.index("</table>")]
    assert board.count("<tr>") == 1 + 2  # header + two protections
    assert 'data-sort="num"' in board and 'class="grid sortable"' in board
    value, low, high = _interval(data["cases"][-1])
    assert f"{value:.2f}" in board and f"[{low:.2f}, {high:.2f}]" in board and "o-fail" in board
    assert board.count('class="cell worst') == 2
    # every cell links to its case
    assert board.count('href="#case-') >= len(data["cases"])
    # the matrix names the protection of each row, the summary lists both
    assert "random · jpeg-q75 · astronaut" in html
    assert "2, side by side" in html
    # one protection: no leaderboard (it would repeat the matrix)
    single = json.loads(RECORDED.read_text(encoding="utf-8"))
    path.write_text(json.dumps(single), encoding="utf-8")
    html = render_html([load_results(path)])
    assert 'id="leaderboard"' not in html and "pid · jpeg" not in html
