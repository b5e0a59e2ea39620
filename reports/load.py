"""Read, validate and merge results files (``results.json``) for the report.

A results file is the aggregated record of one audit run (``audit/results/files.py``). The report
can be drawn from one file or from several shards of the same audit run on different machines;
every problem with the input names the file and says how to fix it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.results.files import SCHEMA, SCHEMA_VERSION

# Version 1 files (one fine-tune per exploit, before replicates) still render, without the
# replicate tables; version 2 files (before the untrained reference) without m_u, the learned
# margin, the effect share and the noise baseline (shown as "—"), their verdicts as then decided.
SUPPORTED_VERSIONS = (1, 2, SCHEMA_VERSION)
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
    if path.is_dir():  # a results folder (--results-dir) or a run's folder: its results.json
        if not (path / "results.json").is_file():
            raise ReportInputError(f"{path}: a folder without a results.json; pass the "
                                   "results.json an audit wrote, or the folder holding it (its "
                                   "--results-dir, or runs/<id>/).")
        path = path / "results.json"
    if not path.is_file():
        raise ReportInputError(f"{path}: no such file; pass the results.json an audit wrote (see "
                               "its --results-dir).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{path}: not a text file ({exc}); pass the results.json an audit "
                               "wrote.") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file "
            "is truncated or not a results file — re-run the audit, or rebuild it from "
            "runs/<id>/cases/*.json."
        ) from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object with 'schema', 'run' and 'cases', "
                               f"found {type(data).__name__}.")
    if data.get("schema") != SCHEMA:
        raise ReportInputError(
            f"{path}: not a protection-audit results file (schema {data.get('schema')!r}, expected "
            f"{SCHEMA!r})."
        )
    version = data.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        older = isinstance(version, int) and version < min(SUPPORTED_VERSIONS)
        hint = (
            "it was written by an older protection-audit; re-run the audit with this version to "
            "get a file it can render"
            if older
            else "it was written by a newer protection-audit; render it with that version (pip "
                 "install -U protection-audit)"
        )
        raise ReportInputError(
            f"{path}: results schema_version {version!r} is not supported (this version reads "
            f"{list(SUPPORTED_VERSIONS)}); {hint}."
        )
    missing = [key for key in REQUIRED_TOP if key not in data]
    missing += [f"run.{key}" for key in REQUIRED_RUN if key not in (data.get("run") or {})]
    if missing:
        raise ReportInputError(f"{path}: missing field(s) {', '.join(missing)}; the file is "
                               "incomplete — re-run the audit.")
    if not isinstance(data["cases"], list):
        raise ReportInputError(f"{path}: 'cases' must be a list of case records.")
    for index, case in enumerate(data["cases"]):
        if not isinstance(case, dict):
            raise ReportInputError(f"{path}: cases[{index}] is not a case record (found "
                                   f"{type(case).__name__}).")
        lacking = [key for key in REQUIRED_CASE if key not in case]
        if lacking:
            name = case.get("case_id", f"cases[{index}]")
            raise ReportInputError(
                f"{path}: case {name!s} lacks {', '.join(lacking)}; the file is incomplete or was "
                "edited — re-run the audit (finished cases are kept in runs/<id>/cases/ and are "
                "not recomputed)."
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


# The options that bear on the numbers (where the shards ran, with how many workers, and their
# folders' paths do not: scenarios and subjects are compared by content below).
COMPARED_OPTIONS = ("protection", "model", "transfer_model", "tier", "seed", "replicates",
                    "epsilon", "overrides",
                    "exploit")


def provenance(file: ResultsFile) -> dict[str, Any]:
    """What makes a results file's numbers what they are, field by field: the toolkit version, the
    options and tier settings that bear on the numbers, and — from its cases — the model and
    transfer model fingerprints, the protection's code fingerprint, each scenario's definition
    hash and each subject's content hash."""
    run = file.run
    options = run.get("options") or {}
    fields: dict[str, Any] = {"toolkit version": run.get("toolkit_version")}
    fields.update({f"option {key}": options.get(key) for key in COMPARED_OPTIONS})
    fields["tier settings"] = run.get("tier_settings")
    for case in file.cases:
        for role in ("model", "transfer_model"):
            model = case.get(role) or {}
            if model.get("fingerprint"):
                label = f"{role.replace('_', ' ')} fingerprint ({model.get('id')})"
                fields[label] = model["fingerprint"]
        protection = case.get("protection") or {}
        code = protection.get("code") or {}
        if code:  # one per protection (an audit may list several)
            name = protection.get("spec") or protection.get("name")
            fields[f"protection code fingerprint ({name})"] = code.get("sha256")
        scenario = case.get("scenario") or {}
        if scenario.get("definition_hash"):
            label = f"definition hash of scenario '{scenario.get('id')}'"
            fields[label] = scenario["definition_hash"]
        subject = case.get("subject") or {}
        if subject.get("content_hash"):
            fields[f"content hash of subject '{subject.get('name')}'"] = subject["content_hash"]
    return fields


def merge_results(files: list[ResultsFile]) -> dict[str, Any]:
    """One report input from shards of the same audit: the same provenance wherever it bears on
    the numbers (``provenance``: seed, tier settings, model fingerprint, toolkit version,
    scenario hashes, options, ...), each field compared and a mismatch refused by name; no case
    twice."""
    if not files:
        raise ReportInputError("no results files given; pass at least one results.json.")
    first = files[0]
    reference = {key: (value, first.path) for key, value in provenance(first).items()}
    for other in files[1:]:
        for key, value in provenance(other).items():
            # e.g. a scenario only this shard ran: it is the reference from now on
            if key not in reference:
                reference[key] = (value, other.path)
                continue
            expected, where = reference[key]
            if value != expected:
                raise ReportInputError(
                    f"{other.path}: {key} {value!r} differs from {where} ({expected!r}); only "
                    "shards of one audit (the same protection, model, tier, seed, settings, "
                    "toolkit version, scenarios and subjects) merge into one report, since their "
                    "numbers are not comparable otherwise — render them separately, or rerun one "
                    "shard with the other's settings."
                )
    seen: dict[str, Path] = {}
    cases: list[dict[str, Any]] = []
    for file in files:
        for case in file.cases:
            if case["case_id"] in seen:
                raise ReportInputError(
                    f"{file.path}: case {case['case_id']!r} is also in {seen[case['case_id']]}; "
                    "each case must come from one shard — drop one file, or run the shards with "
                    "disjoint -k selections."
                )
            seen[case["case_id"]] = file.path
            cases.append({**case, "_source": str(file.path),
                          "_roots": [str(r) for r in file.artifact_roots]})
    return {
        "runs": [{**file.run, "_source": str(file.path)} for file in files],
        "cases": cases,
    }
