"""The retained-protection table of an audit run, one row per scenario variant.

    ./dev python benchmarks/catalogue_table.py RESULTS_JSON [--out table.json] [--markdown table.md]

Reads an audit's ``results.json`` (e.g. from ``bench_audit.py --full-catalogue --results-dir``)
and, for each case's variants on the case's verdict metric, prints what the verdict recorded
(nothing is recomputed from images):

- m_c, m_p, m_a with the t interval over replicates;
- the protective effect d·(m_p − m_c) and retained protection (m_a − m_c)/(m_p − m_c) with
  Fieller's interval (unbounded exactly when the effect's interval contains 0: the verdict then
  reads "no effect at baseline", and the point estimate is shown only for reference);
- what the protected-then-attacked images still do to the exploit, d·(m_a − m_c), with its
  paired interval: > 0 means the exploiter still does worse than on clean images;
- for scenarios that change the exploit, the matched control's shift d·(m_c′ − m_c) and the
  effect under the changed exploit d·(m_a − m_c′), both paired over replicates.

d = +1 for metrics where larger is better protection, −1 otherwise; α = 0.05 as in the audit.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audit.judge import intervals  # noqa: E402
from reports.load import ReportInputError, load_results  # noqa: E402


def _est(e: dict[str, Any] | intervals.Estimate) -> dict[str, float]:
    if isinstance(e, intervals.Estimate):
        e = {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high}
    return {"value": e["value"], "ci_low": e["ci_low"], "ci_high": e["ci_high"]}


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (case, variant) on the case's verdict metric: the verdict's recorded
    estimates, plus the two the verdict does not record (retained when there was no effect to
    retain, for reference; and d·(m_a − m_c)), computed from its recorded replicate means."""
    out = []
    for case in results["cases"]:
        metric = case.get("verdict_metric")
        scenario = (case.get("scenario") or {}).get("id")
        if case.get("outcome") == "error" or not metric:
            out.append({"scenario": scenario, "outcome": case.get("outcome"), "reason": case.get("reason")})
            continue
        for i, variant in enumerate(case.get("variants") or []):
            verdict = (variant.get("verdicts") or {}).get(metric)
            if verdict is None:
                continue
            direction = verdict["direction"]
            reps = {role: [[float(m)] for m in means] for role, means in verdict["replicates"].items()}
            clean, protected, attacked = reps["clean"], reps["protected"], reps["attacked"]
            retained = verdict["retained"] or intervals.retained_interval(clean, protected, attacked, direction)
            row: dict[str, Any] = {
                "scenario": scenario, "variant": variant.get("label") or "", "worst_variant": i == case.get("worst_variant"),
                "metric": metric, "direction": direction, "K": len(clean), "outcome_of_variant": verdict["outcome"],
                "case_outcome": case.get("outcome"),
                "m_c": _est(verdict["m_c"]), "m_p": _est(verdict["m_p"]), "m_a": _est(verdict["m_a"]),
                "effect": _est(verdict["effect"]), "retained": _est(retained),
                "attacked_vs_clean": _est(intervals.effect_interval(clean, attacked, direction)),
                "replicate_means": verdict["replicates"],
            }
            if verdict.get("control"):
                row["control_shift"] = _est(verdict["control"]["shift"])
                row["effect_under_scenario"] = _est(verdict["control"]["effect_under_scenario"])
            out.append(row)
    return out


def _fmt(e: dict[str, float] | None, digits: int = 3) -> str:
    if e is None:
        return "—"
    v, lo, hi = e["value"], e["ci_low"], e["ci_high"]
    if not math.isfinite(v):
        return "undefined"
    if math.isinf(lo) or math.isinf(hi):
        return f"{v:+.2f} (unbounded)"
    return f"{v:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| scenario | variant | m_a [95% CI] | retained (Fieller) | d·(m_a − m_c) | control shift d·(m_c′ − m_c) | d·(m_a − m_c′) | outcome |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        if "m_a" not in r:
            lines.append(f"| {r['scenario']} | | | | | | | {r['outcome']}: {r.get('reason')} |")
            continue
        m_a = r["m_a"]
        lines.append(
            f"| {r['scenario']} | {r['variant']}{' (worst)' if r['worst_variant'] and r['variant'] else ''} "
            f"| {m_a['value']:.3f} [{m_a['ci_low']:.3f}, {m_a['ci_high']:.3f}] | {_fmt(r['retained'], 2)} "
            f"| {_fmt(r['attacked_vs_clean'])} | {_fmt(r.get('control_shift'))} | {_fmt(r.get('effect_under_scenario'))} "
            f"| {r['outcome_of_variant']} |"
        )
    return "\n".join(lines)


def adaptive_markdown(results: dict[str, Any]) -> str:
    """The adaptive protector's matched comparisons (``adaptive``): the adaptive protection and
    the protection as it is, under the same attack and seeds; empty without adaptive cases."""
    lines = ["| scenario | adaptation | retained, adapted | retained, as it is | outcome as it is "
             "| gain d·(m_a adapted − m_a as it is) | answer |", "|---|---|---|---|---|---|---|"]
    for case in results["cases"]:
        entry = case.get("adaptive")
        if not entry:
            continue
        adaptation = entry["adaptation"]
        steps = ", ".join(next(iter(s)) for s in adaptation.get("transform") or [])
        label = f"EoT over {steps}, {adaptation['samples']} sample(s), {adaptation['gradient']}"
        lines.append(
            f"| {case['scenario']['id']} | {label} | {_fmt(entry['adaptive']['retained'], 2)} "
            f"| {_fmt(entry['non_adaptive']['retained'], 2)} | {entry['non_adaptive']['outcome']} "
            f"| {_fmt(entry['gain_after_attack'])} | {entry['answer']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    try:  # the report's loader: a missing, corrupt or old-schema file is named with its fix
        data = load_results(args.results).data.dump()  # the typed file, as its JSON
    except ReportInputError as exc:
        parser.exit(2, f"catalogue_table: {exc}\n")
    table = rows(data)
    text = markdown(table)
    adaptive = adaptive_markdown(data)
    if adaptive:
        text += "\n\nThe adaptive protector against the protection as it is:\n\n" + adaptive
    print(text)
    if args.out:
        args.out.write_text(json.dumps({"run": data.get("run"), "rows": table}, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
