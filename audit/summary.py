"""The terminal summary table of an audit (rich)."""

from __future__ import annotations

from typing import IO, Any

from rich.console import Console
from rich.table import Table

STYLE = {"pass": "green", "fail": "red", "no effect at baseline": "yellow", "error": "magenta"}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def summary_table(cases: list[dict[str, Any]], options: Any, file: IO[str], color: bool = False) -> None:
    """One row per case: outcome, verdict metric, m_c / m_p / m_a and retained with its CI."""
    table = Table(title=f"protection '{options.protection}' · model {options.model} · tier {options.tier} · seed {options.seed}")
    for column in ("case", "outcome", "metric", "m_c", "m_p", "m_a", "retained [95% CI]", "time"):
        table.add_column(column, justify="left" if column in ("case", "outcome", "metric") else "right")
    for case in sorted(cases, key=lambda c: c["case_id"]):
        metric = case.get("verdict_metric") or (case.get("scenario") or {}).get("verdict", {}).get("metric", "")
        entry = case.get("metrics", {}).get(metric, {})
        retained = entry.get("retained")
        retained_text = "—"
        if retained:
            retained_text = f"{_fmt(retained['value'], 2)} [{_fmt(retained['ci_low'], 2)}, {_fmt(retained['ci_high'], 2)}]"
        outcome = case["outcome"]
        flagged = " ⚑" if case.get("flags") else ""
        table.add_row(
            case["case_id"],
            f"[{STYLE.get(outcome, 'white')}]{outcome}[/]{flagged}",
            metric,
            _fmt((entry.get("m_c") or {}).get("value")),
            _fmt((entry.get("m_p") or {}).get("value")),
            _fmt((entry.get("m_a") or {}).get("value")),
            retained_text,
            f"{case.get('seconds', 0):.1f}s",
        )
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    console = Console(file=file, force_terminal=color, no_color=not color, width=160)
    console.print(table)
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no cases")
    flagged = [c for c in cases if c.get("flags")]
    if flagged:
        console.print(f"⚑ {len(flagged)} case(s) flagged as less reliable (details in the results JSON, 'flags'):")
        for case in flagged:
            for flag in case["flags"]:
                console.print(f"  {case['case_id']}: {flag}")
