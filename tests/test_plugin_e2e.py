"""End to end: the real plugin, run by pytest in a subprocess, on the tiny model at reduced size.

Uses ``pytester`` so that collection, parametrization, exit status, ``-k``, ``--lf``,
``--junitxml`` and usage errors are checked as a user would see them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.config.scenario import CATALOGUE_DIR

pytest_plugins = ["pytester"]

# Small enough for the test budget, large enough that every stage really runs, twice.
REDUCED = [
    "--replicates=2",
    "--audit-set=pid.steps=8",
    "--audit-set=dreambooth.steps=6",
    "--audit-set=generation.images_per_prompt=2",
    "--audit-set=generation.steps=3",
]


# Every outcome that is a verdict (not an error). At 6 fine-tune steps the exploit may not learn
# the subject at all, which the verdict then says instead of passing or failing the protection.
VERDICTS = {"pass", "fail", "no effect at baseline", "no meaningful effect at baseline",
            "exploit did not learn the subject"}


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=900)


def load_results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


# The end-to-end run's catalogue: the four scenarios whose kinds cover every role (baseline,
# attack, changed prompt with variants, changed posterior with a matched control). The other
# bundled scenarios are checked by `python -m audit validate`/`plan` tests and their own tests.
E2E_SCENARIOS = ("jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma")


def e2e_catalogue(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in E2E_SCENARIOS:
        shutil.copy(CATALOGUE_DIR / f"{name}.yaml", folder / f"{name}.yaml")
    return folder


def test_full_catalogue_runs_records_and_reruns_from_cache(pytester: pytest.Pytester) -> None:
    results = pytester.path / "res"
    junit = pytester.path / "junit.xml"
    scenarios = e2e_catalogue(pytester.path / "catalogue")
    start = time.perf_counter()
    first = run(pytester, "--protection=pid", "--full-catalogue", f"--scenarios={scenarios}",
                f"--results-dir={results}",
                f"--junitxml={junit}", "-v", *REDUCED)
    first_seconds = time.perf_counter() - start
    out = first.stdout.str()
    for scenario in ("jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma"):
        assert f"test_scenario[pid-{scenario}-astronaut]" in out
    assert "protection audit" in out and "results JSON:" in out and "answer:" in out
    assert "worst case for subject astronaut" in out
    # This run's own report, in its run folder; the results folder's report.html is a copy.
    assert "HTML report:" in out
    data = load_results(results)
    run_dir = results / "runs" / data["run"]["run_id"]
    assert (run_dir / "report.html").is_file() and (results
                                                    / "report.html").read_bytes() == (
                                                        run_dir / "report.html").read_bytes()
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert ("test_scenario" not in report and "pid-zero-sigma-astronaut" in report
            and 'id="matrix"' in report)
    assert "Replicates of the verdict metric" in report and "matched control" in report
    # Progress of long stages is shown: fine-tunes run in worker processes on this 2-core CPU.
    assert "worker processes" in out or "exploit: DreamBooth fine-tune" in out
    assert data["schema_version"] == 4 and data["summary"]["cases"] == 4
    cases = {c["scenario"]["id"]: c for c in data["cases"]}
    outcomes = {c["outcome"] for c in cases.values()}
    assert outcomes <= VERDICTS, [c["reason"] for c in cases.values()]
    assert (first.ret == 0) == (outcomes == {"pass"})
    assert junit.is_file() and "test_scenario" in junit.read_text()
    pid = cases["no-attack"]
    assert pid["protection"]["epsilon"] == 0.05 and pid["protection_run"]["linf_255"] <= 12
    # PID is crafted anew for each replicate (its init is random)
    assert len(pid["protection_runs"]) == 2
    assert pid["protection_runs"][0]["seed"] != pid["protection_runs"][1]["seed"]
    assert pid["protection_run"]["objective_final_8bit"] > 0
    assert pid["model"]["id"] == "tiny" and len(pid["model"]["fingerprint"]) == 64
    assert set(pid["metrics"]) >= {"subject_similarity", "dlib_identity_similarity",
                                   "mtcnn_detection_failure_rate", "brisque",
                                   "fds", "ism", "fdfr", "ims"}
    verdict = pid["metrics"][pid["verdict_metric"]]
    assert verdict["effect"]["n_replicates"] == 2 and len(verdict["replicates"]["clean"]) == 2
    assert pid["plan"]["replicates"] == 2 and len(pid["plan"]["seeds"]) == 2
    # no-attack: the attacked exploit *is* the protected one (same run, same cache entry).
    exploits = pid["exploits"]
    assert exploits["attacked[0] r0"]["cache_key"] == exploits["protected r0"]["cache_key"]
    assert pid["exploits"]["clean r0"]["weights_key"] != pid["exploits"]["clean r1"]["weights_key"]
    # Scenarios that change the exploit have matched controls; the others do not.
    zero = cases["zero-sigma"]
    assert zero["exploits"]["attacked[0] r0"]["finetune"]["posterior"]["sigma"] == "zero"
    assert zero["exploits"]["control[0] r1"]["finetune"]["posterior"]["sigma"] == "zero"
    assert "control" in zero["metrics"][zero["verdict_metric"]]["replicates"]
    assert not any(k.startswith("control") for k in cases["jpeg-q75"]["exploits"])
    assert len(cases["prompt-mismatch"]["variants"]) == 3
    assert any("non-standard run" in f for f in pid["flags"])
    assert ("--audit-set=dreambooth.steps=6" in data["run"]["reproduce"]
            and "--replicates=2" in data["run"]["reproduce"])
    # The clean and protected replicates are shared by every case.
    assert len({c["exploits"]["protected r1"]["cache_key"] for c in cases.values()}) == 1
    # So is the untrained reference: generated once per replicate seed, for the whole audit.
    assert sum(c["cache"]["misses"].count("untrained") for c in cases.values()) == 2
    assert all(len(c["untrained"]) == 2 and "m_u" in c["metrics"][c["verdict_metric"]]
               for c in cases.values())
    assert "m_u · m_c · m_p · m_a" in report and "learned margin" in report

    start = time.perf_counter()
    second = run(pytester, "--protection=pid", "--full-catalogue", f"--scenarios={scenarios}",
                 f"--results-dir={results}", *REDUCED)
    second_seconds = time.perf_counter() - start
    rerun = load_results(results)
    assert second.ret == first.ret and rerun["run"]["run_id"] != data["run"]["run_id"]
    for case in rerun["cases"]:
        assert case["cache"]["misses"] == [], case["cache"]
        assert "generate" in case["cache"]["hits"]
    assert {c["case_id"]: c["outcome"]
            for c in rerun["cases"]} == {c["case_id"]: c["outcome"] for c in data["cases"]}
    assert second_seconds < first_seconds
    # The first run's printed report still shows the first run (its own file, its own artifacts).
    assert (run_dir / "report.html").read_text(encoding="utf-8") == report


def _one_scenario_dir(pytester: pytest.Pytester, *extra_files: tuple[str, str]) -> Path:
    folder = pytester.path / "scen"
    folder.mkdir(exist_ok=True)
    shutil.copy(CATALOGUE_DIR / "no-attack.yaml", folder / "no-attack.yaml")
    for name, text in extra_files:
        (folder / name).write_text(text)
    return folder


def test_bad_scenario_file_is_an_error_case_and_others_still_run_under_xdist(
        pytester: pytest.Pytester) -> None:
    folder = _one_scenario_dir(pytester, ("typo.yaml", "id: typo\nversion: 1\ntitle: t\nwhy: "
                                                       "w\nsource: s\nattack:\n  - jpg: {quality: "
                                                       "75}\n"))
    results = pytester.path / "res"
    result = run(pytester, "-n", "2", "--protection=random", f"--scenarios={folder}",
                 f"--results-dir={results}", *REDUCED)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*unknown transform 'jpg'*did you mean 'jpeg'*", "*results JSON:*"])
    cases = {c["scenario"]["id"]: c for c in load_results(results)["cases"]}
    assert cases["typo"]["outcome"] == "error" and "typo.yaml" in cases["typo"]["reason"]
    assert "unknown transform" in (results / "report.html").read_text(encoding="utf-8")
    assert cases["no-attack"]["outcome"] in VERDICTS


def test_k_selects_and_lf_reruns_failures(pytester: pytest.Pytester) -> None:
    folder = _one_scenario_dir(pytester, ("broken.yaml", "id: broken\nversion: one\n"))
    results = pytester.path / "res"
    first = run(pytester, "--cache-clear", "--protection=none", f"--scenarios={folder}",
                f"--results-dir={results}", *REDUCED)
    assert first.ret != 0
    first.assert_outcomes(failed=2)  # broken file (error) and 'none' has no effect at baseline
    only = run(pytester, "--protection=none", f"--scenarios={folder}", f"--results-dir={results}",
               "-k", "broken", *REDUCED)
    only.assert_outcomes(failed=1, deselected=1)
    last_failed = run(pytester, "--lf", "--protection=none", f"--scenarios={folder}",
                      f"--results-dir={results}", *REDUCED)
    last_failed.assert_outcomes(failed=2)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--protection=pdi"], "unknown protection (did you mean 'pid'?)"),
        (["--protection=no.such.module:factory"], "module 'no.such.module' cannot be imported"),
        (["--protection=pid", "--model=./no/such/model"], "does not exist"),
        (["--protection=pid", "--data=EMPTY"], "EMPTY"),
        (["--protection=pid", "--seed=-1"], "--seed=-1"),
        (["--protection=pid", "--audit-set=finetune_steps=-5"], "greater than or equal to 1"),
        (["--protection=pid", "--tier=paper"], "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        (["--protection=pid", "--scenarios=EMPTY", "-k", "jpeg"], "no scenario files"),
    ],
)
def test_configuration_errors_stop_at_start_with_a_usage_error(pytester: pytest.Pytester,
                                                               args: list[str],
                                                               expected: str) -> None:
    empty = pytester.path / "empty"
    empty.mkdir()
    args = [a.replace("EMPTY", str(empty)) for a in args]
    expected = expected.replace("EMPTY", str(empty))
    results = pytester.path / "res"
    start = time.perf_counter()
    # the user's setting comes last and wins
    result = run(pytester, f"--results-dir={results}", *REDUCED, *args)
    # pytest's usage error, not a failed case
    assert result.ret == 4, result.stdout.str() + result.stderr.str()
    assert expected in result.stderr.str() + result.stdout.str()
    assert not (results / "runs").exists()  # nothing ran
    assert time.perf_counter() - start < 120


LEAKY = '''
import torch
from audit.data.images import to_uint8
from audit.parts.protections.base import Protection, ProtectionOutput


class Leaky(Protection):
    """Claims ε = 4/255 but adds 10 levels."""

    name = "leaky"
    random = False

    def protect(self, images, ctx):
        return ProtectionOutput((to_uint8(images).int() + 10).clamp(0, 255).to(torch.uint8))


def make():
    return Leaky(epsilon=4 / 255)


class Stop(Leaky):
    """Interrupts the audit as Ctrl-C would, on the second subject."""

    name = "stop"

    def protect(self, images, ctx):
        if ctx.subject.name == "b":
            raise KeyboardInterrupt
        return ProtectionOutput(to_uint8(images))


def stop():
    return Stop(epsilon=0.0)
'''


def test_external_protection_over_budget_fails_with_measured_excess(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(leaky=LEAKY)
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=leaky:make", f"--scenarios={folder}",
                 f"--results-dir={results}", *REDUCED)
    assert result.ret == 1
    (case,) = load_results(results)["cases"]
    assert case["outcome"] == "fail" and "exceeds its budget" in case["reason"]
    assert "10/255" in case["reason"] and "excess" in case["reason"]
    assert "protection exceeds its budget" in case["flags"]
    # A budget violation is its own answer, not "breaks under no-attack" (issue 20), and the record
    # names the budget judged: the factory's own, as no --epsilon was given.
    assert case["budget_exceeded"] is True and "answer: Exceeds its budget" in result.stdout.str()
    assert "breaks under" not in result.stdout.str()
    assert case["protection"]["budget"]["source"].startswith("declared by the protection "
                                                             "(Leaky.epsilon)")


def _subjects(root: Path, names: list[str], n: int = 2, size: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")
    return root


def test_a_bad_subject_errors_alone_and_other_subjects_still_run(pytester: pytest.Pytester) -> None:
    data = _subjects(pytester.path / "data", ["good"])
    (data / "bad").mkdir()
    (data / "bad" / "broken.png").write_bytes(b"not a png at all")
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=random", f"--data={data}", f"--scenarios={folder}",
                 f"--results-dir={results}", "-v", *REDUCED)
    assert "test_scenario[random-no-attack-bad]" in result.stdout.str()
    cases = {c["subject"]["name"]: c for c in load_results(results)["cases"]}
    assert cases["bad"]["outcome"] == "error" and "broken.png" in cases["bad"]["reason"]
    assert cases["good"]["outcome"] in VERDICTS


def test_subjects_whose_ids_sanitise_alike_keep_separate_records(pytester: pytest.Pytester) -> None:
    data = _subjects(pytester.path / "data", ["alice 1", "alice_1"])
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=none", f"--data={data}", f"--scenarios={folder}",
                 f"--results-dir={results}",
                 "--replicates=1", *REDUCED[1:])
    result.assert_outcomes(failed=2)
    cases = load_results(results)["cases"]
    assert sorted(c["subject"]["name"] for c in cases) == ["alice 1", "alice_1"]
    folders = {Path(c["artifacts"]["clean"][0]).parent for c in cases}
    assert len(folders) == 2


def test_interrupted_audit_says_so_and_lists_the_cases_not_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(leaky=LEAKY)
    data = _subjects(pytester.path / "data", ["a", "b", "c"])
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=leaky:stop", f"--data={data}", f"--scenarios={folder}",
                 f"--results-dir={results}",
                 "--replicates=1", *REDUCED[1:])
    assert result.ret == 2  # pytest's "interrupted"
    data_json = load_results(results)
    assert data_json["run"]["interrupted"] is True
    assert data_json["run"]["not_run"] == ["leaky_stop-no-attack-b", "leaky_stop-no-attack-c"]
    assert [c["subject"]["name"] for c in data_json["cases"]] == ["a"]
    report = (results / "runs" / data_json["run"]["run_id"]
              / "report.html").read_text(encoding="utf-8")
    assert "Interrupted." in report and "leaky_stop-no-attack-c" in report
    assert "INTERRUPTED" in result.stdout.str()


def test_dir_protection_audits_a_folder_of_protected_files(pytester: pytest.Pytester) -> None:
    data = _subjects(pytester.path / "data", ["alice"], n=3)
    protected = pytester.path / "protected" / "alice"
    protected.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for path in sorted((data / "alice").iterdir()):
        pixels = np.asarray(Image.open(path)).astype(int) + rng.integers(-3, 4, (64, 64, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(protected / path.name)
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, f"--protection=dir:{protected.parent}", "--epsilon=0.05",
                 f"--data={data}",
                 f"--scenarios={folder}", f"--results-dir={results}", *REDUCED)
    (case,) = load_results(results)["cases"]
    assert case["outcome"] in VERDICTS, result.stdout.str()
    assert case["protection"]["name"] == "dir" and case["protection_run"]["linf_255"] <= 3
    assert len(case["protection_runs"]) == 1  # the same files serve every replicate
