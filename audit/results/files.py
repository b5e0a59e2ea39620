"""The results record: one JSON record per case, aggregated into one results file per audit.

Each finished case is written at once to ``<results>/runs/<run id>/cases/<case>.json``
(atomically), so an interrupted or crashing audit never loses the cases that finished, and
xdist workers need no coordination; the aggregated ``results.json`` is rewritten from those
files after each case (without xdist) and at the end of the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from audit.results.schema import SCHEMA, SCHEMA_VERSION, CaseRecord, RunFile, load_case

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ResultsWriter", "case_file_stem", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=_default, allow_nan=True)
    os.replace(tmp, path)


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def case_file_stem(case_id: str) -> str:
    """A file name for a case id: the id itself when it is safe, else the sanitised id plus a
    hash of the exact id, so that ids which sanitise alike ('alice 1', 'alice_1') never share
    a file (and so never replace each other's record or artifacts)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)
    if safe == case_id:
        return safe
    return f"{safe}-{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"


class ResultsWriter:
    def __init__(self, results_dir: Path, run_id: str) -> None:
        self.results_dir = Path(results_dir)
        self.run_id = run_id
        self.run_dir = self.results_dir / "runs" / run_id
        self.cases_dir = self.run_dir / "cases"

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.json"

    @property
    def latest_path(self) -> Path:
        return self.results_dir / "results.json"

    def write_case(self, record: CaseRecord) -> Path:
        path = self.cases_dir / f"{case_file_stem(record.case_id)}.json"
        write_json_atomic(path, record.dump())
        return path

    def publish_latest(self, path: Path, name: str) -> Path:
        """Copy one of this run's files to the results folder's top level, atomically (a reader
        sees the old file or the new one, never a mix); the file itself names its run."""
        target = self.results_dir / name
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.results_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(Path(path).read_bytes())
        os.replace(tmp, target)
        return target

    def cases(self) -> list[CaseRecord]:
        """This run's case records (each validated; a file being written is skipped)."""
        records = []
        for path in sorted(self.cases_dir.glob("*.json")):
            try:
                records.append(load_case(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, json.JSONDecodeError):
                continue
        return records

    def aggregate(self, run: dict[str, Any]) -> Path:
        """Write the results file of this run (and a copy as <results>/results.json)."""
        cases = self.cases()
        if run.get("interrupted"):
            done = {c.case_id for c in cases}
            run = {**run, "not_run": [c for c in run.get("selected_cases") or [] if c not in done]}
        counts: dict[str, int] = {}
        for c in cases:
            counts[c.outcome] = counts.get(c.outcome, 0) + 1
        data = RunFile.model_validate({
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "run": {**run, "run_id": self.run_id, "written": time.time()},
            "summary": {"cases": len(cases), "outcomes": counts},
            "cases": cases,
        }).dump()
        write_json_atomic(self.results_path, data)
        write_json_atomic(self.latest_path, data)
        return self.results_path
