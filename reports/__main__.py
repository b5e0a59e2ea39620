"""``python -m reports render RESULTS.json -o report.html`` and ``python -m reports merge A.json
B.json -o report.html``."""

from __future__ import annotations

import argparse
import sys

from reports.load import ReportInputError
from reports.render import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports",
                                     description="Render protection-audit results as one "
            "self-contained HTML report.")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="report of one results file")
    render.add_argument("results", help="results.json written by an audit")
    render.add_argument("-o", "--output", default="report.html", help="HTML file to write (default "
            "report.html)")
    merge = commands.add_parser("merge", help="one report from shards of the same audit run on "
                                              "several machines")
    merge.add_argument("results", nargs="+", help="results.json files (same protection, model and "
                                                  "tier; disjoint cases)")
    merge.add_argument("-o", "--output", default="report.html", help="HTML file to write (default "
            "report.html)")
    args = parser.parse_args(argv)
    inputs = [args.results] if args.command == "render" else args.results
    try:
        path = write_report(inputs, args.output)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
