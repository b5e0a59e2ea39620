"""Read, validate and merge results files (``results.json``) for the report.

A results file is the aggregated record of one audit run (``audit/results.py``). The report can
be drawn from one file or from several shards of the same audit run on different machines;
every problem with the input names the file and says how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.results import SCHEMA, SCHEMA_VERSION

# Version 1 files (one fine-tune per exploit, before replicates) still render, without the
# replicate tables.
SUPPORTED_VERSIONS = (1, SCHEMA_VERSION)
REQUIRED_TOP = ("schema", "schema_version", "run", "cases")
REQUIRED_RUN = ("options", "toolkit_version")
REQUIRED_CASE = ("case_id", "outcome", "protection", "scenario", "metrics")


class ReportInputError(ValueError):
    """A results file the report cannot be drawn from; the message names the file and the fix."""


@dataclass
class ResultsFile:
    """One validated results file and the folder its artifact paths are relative to."""

    path: Path
    data: dict[str, Any]
    artifact_roots: list[Path] = field(default_factory=list)

    @property
    def run(self) -> dict[str, Any]:
        return self.data["run"]

    @property
    def cases(self) -> list[dict[str, Any]]:
        return self.data["cases"]


def load_results(path: str | Path) -> ResultsFile:
    """Load one results file and check its schema, version and required fields."""
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file; pass the results.json an audit wrote (see its --results-dir).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{path}: not a text file ({exc}); pass the results.json an audit wrote.") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file is truncated or "
            "not a results file — re-run the audit, or rebuild it from runs/<id>/cases/*.json."
        ) from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object with 'schema', 'run' and 'cases', found {type(data).__name__}.")
    if data.get("schema") != SCHEMA:
        raise ReportInputError(
            f"{path}: not a protection-audit results file (schema {data.get('schema')!r}, expected {SCHEMA!r})."
        )
    version = data.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        older = isinstance(version, int) and version < min(SUPPORTED_VERSIONS)
        hint = (
            "it was written by an older protection-audit; re-run the audit with this version to get a file it can render"
            if older
            else "it was written by a newer protection-audit; render it with that version (pip install -U protection-audit)"
        )
        raise ReportInputError(
            f"{path}: results schema_version {version!r} is not supported (this version reads {list(SUPPORTED_VERSIONS)}); {hint}."
        )
    missing = [key for key in REQUIRED_TOP if key not in data]
    missing += [f"run.{key}" for key in REQUIRED_RUN if key not in (data.get("run") or {})]
    if missing:
        raise ReportInputError(f"{path}: missing field(s) {', '.join(missing)}; the file is incomplete — re-run the audit.")
    if not isinstance(data["cases"], list):
        raise ReportInputError(f"{path}: 'cases' must be a list of case records.")
    for index, case in enumerate(data["cases"]):
        if not isinstance(case, dict):
            raise ReportInputError(f"{path}: cases[{index}] is not a case record (found {type(case).__name__}).")
        lacking = [key for key in REQUIRED_CASE if key not in case]
        if lacking:
            name = case.get("case_id", f"cases[{index}]")
            raise ReportInputError(
                f"{path}: case {name!s} lacks {', '.join(lacking)}; the file is incomplete or was edited — "
                "re-run the audit (finished cases are kept in runs/<id>/cases/ and are not recomputed)."
            )
    return ResultsFile(path=path, data=data, artifact_roots=_artifact_roots(path, data))


def _artifact_roots(path: Path, data: dict[str, Any]) -> list[Path]:
    """Folders an artifact path (``artifacts/<case>/<file>.png``) may be relative to, in order."""
    here = path.resolve().parent
    roots = [here]
    if here.parent.name == "runs":  # <results>/runs/<id>/results.json
        roots.append(here.parent.parent)
    recorded = (data.get("run", {}).get("options") or {}).get("results_dir")
    if recorded:
        roots.append(Path(recorded))
    return list(dict.fromkeys(roots))


COMPARABLE = (("protection", "protection"), ("model", "model"), ("tier", "tier"))


def merge_results(files: list[ResultsFile]) -> dict[str, Any]:
    """One report input from shards of the same audit: same protection, model and tier; no case twice."""
    if not files:
        raise ReportInputError("no results files given; pass at least one results.json.")
    first = files[0]
    for other in files[1:]:
        for key, label in COMPARABLE:
            a, b = first.run["options"].get(key), other.run["options"].get(key)
            if a != b:
                raise ReportInputError(
                    f"{other.path}: {label} {b!r} differs from {first.path} ({a!r}); only shards of the same audit "
                    "(same protection, model and tier) merge into one report — render them separately."
                )
    seen: dict[str, Path] = {}
    cases: list[dict[str, Any]] = []
    for file in files:
        for case in file.cases:
            if case["case_id"] in seen:
                raise ReportInputError(
                    f"{file.path}: case {case['case_id']!r} is also in {seen[case['case_id']]}; each case must come "
                    "from one shard — drop one file, or run the shards with disjoint -k selections."
                )
            seen[case["case_id"]] = file.path
            cases.append({**case, "_source": str(file.path), "_roots": [str(r) for r in file.artifact_roots]})
    return {
        "runs": [{**file.run, "_source": str(file.path)} for file in files],
        "cases": cases,
    }
