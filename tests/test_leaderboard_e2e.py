"""End to end: ``pytest --protection=none,random`` audits two protections in one run, on the tiny
model at reduced size (one scenario, one replicate, two synthetic 64 px images), sharing the
clean fine-tune between them, into one results file and one report with a leaderboard.
"""

from __future__ import annotations

import pytest

from tests.test_plugin_e2e import REDUCED, VERDICTS, _one_scenario_dir, _subjects, load_results, run

pytest_plugins = ["pytester"]


def test_two_protections_share_the_clean_runs_into_one_report(pytester: pytest.Pytester) -> None:
    data = _subjects(pytester.path / "data", ["alice"])
    folder = _one_scenario_dir(pytester)
    results = pytester.path / "res"
    result = run(pytester, "--protection=none,random", f"--data={data}",
                 f"--scenarios={folder}", f"--results-dir={results}", "--replicates=1",
                 "--exploit-workers=1", "-v", *REDUCED[1:])
    out = result.stdout.str()
    # one case per protection × scenario × subject, ids led by the protection as with one
    assert "test_scenario[none-no-attack-alice]" in out
    assert "test_scenario[random-no-attack-alice]" in out
    assert "leaderboard: retained protection" in out and "worst case for random on" in out
    cases = {c["protection"]["spec"]: c for c in load_results(results)["cases"]}
    assert set(cases) == {"none", "random"}
    assert all(c["outcome"] in VERDICTS for c in cases.values()), [c["reason"] for c in
                                                                   cases.values()]
    none, noise = cases["none"], cases["random"]
    assert none["protection"]["epsilon"] == 0 and noise["protection"]["epsilon"] > 0
    # The clean run is one fine-tune, computed in the first protection's case and served from
    # the cache to the second: same weights, and the second case fine-tunes its protected run only.
    assert (none["exploits"]["clean r0"]["weights_key"]
            == noise["exploits"]["clean r0"]["weights_key"])
    assert none["cache"]["misses"].count("finetune") == 1  # 'none' protects nothing: one run
    assert noise["cache"]["misses"].count("finetune") == 1  # its protected run
    assert noise["cache"]["hits"].count("generate") >= 1  # the clean run, from the cache
    assert (noise["exploits"]["protected r0"]["weights_key"]
            != noise["exploits"]["clean r0"]["weights_key"])
    # One results file, one report, with the leaderboard of both protections.
    run_id = load_results(results)["run"]["run_id"]
    report = (results / "runs" / run_id / "report.html").read_text(encoding="utf-8")
    board = report[report.index('<table id="leaderboard"'):]
    board = board[:board.index("</table>")]
    assert board.count("<tr>") == 3 and "<b>none</b>" in board and "<b>random</b>" in board
    assert "none · no-attack · alice" in report and "random · no-attack · alice" in report
