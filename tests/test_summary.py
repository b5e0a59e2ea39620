"""The terminal summary, worst case per subject, case ids and stage progress lines."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from audit.plugin import AuditCase, _unique_ids
from audit.results.files import case_file_stem
from audit.results.schema import CaseRecord
from audit.results.summary import audit_answer, summary_table, worst_cases
from audit.run.progress import Progress
from tests.records import case_record, estimate


def case(case_id: str, scenario: str, subject: str, outcome: str,
         retained: float | None) -> CaseRecord:
    entry = {"retained": estimate(retained, retained - 0.3, retained + 0.3)} if (
        retained is not None) else {}
    return case_record(case_id, outcome, scenario, subject, verdict_metric="m",
                       metrics={"m": entry}, plan=PLAN)


PLAN = {"replicates": 3, "seeds": [0, 1, 2], "standard_exploit": {"dreambooth": {}},
        "variants": [], "runs": [], "distinct_exploits": 3, "notes": [], "text": ""}


def test_rich_markup_in_case_ids_is_printed_as_text() -> None:
    buffer = io.StringIO()
    options = SimpleNamespace(protection="pid", model="tiny", tier="smoke", seed=0)
    summary_table([case("pid-[bold]x[/bold]-alice", "[bold]x[/bold]", "alice", "pass", 0.9)],
                  options, buffer)
    text = buffer.getvalue()
    assert "pid-[bold]x[/bold]-alice" in text


def test_worst_case_per_subject_and_the_audit_answer() -> None:
    cases = [
        case("a", "jpeg", "alice", "fail", 0.2), case("b", "no-attack", "alice", "pass", 1.0),
        case("c", "jpeg", "bob", "pass", 0.8), case("d", "zero", "bob", "pass", 0.7),
        case("e", "jpeg", "carol", "no effect at baseline", None),
    ]
    rows = {r["subject"]: r for r in worst_cases(cases)}
    assert rows["alice"]["scenario"] == "jpeg" and rows["alice"]["retained"]["value"] == 0.2
    assert rows["bob"]["scenario"] == "zero"
    assert rows["carol"]["retained"] is None and rows["carol"]["outcome"] == "no effect at baseline"
    assert audit_answer(cases) == "Does not hold: breaks under jpeg."
    assert audit_answer(cases[1:4]).startswith("Holds against every scenario run (3 case(s))")
    assert "Interrupted: 2 selected case(s) did not run" in audit_answer(
        cases[1:4], interrupted=True, not_run=2)
    assert audit_answer([case("e", "jpeg", "carol", "no effect at baseline", None)]).startswith(
        "No protective effect")


def test_colliding_case_ids_are_disambiguated_stably() -> None:
    cases = [(AuditCase("pid-a-b-c", "scen/a-b.yaml", None, "c"), []),
             (AuditCase("pid-a-b-c", "scen/a.yaml", None, "b-c"), []),
             (AuditCase("pid-a-x", "scen/a.yaml", None, "x"), [])]
    ids = [c.case_id for c, _ in _unique_ids(cases)]
    assert len(set(ids)) == 3 and ids[2] == "pid-a-x"
    assert ids == [c.case_id for c, _ in _unique_ids(cases)]  # stable across collections (xdist)


def test_case_files_of_ids_that_sanitise_alike_differ() -> None:
    assert case_file_stem("pid-no-attack-alice") == "pid-no-attack-alice"
    assert case_file_stem("pid-no-attack-alice 1") != case_file_stem("pid-no-attack-alice_1")


def test_a_failed_stage_does_not_print_done() -> None:
    lines: list[str] = []
    progress = Progress(lines.append)
    with pytest.raises(ValueError), progress.stage("exploit: fine-tune"):
        raise ValueError("boom")
    assert not any("done" in line for line in lines)
    assert any("failed (ValueError)" in line for line in lines)
    assert progress.take_timings()[0]["status"] == "failed (ValueError)"
