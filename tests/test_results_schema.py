"""The typed results schema (audit/results/schema.py): what the engine writes reads back equal,
a record missing a field is refused naming it, an older results file is refused with its fix."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audit.results.files import ResultsWriter
from audit.results.schema import SCHEMA_VERSION, CaseRecord, Estimate, RunFile, load_case
from reports import ReportInputError, load_results
from tests.records import case_record, estimate

RECORDED = Path(__file__).parent / "data" / "results-pid-smoke.json"


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text(encoding="utf-8"))


def _json(data: Any) -> Any:
    """``data`` through JSON as the results files write it (NaN as NaN), compared by value."""
    return json.loads(json.dumps(data, allow_nan=True), parse_constant=lambda c: c)


def test_a_recorded_run_reads_back_equal_to_its_json(recorded: dict) -> None:
    """Every field of a real audit's results file is in the schema, with its type: validated and
    dumped again, the file is what was read (no field added, dropped, renamed or converted —
    an int stays an int)."""
    typed = RunFile.model_validate(copy.deepcopy(recorded))
    assert _json(typed.dump()) == _json(recorded)
    case = typed.cases[0]
    assert isinstance(case.verdict_entry.m_c, Estimate) and case.plan is not None
    assert case.plan.replicates == 3 and case.deciding_metric == "subject_similarity"


def test_a_case_written_by_the_writer_reads_back_equal(tmp_path: Path, recorded: dict) -> None:
    writer = ResultsWriter(tmp_path, "run-1")
    record = load_case(copy.deepcopy(recorded["cases"][2]))
    writer.write_case(record)
    (back,) = writer.cases()
    assert back == record and _json(back.dump()) == _json(recorded["cases"][2])
    path = writer.aggregate({**recorded["run"], "interrupted": False})
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["schema_version"] == SCHEMA_VERSION == 4
    assert written["summary"] == {"cases": 1, "outcomes": {record.outcome: 1}}
    assert load_results(path).cases == [record]


def test_fields_that_do_not_apply_are_left_out_not_written_as_null() -> None:
    """A skipped case has no plan or model: the record leaves them out, as before the schema;
    a field the engine sets to None (no error) is written as null."""
    record = case_record("pid-x-s", "skipped")
    data = record.dump()
    assert "plan" not in data and "model" not in data and "exploiter_best" not in data
    assert data["error"] is None
    record.exploiter_best = None  # a one-variant case: set, so written
    assert record.dump()["exploiter_best"] is None


@settings(max_examples=50, deadline=None)
@given(value=st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True)),
       n=st.integers(1, 50))
def test_numbers_keep_their_type_and_value_through_a_file(value: float, n: int) -> None:
    """An estimate's numbers come back as written: ints as ints, floats (NaN, ±inf included) as
    the same floats."""
    entry = {"m_c": {**estimate(0.5), "value": value, "n_replicates": n}}
    record = case_record("c", "fail", metrics={"m": entry})
    back = load_case(json.loads(json.dumps(record.dump(), allow_nan=True)))
    got = back.metrics["m"].m_c
    assert got is not None and type(got.value) is type(value) and got.n_replicates == n
    assert got.value == value or (math.isnan(value) and math.isnan(got.value))


@pytest.mark.parametrize(("path", "named"), [
    (("outcome",), "outcome"),
    (("scenario", "id"), "scenario.id"),
    (("metrics", "subject_similarity", "m_c", "ci_high"), "metrics.subject_similarity.m_c.ci_high"),
    (("plan", "seeds"), "plan.seeds"),
])
def test_a_record_missing_a_required_field_is_refused_naming_it(
        recorded: dict, path: tuple[str, ...], named: str) -> None:
    data = copy.deepcopy(recorded["cases"][0])
    holder = data
    for key in path[:-1]:
        holder = holder[key]
    del holder[path[-1]]
    with pytest.raises(ValidationError) as info:
        load_case(data)
    (error,) = info.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == named and error["type"] == "missing"


def test_an_unknown_field_or_outcome_is_refused(recorded: dict) -> None:
    data = copy.deepcopy(recorded["cases"][0])
    data["outcom"] = "pass"  # a misspelt field never vanishes silently
    with pytest.raises(ValidationError, match="outcom"):
        load_case(data)
    with pytest.raises(ValidationError, match="outcome"):
        case_record("c", "passed")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_results_file_is_refused_with_the_fix(
        tmp_path: Path, recorded: dict, version: int) -> None:
    data = {**recorded, "schema_version": version}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ReportInputError) as info:
        load_results(path)
    message = str(info.value)
    assert str(path) in message and f"schema_version {version} is not supported" in message
    assert "re-run the audit with this version" in message
    assert "pip install protection-audit==0.1.0" in message  # or render with the one that wrote it
    with pytest.raises(ValidationError, match="schema_version"):
        RunFile.model_validate(data)


def test_a_case_record_of_the_engine_reads_in_the_summary(recorded: dict) -> None:
    """The summary reads typed records: the worst case per subject from the deciding metric."""
    from audit.results.summary import worst_cases

    cases = [load_case(c) for c in recorded["cases"]]
    (row,) = worst_cases(cases)
    assert row["subject"] == "astronaut" and row["cases"] == 3
    assert isinstance(cases[0], CaseRecord)
