"""Fill the report template: one self-contained HTML file from one or more results files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jinja2 import ChainableUndefined, Environment, PackageLoader, select_autoescape

from audit.judge.outcomes import BY_LABEL
from reports.context import build_context, fmt, fmt_ci, pretty
from reports.load import ResultsFile, load_results, merge_results

TEMPLATE = "report.html.j2"


def outcome_class(outcome: str | None) -> str:
    """CSS class of an outcome (colours in the template's stylesheet)."""
    known = BY_LABEL.get(outcome or "")
    return known.css if known is not None else "o-none"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=ChainableUndefined,  # partial records (input-error cases) render as blanks
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, fmt_ci=fmt_ci, pretty=pretty, oclass=outcome_class)
    return env


def render_html(files: list[ResultsFile]) -> str:
    """The report of the audit recorded in ``files`` (one file, or shards of one audit)."""
    from reports.verify import verify_outcomes

    # Outcomes are re-derived from the recorded numbers with the engine's decide()
    # (reports/verify.py).
    disagreements = [d for f in files for d in verify_outcomes(f)]
    merged = merge_results(files)
    context = build_context(merged, [str(f.path) for f in files])
    if disagreements:  # said first, before any answer drawn from these cases
        listing = "; ".join(f"{d['case_id']}: recorded '{d['recorded']}', its numbers give "
                            f"'{d['derived']}'"
                            for d in disagreements)
        context["summary"]["headline"] = (
            f"⚠ {len(disagreements)} case record(s) disagree with their own numbers ({listing}); "
            "the results file was edited or written by other code, and this report shows the "
            "recomputed outcomes. "
            + context["summary"]["headline"])
        context["summary"]["headline_outcome"] = "error"
    return _environment().get_template(TEMPLATE).render(**context)


def write_report(results: list[str | Path], out: str | Path) -> Path:
    """Render the report of the given results files to ``out`` (written atomically)."""
    html = render_html([load_results(p) for p in results])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-report-", suffix=".html", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.replace(tmp, out)
    return out
