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

from pydantic import ValidationError

from audit.results.schema import SCHEMA, SCHEMA_VERSION, CaseRecord, RunFile, RunInfo

# The typed schema (audit/results/schema.py) reads its own version only: a file of an earlier
# version is refused with the fix (rerun the audit, or render it with the toolkit that wrote it).
SUPPORTED_VERSIONS = (SCHEMA_VERSION,)


class ReportInputError(ValueError):
    """A results file the report cannot be drawn from; the message names the file and the fix."""


@dataclass
class ResultsFile:
    """One validated results file and the folder its artifact paths are relative to."""

    path: Path
    data: RunFile
    artifact_roots: list[Path] = field(default_factory=list)

    @property
    def run(self) -> RunInfo:
        return self.data.run

    @property
    def cases(self) -> list[CaseRecord]:
        return self.data.cases


@dataclass
class SourcedCase:
    """A case of a merged report input, with the file it came from and where its artifact
    paths are relative to."""

    record: CaseRecord
    source: str
    roots: list[Path]


@dataclass
class SourcedRun:
    run: RunInfo
    source: str


@dataclass
class Merged:
    runs: list[SourcedRun]
    cases: list[SourcedCase]


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
        wrote = (data.get("run") or {}).get("toolkit_version") if isinstance(
            data.get("run"), dict) else None
        hint = (
            "it was written by an older protection-audit; re-run the audit with this version to "
            "get a file it can render (finished stages are served from the audit cache), or "
            "render it with the version that wrote it"
            + (f" (pip install protection-audit=={wrote})" if wrote else "")
            if older
            else "it was written by a newer protection-audit; render it with that version (pip "
                 "install -U protection-audit)"
        )
        raise ReportInputError(
            f"{path}: results schema_version {version!r} is not supported (this version reads "
            f"{list(SUPPORTED_VERSIONS)}); {hint}."
        )
    try:
        typed = RunFile.model_validate(data)
    except ValidationError as exc:
        raise ReportInputError(f"{path}: {schema_problem(exc, data)}") from None
    return ResultsFile(path=path, data=typed, artifact_roots=_artifact_roots(path, typed))


def schema_problem(exc: ValidationError, data: dict[str, Any]) -> str:
    """A results file's schema errors, each named by its field (a case by its id), and the fix."""
    problems = []
    for error in exc.errors()[:5]:
        where = list(error["loc"])
        if len(where) > 1 and where[0] == "cases" and isinstance(where[1], int):
            case = data["cases"][where[1]]
            name = case.get("case_id") if isinstance(case, dict) else None
            where = [f"case {name or f'cases[{where[1]}]'}", *where[2:]]
        field_name = ".".join(str(w) for w in where)
        what = "missing" if error["type"] == "missing" else error["msg"]
        problems.append(f"{field_name}: {what}")
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return ("not a valid results file: " + "; ".join(problems) + more + "; the file is "
            "incomplete or was edited — re-run the audit (finished cases are kept in "
            "runs/<id>/cases/ and are not recomputed).")


def _artifact_roots(path: Path, data: RunFile) -> list[Path]:
    """Folders an artifact path (``artifacts/<case>/<file>.png``) may be relative to, in order."""
    here = path.resolve().parent
    roots = [here]
    if here.parent.name == "runs":  # <results>/runs/<id>/results.json
        roots.append(here.parent.parent)
    recorded = data.run.options.get("results_dir")
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
    fields: dict[str, Any] = {"toolkit version": run.toolkit_version}
    fields.update({f"option {key}": run.options.get(key) for key in COMPARED_OPTIONS})
    fields["tier settings"] = run.tier_settings or None
    for case in file.cases:
        for role, model in (("model", case.model), ("transfer_model", case.transfer_model)):
            if model is not None and model.fingerprint:
                label = f"{role.replace('_', ' ')} fingerprint ({model.id})"
                fields[label] = model.fingerprint
        code = case.protection.code
        if code is not None:  # one per protection (an audit may list several)
            name = case.protection.spec or case.protection.name
            fields[f"protection code fingerprint ({name})"] = code.sha256
        scenario = case.scenario
        if scenario.definition_hash:
            fields[f"definition hash of scenario '{scenario.id}'"] = scenario.definition_hash
        subject = case.subject
        if subject.content_hash:
            fields[f"content hash of subject '{subject.name}'"] = subject.content_hash
    return fields


def merge_results(files: list[ResultsFile]) -> Merged:
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
    cases: list[SourcedCase] = []
    for file in files:
        for case in file.cases:
            if case.case_id in seen:
                raise ReportInputError(
                    f"{file.path}: case {case.case_id!r} is also in {seen[case.case_id]}; "
                    "each case must come from one shard — drop one file, or run the shards with "
                    "disjoint -k selections."
                )
            seen[case.case_id] = file.path
            cases.append(SourcedCase(case, str(file.path), list(file.artifact_roots)))
    return Merged(runs=[SourcedRun(file.run, str(file.path)) for file in files], cases=cases)
