"""The HTML robustness report, drawn from a recorded results file (no model needed).

``tests/data/results-pid-smoke.json`` is the results file of a real smoke audit of PID
(``pytest --protection=pid`` on the trained tiny model, seed 0: three cases), written as schema
version 3 and read as 4 (the typed schema kept every field), trimmed (training and objective
traces subsampled), its ``results_dir`` replaced by a folder that does not exist. Its artifact
PNGs are not committed; the fixture draws a small image for each recorded artifact path.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
from html import escape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reports import ReportInputError, load_results, render_html, write_report
from reports.__main__ import main as reports_main
from tests.records import judged

RECORDED = Path(__file__).parent / "data" / "results-pid-smoke.json"
XSS = "<script>alert(1)</script>"


def _draw_artifacts(results_dir: Path, data: dict) -> None:
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for case in data["cases"]:
        for group, paths in (case.get("artifacts") or {}).items():
            for i, relative in enumerate(paths):
                path = results_dir / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                # Clean subject images are identical in every case (as in a real audit).
                pixels = (shared if group == "clean" and i == 0
                          else rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
                Image.fromarray(pixels).save(path)


def _write(results_dir: Path, data: dict, name: str = "results.json") -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text(encoding="utf-8"))


@pytest.fixture
def results_file(tmp_path: Path, recorded: dict) -> Path:
    _draw_artifacts(tmp_path / "res", recorded)
    return _write(tmp_path / "res", recorded)


def _html(path: Path) -> str:
    return render_html([load_results(path)])


def test_report_has_every_section_with_the_recorded_numbers(
        results_file: Path, recorded: dict) -> None:
    html = _html(results_file)
    for section in ('id="summary"', 'id="matrix"', 'id="plots"', 'id="cases"', 'id="provenance"'):
        assert section in html
    run, cases = recorded["run"], recorded["cases"]
    case = cases[0]
    # Summary: protection, budget in both units, model and tier, counts.
    assert "0.0500 in [0, 1] = 12.75/255" in html
    assert case["model"]["fingerprint"][:16] in html and "smoke" in html
    assert f"<td>{len(cases)}</td>" in html or f"<td>{len(cases)} " in html
    assert "What these numbers show." in html  # smoke-tier caveat on the embedded model
    # Matrix: one row per case, one column per metric.
    matrix = html[html.index('<table id="matrix"'):html.index("</table>",
                                                               html.index('<table id="matrix"'))]
    assert matrix.count("<tr>") == len(cases) + 1
    for metric in case["metrics"]:
        assert f"<span>{metric}</span></th>" in matrix
    # Per case: reason sentence, m_c, scenario source, timings, cache.
    for c in cases:
        assert c["case_id"] in html
        assert f"{c['metrics'][c['verdict_metric']]['m_c']['value']:.4f}" in html
        assert c["scenario"]["definition_hash"] in html
    assert "DiffShortcut App. C.1" in html
    assert "exploit: DreamBooth fine-tune" in html
    # Provenance: command, commit, versions, reproduce command.
    assert run["git_commit"] in html and run["reproduce"] in html
    assert "diffusers 0.42.1" in html or f"diffusers {run['versions']['diffusers']}" in html
    # Plots are inline SVG.
    assert html.count("<svg ") >= 1 + len(cases)


def test_provenance_names_the_cpu_and_its_kernel_instruction_set(
        tmp_path: Path, recorded: dict) -> None:
    """CPU reruns are bitwise identical only on the same instruction set, so the record says
    which."""
    import torch

    from audit.results.provenance import cpu_description

    cpu = cpu_description()
    assert cpu["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    recorded["run"]["cpu"] = {"model": "Example CPU 9000", "torch_capability": "AVX512"}
    html = _html(_write(tmp_path / "res", recorded))
    assert "CPU Example CPU 9000 (torch kernels: AVX512)" in html
    recorded["run"].pop("cpu")  # results written before the field existed still render
    assert "torch kernels" not in _html(_write(tmp_path / "old", recorded))


def test_images_are_embedded_once_each_and_report_is_small(
        results_file: Path, recorded: dict) -> None:
    html = _html(results_file)
    paths = {p for c in recorded["cases"] for ps in c["artifacts"].values() for p in ps}
    embedded = re.findall(r"\.(i[0-9a-f]{16})\{background-image:url\(data:image/png;base64,", html)
    assert len(embedded) == len(set(embedded))
    # Each artifact path is one distinct image except the shared first clean image.
    assert len(embedded) == len(paths) - (len(recorded["cases"]) - 1)
    assert len(html.encode()) < 5_000_000
    # Thumbnails open a full-size overlay (CSS :target, no script needed).
    anchor = re.search(r'href="#full-(i[0-9a-f]{16})"', html).group(1)
    assert f'id="full-{anchor}"' in html


def test_no_external_resource_is_referenced(results_file: Path, recorded: dict) -> None:
    html = _html(results_file)
    assert not re.search(
        r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:|//|ftp:|file:)""", html,
        re.I)
    assert not re.search(r"url\(\s*['\"]?(?!data:)", html)
    assert "@import" not in html and "<link" not in html.lower() and "<iframe" not in html.lower()
    # The only addresses are in the recorded text that says where missing weights come from
    # (shown as text, never loaded).
    said = {url for c in recorded["cases"] for m in [
        *c["metrics"].values(), *c["imperceptibility"].values()] if m.get("unavailable")
        for url in re.findall(r"https?://[^\s)]+", m["unavailable"])}
    assert said  # the recording has such messages: what follows checks something
    for url in sorted(said, key=len, reverse=True):
        html = html.replace(escape(url), "").replace(url, "")
    assert "http://" not in html and "https://" not in html
    assert html.lower().count("<script") == 1 and "<script src" not in html.lower()


def test_every_user_string_is_escaped(tmp_path: Path, recorded: dict) -> None:
    data = copy.deepcopy(recorded)
    case = data["cases"][0]
    case["subject"]["files"][0] = f"{XSS}.png"
    case["scenario"]["title"] = f"JPEG {XSS}"
    case["scenario"]["why"] = "<img src=x onerror=alert(2)>"
    case["protection"]["name"] = f"pid{XSS}"
    case["exploits"]["attacked[0] r0"]["finetune"]["instance_prompt"] = f"a photo of {XSS}"
    data["cases"][1].update(
        outcome="error",
        reason=f"RuntimeError: bad {XSS}",
        error={"type": "RuntimeError", "message": f"bad {XSS}", "user_error": False,
               "traceback": f"Traceback\n  {XSS}"},
    )
    _draw_artifacts(tmp_path / "res", data)
    html = _html(_write(tmp_path / "res", data))
    assert "alert(1)" in html  # shown ...
    assert XSS not in html and "<img src=x" not in html  # ... but never as markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert html.lower().count("<script") == 1


def test_errored_case_shows_error_and_traceback_and_others_still_render(
        tmp_path: Path, recorded: dict) -> None:
    data = copy.deepcopy(recorded)
    broken = data["cases"][0]
    broken.update(outcome="error", reason="ValueError: NaN in latents", metrics={}, artifacts={},
                  error={"type": "ValueError", "message": "NaN in latents", "user_error": False,
                         "traceback": "Traceback (most recent call last):\n  boom"})
    _draw_artifacts(tmp_path / "res", data)
    html = _html(_write(tmp_path / "res", data))
    assert ("<b>ValueError</b>: NaN in latents" in html
            and "Traceback (most recent call last):" in html)
    assert "1 case(s) errored" in html
    # Errored cases come first in the matrix (weakest first).
    matrix = html[html.index('<table id="matrix"'):]
    assert matrix.index(
        broken["case_id"].split("-astronaut")[0].removeprefix("pid-")) < matrix.index("</table>")
    assert all(c["case_id"] in html for c in data["cases"])


def test_input_error_case_record_renders(tmp_path: Path, recorded: dict) -> None:
    """The plugin's record of a case stopped by bad input has only a few fields."""
    data = copy.deepcopy(recorded)
    message = "scen/typo.yaml: unknown scenario part 'jpg' (did you mean 'jpeg'?)"
    data["cases"].append({
        "case_id": "pid-typo-astronaut", "protection": {"name": "pid"},
        "scenario": {"id": "typo", "path": "scen/typo.yaml"},
        "subject": {"name": "astronaut"}, "tier": "smoke", "seed": 0, "outcome": "error",
        "reason": message, "metrics": {},
        "variants": [], "flags": [], "error": {"type": "input", "message": message,
                                               "user_error": True, "traceback": None},
        "seconds": 0.0, "timings": [], "cache": {"hits": [], "misses": [], "corrupt": []},
    })
    html = _html(_write(tmp_path / "res", data))
    assert "did you mean &#39;jpeg&#39;?" in html and "pid-typo-astronaut" in html


def test_missing_artifact_is_named_not_fatal(tmp_path: Path, recorded: dict) -> None:
    path = _write(tmp_path / "res", recorded)  # no artifacts drawn
    html = _html(path)
    assert f"artifact not found: {recorded['cases'][0]['artifacts']['clean'][0]}" in html


def test_outcomes_order_matrix_weakest_first(tmp_path: Path, recorded: dict) -> None:
    data = copy.deepcopy(recorded)
    a, b = data["cases"][0], data["cases"][1]
    assert judged(a, 0.32)["outcome"] == "pass"
    failed = judged(b, 0.75)
    assert failed["outcome"] == "fail"
    _draw_artifacts(tmp_path / "res", data)
    html = _html(_write(tmp_path / "res", data))
    assert "disagree with their own numbers" not in html
    matrix = html[html.index('<table id="matrix"'):]
    assert matrix.index(
        b["case_id"].removeprefix("pid-").removesuffix("-astronaut")) < matrix.index(
            a["case_id"].removeprefix("pid-").removesuffix("-astronaut"))
    assert f"Does not hold against 1 of {len(data['cases'])} scenarios" in html
    summary = html[html.index('id="summary"'):html.index('id="matrix-section"')]
    retained = failed["retained"]
    shown = (f"{retained['value']:.3f} [{retained['ci_low']:.3f}, "
             f"{retained['ci_high']:.3f}]")
    assert "weakest scenario" in summary and shown in summary


def test_merge_two_shards(tmp_path: Path, recorded: dict) -> None:
    first, second = copy.deepcopy(recorded), copy.deepcopy(recorded)
    first["cases"], second["cases"] = recorded["cases"][:2], recorded["cases"][2:]
    second["run"]["run_id"] = "machine-b"
    _draw_artifacts(tmp_path / "a", first)
    _draw_artifacts(tmp_path / "b", second)
    a, b = _write(tmp_path / "a", first), _write(tmp_path / "b", second)
    out = tmp_path / "merged.html"
    assert reports_main(["merge", str(a), str(b), "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert all(c["case_id"] in html for c in recorded["cases"])
    assert ("machine-b" in html and recorded["run"]["run_id"] in html
            and "from 2 merged runs" in html)
    assert "artifact not found" not in html  # each shard's artifacts found next to its own file


def test_merge_refuses_overlapping_or_incomparable_shards(tmp_path: Path, recorded: dict) -> None:
    a = _write(tmp_path / "a", recorded)
    b = _write(tmp_path / "b", recorded)
    with pytest.raises(ReportInputError, match=r"also in .*a[/\\]results.json"):
        render_html([load_results(a), load_results(b)])
    other = copy.deepcopy(recorded)
    other["run"]["options"]["protection"] = "random"
    other["cases"] = []
    c = _write(tmp_path / "c", other)
    with pytest.raises(ReportInputError, match="protection 'random' differs"):
        render_html([load_results(a), load_results(c)])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=0), "schema_version 0 is not supported.*older "
                                               "protection-audit.*re-run"),
        (lambda d: d.update(schema_version=3), "schema_version 3 is not supported.*re-run the "
                                               "audit.*pip install protection-audit==0.1.0"),
        (lambda d: d.update(schema_version=99), "newer protection-audit"),
        (lambda d: d.update(schema="something/else"), "not a protection-audit results file"),
        (lambda d: d["cases"][1].pop("outcome"),
         "case pid-no-attack-astronaut.outcome: missing.*re-run the audit"),
        (lambda d: d["cases"][0]["metrics"]["subject_similarity"]["m_c"].pop("ci_low"),
         "case pid-jpeg-q75-astronaut.metrics.subject_similarity.m_c.ci_low: missing"),
        (lambda d: d["cases"][0].update(outcome="passed"), r"case pid-jpeg-q75-astronaut\.outcome"),
        (lambda d: d.pop("run"), "run: missing"),
        (lambda d: d["run"].pop("options"), "run.options: missing"),
    ],
)
def test_old_or_incomplete_results_give_a_clear_error(tmp_path: Path, recorded: dict, edit,
                                                      message: str) -> None:
    data = copy.deepcopy(recorded)
    edit(data)
    path = _write(tmp_path, data)
    with pytest.raises(ReportInputError, match=message) as info:
        load_results(path)
    assert str(path) in str(info.value)


def test_cli_reports_bad_input_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": "protection-audit/results", "cases": [', encoding="utf-8")
    assert reports_main(["render", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()
    assert reports_main(["render", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def twelve_metrics(data: dict) -> dict:
    """Every case measured on 12 metrics: the recorded ones plus copies under longer names (a
    paper-tier audit's matrix has about a dozen columns)."""
    for case in data["cases"]:
        metrics = case["metrics"]
        names = list(metrics)
        for i in range(12 - len(names)):
            metrics[f"{names[i % len(names)]}_variant_{i}"] = copy.deepcopy(metrics[names[i % len(
                names)]])
    return data


MEASURE = """<script>
var main = document.querySelector('main'), doc = document.documentElement, out = {
  doc_scroll: doc.scrollWidth, doc_client: doc.clientWidth, tables: {}};
['matrix', 'leaderboard'].forEach(function (id) {
  var t = document.getElementById(id);
  if (t) { out.tables[id] = {right: t.getBoundingClientRect().right,
    columns: t.rows[0].cells.length, main_right: main.getBoundingClientRect().right}; }
});
document.body.setAttribute('data-measure', JSON.stringify(out));
</script></body>"""


def _headless(browser: str, url: str, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={profile}", "--window-size=1280,2000", *flags, url]
        env = {**os.environ, "HOME": profile}
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_report_renders_in_headless_chromium_with_the_matrix_visible(
        tmp_path: Path) -> None:
    """A report of two protections on 12 metrics: the leaderboard and the matrix are drawn (their
    outcome colours fill a visible area) and fit the page: no horizontal scroll at 1280 px."""
    from tests.test_leaderboard import two_protections

    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's 'chromium' when it can "
                    "run apt-get as root)")
    data = twelve_metrics(two_protections())
    _draw_artifacts(tmp_path / "res", data)
    report = write_report([_write(tmp_path / "res", data)], tmp_path / "report.html")
    html = report.read_text(encoding="utf-8")
    assert 'id="leaderboard"' in html and html.count('<th data-sort="num" class="rot') >= 12
    shot = tmp_path / "shot.png"
    done = _headless(browser, report.resolve().as_uri(), f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert pixels.std() > 10  # something was drawn, not a blank page
    # The leaderboard's and matrix's cells (coloured by outcome, see the template's CSS) fill a
    # visible area.
    cell_colours = [(0xDC, 0xFC, 0xE7), (0xFE, 0xE2, 0xE2), (0xFE, 0xF3, 0xC7), (0xF3, 0xE8, 0xFF)]
    cell = sum(int(np.all(pixels == np.array(c), axis=1).sum()) for c in cell_colours)
    assert cell > 2000, (f"matrix cells not visible in the screenshot ({cell} pixels of the cell "
                         "colours)")
    # Laid out by the browser: neither the page nor either table is wider than the page.
    measured = tmp_path / "measured.html"
    measured.write_text(html.replace("</body>", MEASURE), encoding="utf-8")
    done = _headless(browser, measured.resolve().as_uri(), "--dump-dom",
                     "--virtual-time-budget=3000")
    found = re.search(r'data-measure="([^"]+)"', done.stdout)
    assert found, done.stderr[-2000:]
    import html as html_lib

    layout = json.loads(html_lib.unescape(found.group(1)))
    assert layout["doc_scroll"] <= layout["doc_client"], layout
    assert set(layout["tables"]) == {"matrix", "leaderboard"}
    assert layout["tables"]["matrix"]["columns"] == 2 + 12
    for table in layout["tables"].values():
        assert table["right"] <= table["main_right"] + 0.5, layout
