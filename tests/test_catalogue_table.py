"""benchmarks/catalogue_table.py: the table shows what the verdict recorded, and computes only
what it does not record (retained without a baseline effect, for reference; d·(m_a − m_c))."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from catalogue_table import markdown, rows  # noqa: E402

from audit.judge.verdict import decide  # noqa: E402


def _values(rng: np.random.Generator, level: float) -> list[list[float]]:
    return [list(level + 0.02 * rng.standard_normal(8)) for _ in range(3)]


def _results(effect: float, control: bool) -> dict:
    """A results document whose verdicts come from the engine's own ``decide``."""
    rng = np.random.default_rng(0)
    clean, protected, attacked = _values(rng, 0.5), _values(rng, 0.5 - effect), _values(rng, 0.48)
    verdict = decide("subject_similarity", "down", clean, protected, attacked, 0.5,
                     control=_values(rng, 0.45) if control else None).to_dict()
    case = {"scenario": {"id": "s"}, "outcome": verdict["outcome"],
            "verdict_metric": "subject_similarity",
            "worst_variant": 0, "variants": [{"label": "",
                                              "verdicts": {"subject_similarity": verdict}}]}
    return {"cases": [case]}


def test_rows_carry_the_recorded_estimates() -> None:
    data = _results(effect=0.2, control=True)
    verdict = data["cases"][0]["variants"][0]["verdicts"]["subject_similarity"]
    (row,) = rows(data)
    for key in ("m_c", "m_p", "m_a", "effect", "retained"):
        assert row[key] == {k: verdict[key][k] for k in ("value", "ci_low", "ci_high")}
    assert row["control_shift"]["value"] == verdict["control"]["shift"]["value"]
    under = verdict["control"]["effect_under_scenario"]["value"]
    assert row["effect_under_scenario"]["value"] == under
    m = {k: np.mean(v) for k, v in verdict["replicates"].items()}
    assert row["attacked_vs_clean"]["value"] == pytest.approx(-(m["attacked"] - m["clean"]))


def test_no_baseline_effect_gives_a_reference_ratio_shown_as_unbounded() -> None:
    data = _results(effect=0.0, control=False)
    verdict = data["cases"][0]["variants"][0]["verdicts"]["subject_similarity"]
    assert verdict["retained"] is None and verdict["outcome"] == "no effect at baseline"
    (row,) = rows(data)
    m = {k: np.mean(v) for k, v in verdict["replicates"].items()}
    assert row["retained"]["value"] == pytest.approx((m["attacked"] - m["clean"])
                                                     / (m["protected"] - m["clean"]))
    assert "control_shift" not in row
    assert "(unbounded)" in markdown([row]) and "no effect at baseline" in markdown([row])


def test_a_bad_results_file_is_named_with_its_fix(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"cases": [', encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks"
                                               / "catalogue_table.py"), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "re-run the audit" in proc.stderr
