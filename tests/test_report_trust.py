"""What the report is drawn from is checked, not trusted (issue 20): shards that merge must be
of one audit in everything that bears on the numbers, and a folder is read as its results.json.

Built on ``tests/data/results-pid-smoke.json`` (a recorded smoke audit of PID, see test_report.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reports import ReportInputError, load_results, render_html
from reports.__main__ import main as reports_main

RECORDED = Path(__file__).parent / "data" / "results-pid-smoke.json"


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text(encoding="utf-8"))


def _write(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def shards(recorded: dict) -> tuple[dict, dict]:
    first, second = copy.deepcopy(recorded), copy.deepcopy(recorded)
    first["cases"], second["cases"] = first["cases"][:2], second["cases"][2:]
    second["run"]["run_id"] = "machine-b"
    return first, second


def merge_error(tmp_path: Path, first: dict, second: dict) -> str:
    a, b = _write(tmp_path / "a", first), _write(tmp_path / "b", second)
    with pytest.raises(ReportInputError) as info:
        render_html([load_results(a), load_results(b)])
    return str(info.value)


def test_shards_of_one_audit_still_merge(tmp_path: Path, recorded: dict) -> None:
    first, second = shards(recorded)
    # where a shard ran does not bear on its numbers
    second["run"]["options"]["results_dir"] = "/elsewhere"
    second["run"]["options"]["device"] = "cpu"
    html = render_html([load_results(_write(tmp_path / "a", first)),
                        load_results(_write(tmp_path / "b", second))])
    assert all(c["case_id"] in html for c in recorded["cases"])


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        # The case: the merged header said "seed 7" while one shard ran seed 0.
        (lambda run, cases: run["options"].update(seed=7), ["option seed 7 differs from", "(0)"]),
        (lambda run, cases: run.update(toolkit_version="9.9.9"),
         ["toolkit version '9.9.9' differs", "('0.1.0')"]),
        (lambda run, cases: run["tier_settings"].update(finetune_steps=5),
         ["tier settings", "differs"]),
        (lambda run, cases: run["options"].update(overrides={"dreambooth": {"steps": 5}}),
         ["option overrides"]),
        (lambda run, cases: run["options"].update(epsilon=0.03),
         ["option epsilon 0.03 differs", "(None)"]),
        (lambda run, cases: [c["model"].update(fingerprint="f" * 64) for c in cases],
         ["model fingerprint (tiny) 'ffff", "differs"]),
    ],
)
def test_merge_refuses_shards_whose_numbers_are_not_comparable(tmp_path: Path, recorded: dict, edit,
                                                               fragments: list[str]) -> None:
    first, second = shards(recorded)
    edit(second["run"], second["cases"])
    message = merge_error(tmp_path, first, second)
    for fragment in fragments:
        assert fragment in message, message
    assert str(tmp_path / "b"
               / "results.json") in message and str(tmp_path / "a" / "results.json") in message


def test_merge_refuses_one_scenario_defined_two_ways(tmp_path: Path, recorded: dict) -> None:
    """Two shards ran the same scenario on different subjects, with different definitions."""
    first, second = shards(recorded)
    other = copy.deepcopy(first["cases"][0])
    other["case_id"] = other["case_id"].replace("astronaut", "bob")
    other["subject"] = {**other["subject"], "name": "bob", "content_hash": "b0b"}
    other["scenario"]["definition_hash"] = "0123456789abcdef"
    second["cases"].append(other)
    message = merge_error(tmp_path, first, second)
    scenario = first["cases"][0]["scenario"]["id"]
    hashes = "'0123456789abcdef' differs"
    assert f"definition hash of scenario '{scenario}' {hashes}" in message, message


def test_merge_refuses_one_subject_with_other_images(tmp_path: Path, recorded: dict) -> None:
    first, second = shards(recorded)
    for case in second["cases"]:
        case["subject"]["content_hash"] = "other-images"
    message = merge_error(tmp_path, first, second)
    assert "content hash of subject 'astronaut' 'other-images' differs" in message


def test_render_takes_a_results_folder(tmp_path: Path, recorded: dict,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`reports render DIR` said "no such file" for an existing folder."""
    folder = tmp_path / "audit-results"
    _write(folder, recorded)
    out = tmp_path / "r.html"
    assert reports_main(["render", str(folder), "-o", str(out)]) == 0
    assert out.is_file() and recorded["cases"][0]["case_id"] in out.read_text(encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert reports_main(["render", str(empty), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "a folder without a results.json" in err and "no such file" not in err


# -- 4. an outcome is re-derived from the recorded numbers with the engine's decide() -------------
def engine_record(
        tmp_path: Path, clean: float, protected: float, attacked: float, seed: int = 0) -> dict:
    """A results file whose one case was judged by the engine itself (CaseJudge.judge), on
    synthetic metric values: K = 3 replicates of 8 images, the verdict metric subject_similarity."""
    import random

    from audit.config.options import AuditOptions
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.judge.case import CaseJudge
    from audit.results.files import SCHEMA, SCHEMA_VERSION
    from audit.results.provenance import run_provenance
    from audit.results.records import new_record, plan_record, scenario_record
    from audit.run.session import AuditSession

    options = AuditOptions(protection="pid", results_dir=tmp_path / "res", seed=seed)
    session = AuditSession(options)
    scenario = load_scenario(CATALOGUE_DIR / "jpeg-q75.yaml")
    plan = session.plan(scenario)
    rng = random.Random(seed)
    level = {"clean": clean, "protected": protected, "attacked": attacked}
    values = {"subject_similarity": {}}
    for run in plan.unique_runs():
        mean = level.get(run.role, clean) + rng.gauss(0, 0.01)
        values["subject_similarity"][run.identity] = {
            "values": [mean + rng.gauss(0, 0.02) for _ in range(8)], "direction": "down",
            "implementation": "synthetic", "level": "image"}
    record = new_record("pid-jpeg-q75-s", options, scenario_record(scenario), "s", "smoke")
    record.plan = plan_record(plan)
    record.apply(CaseJudge(session.tier, options.seed).judge(plan, scenario, values,
                                                             "subject_similarity"))
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "run": {**run_provenance(options), "run_id": "synthetic"},
            "summary": {"cases": 1, "outcomes": {record.outcome: 1}},
            "cases": [json.loads(json.dumps(record.dump(), allow_nan=True))]}


def rendered(tmp_path: Path, data: dict) -> str:
    return render_html([load_results(_write(tmp_path, data))])


def test_an_edited_outcome_is_recomputed_and_marked(tmp_path: Path) -> None:
    """Issue 20, item 4: outcome "fail" edited to "pass" made the report say "Holds in all 1
    scenarios"."""
    data = engine_record(tmp_path / "engine", clean=0.48, protected=0.30, attacked=0.47)
    (case,) = data["cases"]
    # the attack restored the exploit: a clear fail
    assert case["outcome"] == "fail", case["reason"]
    honest = rendered(tmp_path / "honest", data)
    assert ("disagree with their own numbers" not in honest
            and "Does not hold against 1 of 1" in honest)
    case["outcome"] = "pass"
    edited = rendered(tmp_path / "edited", data)
    assert "Holds in all 1 scenarios" not in edited
    assert ("1 case record(s) disagree with their own numbers (pid-jpeg-q75-s: recorded "
            "&#39;pass&#39;, its numbers give &#39;fail&#39;)" in edited)
    assert ("RECORD DISAGREES WITH ITS NUMBERS" in edited
            and "Does not hold against 1 of 1" in edited)


def test_edited_estimates_are_caught_even_with_the_outcome_edited_to_match(tmp_path: Path) -> None:
    data = engine_record(tmp_path / "engine", clean=0.48, protected=0.30, attacked=0.47)
    (case,) = data["cases"]
    entry = case["metrics"][case["verdict_metric"]]
    entry["retained"] = {**entry["retained"], "value": 0.95, "ci_low": 0.9, "ci_high": 1.0}
    entry["outcome"] = case["outcome"] = "pass"
    html = rendered(tmp_path / "edited", data)
    assert "Holds in all 1 scenarios" not in html
    assert "the recorded retained differ from what those values give" in html


@pytest.mark.parametrize(("levels", "outcome"), [((0.48, 0.30, 0.31), "pass"),
                                                 ((0.48, 0.48, 0.48), "no effect at baseline")])
def test_records_the_engine_wrote_are_left_as_they_are(
        tmp_path: Path, levels: tuple, outcome: str) -> None:
    from reports.verify import verify_outcomes

    data = engine_record(tmp_path / "engine", *levels, seed=3)
    assert data["cases"][0]["outcome"] == outcome, data["cases"][0]["reason"]
    file = load_results(_write(tmp_path / "r", data))
    assert verify_outcomes(file) == [] and file.cases[0].outcome == outcome


def test_a_pass_with_no_verdict_behind_it_is_marked(tmp_path: Path) -> None:
    data = engine_record(tmp_path / "engine", clean=0.48, protected=0.30, attacked=0.47)
    (case,) = data["cases"]
    case["metrics"] = {}
    case["outcome"] = "pass"
    html = rendered(tmp_path / "edited", data)
    assert ("Holds in all 1 scenarios" not in html
            and "no recorded verdict values support it" in html)
