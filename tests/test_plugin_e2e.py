"""End to end: the real plugin, run by pytest in a subprocess, on the tiny model at reduced size.

Uses ``pytester`` so that collection, parametrization, exit status, ``-k``, ``--lf`` and
``--junitxml`` are checked as a user would see them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from audit.scenario import CATALOGUE_DIR

pytest_plugins = ["pytester"]

# Small enough for the test budget, large enough that every stage really runs.
REDUCED = [
    "--audit-set=pgd_steps=8",
    "--audit-set=finetune_steps=6",
    "--audit-set=images_per_prompt=2",
    "--audit-set=inference_steps=3",
    "--audit-set=bootstrap_resamples=200",
]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=600)


def load_results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def test_full_catalogue_runs_records_and_reruns_from_cache(pytester: pytest.Pytester) -> None:
    results = pytester.path / "res"
    junit = pytester.path / "junit.xml"
    start = time.perf_counter()
    first = run(pytester, "--protection=pid", f"--results-dir={results}", f"--junitxml={junit}", "-v", *REDUCED)
    first_seconds = time.perf_counter() - start
    out = first.stdout.str()
    # One item per scenario file, named by protection, scenario and subject.
    for scenario in ("jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma"):
        assert f"test_scenario[pid-{scenario}-astronaut]" in out
    assert "protection audit" in out and "results JSON:" in out
    # The HTML report is written at the end of every audit, inside the results folder.
    assert "HTML report:" in out and (results / "report.html").is_file()
    report = (results / "report.html").read_text(encoding="utf-8")
    assert "test_scenario" not in report and "pid-zero-sigma-astronaut" in report and 'id="matrix"' in report
    assert "exploit: DreamBooth fine-tune" in out  # progress of long stages is shown
    data = load_results(results)
    assert data["schema_version"] == 1 and data["summary"]["cases"] == 4
    cases = {c["scenario"]["id"]: c for c in data["cases"]}
    outcomes = {c["outcome"] for c in cases.values()}
    assert outcomes <= {"pass", "fail", "no effect at baseline"}, [c["reason"] for c in cases.values()]
    # Exit status follows pytest: 0 only if every case passed.
    assert (first.ret == 0) == (outcomes == {"pass"})
    assert junit.is_file() and "test_scenario" in junit.read_text()
    pid = cases["no-attack"]
    assert pid["protection"]["epsilon"] == 0.05 and pid["protection_run"]["linf_255"] <= 12
    assert pid["protection_run"]["objective_final_8bit"] > 0
    assert pid["model"]["id"] == "tiny" and len(pid["model"]["fingerprint"]) == 64
    assert set(pid["metrics"]) >= {"identity_similarity", "face_detection_failure_rate", "brisque"}
    assert len(cases["prompt-mismatch"]["variants"]) == 3
    assert cases["zero-sigma"]["exploits"]["attacked"][0]["finetune"]["posterior_sigma"] == "zero"
    assert any("non-standard run" in f for f in pid["flags"])
    assert "--audit-set=pgd_steps=8" in data["run"]["reproduce"]
    # no-attack: the attacked exploit *is* the protected one (same cache entry).
    assert pid["exploits"]["attacked"][0]["cache_key"] == pid["exploits"]["protected"]["cache_key"]
    # The protected baseline is shared: every case used the same clean/protected exploit.
    assert len({c["exploits"]["protected"]["cache_key"] for c in cases.values()}) == 1

    start = time.perf_counter()
    second = run(pytester, "--protection=pid", f"--results-dir={results}", *REDUCED)
    second_seconds = time.perf_counter() - start
    rerun = load_results(results)
    assert second.ret == first.ret
    for case in rerun["cases"]:
        assert case["cache"]["misses"] == [], case["cache"]
        assert "exploit" in case["cache"]["hits"]
    assert {c["case_id"]: c["outcome"] for c in rerun["cases"]} == {c["case_id"]: c["outcome"] for c in data["cases"]}
    assert second_seconds < first_seconds


def _one_scenario_dir(pytester: pytest.Pytester, *extra_files: tuple[str, str]) -> Path:
    folder = pytester.path / "scen"
    folder.mkdir(exist_ok=True)
    shutil.copy(CATALOGUE_DIR / "no-attack.yaml", folder / "no-attack.yaml")
    for name, text in extra_files:
        (folder / name).write_text(text)
    return folder


def test_bad_scenario_file_is_an_error_case_and_others_still_run_under_xdist(pytester: pytest.Pytester) -> None:
    folder = _one_scenario_dir(pytester, ("typo.yaml", "id: typo\nversion: 1\ntitle: t\nwhy: w\nsource: s\nattack:\n  - jpg: {quality: 75}\n"))
    results = pytester.path / "res"
    result = run(pytester, "-n", "2", "--protection=random", f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown scenario part 'jpg'*did you mean 'jpeg'*", "*results JSON:*"])
    cases = {c["scenario"]["id"]: c for c in load_results(results)["cases"]}
    assert cases["typo"]["outcome"] == "error" and "typo.yaml" in cases["typo"]["reason"]
    # The report is written also when cases errored, and shows the error.
    assert "unknown scenario part" in (results / "report.html").read_text(encoding="utf-8")
    assert cases["no-attack"]["outcome"] in {"pass", "fail", "no effect at baseline"}


def test_k_selects_and_lf_reruns_failures(pytester: pytest.Pytester) -> None:
    folder = _one_scenario_dir(pytester, ("broken.yaml", "id: broken\nversion: one\n"))
    results = pytester.path / "res"
    first = run(pytester, "--cache-clear", "--protection=none", f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    assert first.ret != 0
    first.assert_outcomes(failed=2)  # broken file (error) and 'none' has no effect at baseline
    only = run(pytester, "--protection=none", f"--scenarios={folder}", f"--results-dir={results}", "-k", "broken", *REDUCED)
    only.assert_outcomes(failed=1, deselected=1)
    last_failed = run(pytester, "--lf", "--protection=none", f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    last_failed.assert_outcomes(failed=2)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--protection=pdi"], "unknown protection (did you mean 'pid'?)"),
        (["--protection=pid", "--model=./no/such/model"], "does not exist"),
        (["--protection=pid", "--data=EMPTY"], "EMPTY"),
    ],
)
def test_bad_options_give_clear_errors_per_case(pytester: pytest.Pytester, args: list[str], expected: str) -> None:
    folder = _one_scenario_dir(pytester)
    empty = pytester.path / "empty"
    empty.mkdir()
    args = [a.replace("EMPTY", str(empty)) for a in args]
    expected = expected.replace("EMPTY", str(empty))
    results = pytester.path / "res"
    result = run(pytester, *args, f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    assert result.ret != 0
    assert expected in result.stdout.str()
    (case,) = load_results(results)["cases"]
    assert case["outcome"] == "error" and expected in case["reason"]


LEAKY = '''
import torch
from audit.images import to_uint8
from audit.protections import Protection, ProtectionOutput


class Leaky(Protection):
    """Claims ε = 4/255 but adds 10 levels."""

    name = "leaky"

    def protect(self, images, ctx):
        return ProtectionOutput((to_uint8(images).int() + 10).clamp(0, 255).to(torch.uint8))


def make():
    return Leaky(epsilon=4 / 255)
'''


def test_external_protection_over_budget_fails_with_measured_excess(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(leaky=LEAKY)
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=leaky:make", f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    assert result.ret != 0
    (case,) = load_results(results)["cases"]
    assert case["outcome"] == "fail" and "exceeds its budget" in case["reason"]
    assert "10/255" in case["reason"] and "excess" in case["reason"]
    assert "protection exceeds its budget" in case["flags"]


def test_a_bad_subject_errors_alone_and_other_subjects_still_run(pytester: pytest.Pytester) -> None:
    import numpy as np
    from PIL import Image

    data = pytester.path / "data"
    (data / "good").mkdir(parents=True)
    (data / "bad").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data / "good" / f"{i}.png")
    (data / "bad" / "broken.png").write_bytes(b"not a png at all")
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=random", f"--data={data}", f"--scenarios={folder}", f"--results-dir={results}", "-v", *REDUCED)
    assert "test_scenario[random-no-attack-bad]" in result.stdout.str()
    cases = {c["subject"]["name"]: c for c in load_results(results)["cases"]}
    assert cases["bad"]["outcome"] == "error" and "broken.png" in cases["bad"]["reason"]
    assert cases["good"]["outcome"] in {"pass", "fail", "no effect at baseline"}
