"""The shareable robustness report: one self-contained HTML file per audit (issue 3).

``write_report([results.json, ...], out)`` renders it; ``python -m reports`` is the command line.
"""

from reports.load import ReportInputError, load_results, merge_results
from reports.render import render_html, write_report

__all__ = ["ReportInputError", "load_results", "merge_results", "render_html", "write_report"]
