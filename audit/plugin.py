"""The pytest plugin: ``pytest --protection=NAME[,NAME...]`` runs the scenario catalogue as test
cases.

Registered through the ``pytest11`` entry point (``pip install`` the toolkit, then run pytest
in any project); the checkout's root ``conftest.py`` loads it only when it is not installed.
With ``--protection`` given and no explicit paths, the session collects ``audit/cases.py``
alone, and each protection × scenario file × subject becomes one parametrized ``test_scenario``
item.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from audit.errors import AuditError
from audit.results.schema import CaseRecord

CASES_MODULE = Path(__file__).resolve().parent / "cases.py"
_RECORDS_KEY = pytest.StashKey[list]()
_RUN_KEY = pytest.StashKey[dict]()


class _Single(argparse.Action):
    """Stores an option as argparse's ``store`` does, and keeps every value given, so that an
    option given twice with different values (``--protection=pid --protection=random``) is
    refused at start-up instead of the last one winning silently."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str
                 | None = None) -> None:
        setattr(namespace, self.dest, values)
        given = dict(getattr(namespace, "audit_given", None) or {})
        given.setdefault(option_string or self.dest, []).append(values)
        namespace.audit_given = given


def repeated_options(config: pytest.Config) -> str | None:
    """The usage error for a single-valued audit option given with different values, or None."""
    for option, values in (getattr(config.option, "audit_given", None) or {}).items():
        distinct = list(dict.fromkeys(values))
        if len(distinct) > 1:
            name = option.split("=")[0]
            return (f"{name} is given {len(values)} times with different values "
                    f"({', '.join(map(str, distinct))}); an audit takes one {name}: give it once "
                    "(a run per value audits each; --protection takes a comma-separated list).")
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("protection-audit", "protection robustness audit")
    group.addoption("--protection", action=_Single, default=None, help="protection to audit: a "
            "built-in (python -m audit ls protections), dir:PATH or package.module:factory; or a "
            "comma-separated list of them (pid,photoguard-encoder,random), audited side by side "
            "in one run")
    group.addoption("--model", action=_Single, default="tiny", help="'tiny' (built-in, default), a "
            "Hugging Face id, or a local diffusers folder")
    group.addoption("--transfer-model", action=_Single, default=None, metavar="MODEL",
                    help="the exploiter's model in transfer scenarios (PID §6.3): a Hugging Face "
                         "id or a local diffusers folder; default on the built-in models: the "
                         "other one (tiny ↔ tiny-2)")
    group.addoption("--tier", action=_Single, default="smoke",
                    choices=["smoke", "standard", "paper"], help="compute tier (default smoke)")
    group.addoption("--data", action=_Single, default=None, help="subject images: DIR with one "
            "sub-folder per subject (default: bundled subject)")
    group.addoption("--subject-kind", action=_Single, default=None, choices=["person", "style"],
                    help="what every subject is: person (a face; default) or style (an artist's "
                         "style); without it a subject folder's subject.yaml says, else person. "
                         "Without --data: the bundled subject of that kind")
    group.addoption("--results-dir", action=_Single, default="audit-results",
                    help="results folder: cache, results JSON, artifacts")
    group.addoption("--device", action=_Single, default="auto", help="auto (cuda, then mps, then "
            "cpu), cpu, cuda, cuda:N, mps")
    group.addoption("--seed", action=_Single, default=0, type=int, help="seed of every random "
            "stage (default 0)")
    group.addoption("--scenarios", action=_Single, default=None, help="scenario folder (default: "
            "the bundled catalogue)")
    group.addoption("--allow-download", action="store_true", help="let --model fetch from the "
            "Hugging Face hub")
    group.addoption("--audit-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one tier setting (marks the run non-standard), e.g. "
                         "dreambooth.steps=20")
    group.addoption("--replicates", action=_Single, default=None, type=int, metavar="K",
                    help="independent replicates of every random stage (default: the tier's, 3)")
    group.addoption("--epsilon", action=_Single, default=None, type=float,
                    help="ℓ∞ budget in [0,1] units: judged for a dir: protection, overrides a "
                         "built-in's")
    _add_placement_options(group)
    group.addoption("--exploit", action=_Single, default=None, metavar="EXPLOIT",
                    help="the standard exploit: dreambooth (default) or lora, with parameters in "
                         "the scenario grammar, e.g. --exploit='lora: {rank: 32}'; scenarios "
                         "written 'exploit: {standard: ...}' (or without an exploit) use it, "
                         "scenarios that name an exploit keep theirs (with a matched control)")
    group.addoption("--full-catalogue", action="store_true",
                    help="run every scenario, not only the tier's default selection (smoke: tag "
                         "'smoke')")
    group.addoption("--report", default=None, metavar="PATH",
                    help="HTML robustness report to write at the end (default: "
                         "<results-dir>/report.html)")
    group.addoption("--no-audit-cache", action="store_true", help="recompute every stage (ignore "
            "the cache)")


def _add_placement_options(group: Any) -> None:
    """Where the exploit runs are computed: worker processes, GPUs, a Ray cluster."""
    group.addoption("--exploit-workers", default=None, type=int, metavar="N",
                    help="processes that fine-tune side by side (default: one per CPU core, at "
                         "most 4; 1 on a GPU)")
    group.addoption("--runs-per-gpu", action=_Single, default=1, type=int, metavar="N",
                    help="exploit runs side by side on each GPU (default 1; more where its memory "
                         "allows): the runs spread over every visible GPU, xdist worker gwN on "
                         "GPU N mod count")
    group.addoption("--executor", action=_Single, default="local", choices=["local", "ray"],
                    help="where pending exploit runs are computed: local (this machine's GPUs or "
                         "CPU cores, default) or ray (one Ray task per run, one GPU each; "
                         "pip install 'protection-audit[ray]')")
    group.addoption("--ray-address", action=_Single, default=None, metavar="ADDRESS",
                    help="the Ray cluster for --executor=ray, e.g. ray://head:10001 or auto "
                         "(default: a local Ray started for the run)")


def _active(config: pytest.Config) -> bool:
    return config.getoption("protection", None) is not None


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "audit: a protection-audit scenario case")
    if not _active(config):
        return
    from audit.config.options import AuditOptions
    from audit.config.tiers import parse_overrides

    repeated = repeated_options(config)
    if repeated:
        raise pytest.UsageError(repeated)
    try:
        overrides = parse_overrides(config.getoption("audit_set"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    data = config.getoption("data")
    scenarios = config.getoption("scenarios")
    options = AuditOptions(
        protection=config.getoption("protection"),
        model=config.getoption("model"),
        transfer_model=config.getoption("transfer_model"),
        tier=config.getoption("tier"),
        data=Path(data).expanduser().resolve() if data else None,
        results_dir=Path(config.getoption("results_dir")).expanduser().resolve(),
        device=config.getoption("device"),
        seed=config.getoption("seed"),
        scenarios=Path(scenarios).expanduser().resolve() if scenarios else None,
        allow_download=config.getoption("allow_download"),
        overrides=overrides,
        no_cache=config.getoption("no_audit_cache"),
        replicates=config.getoption("replicates"),
        epsilon=config.getoption("epsilon"),
        full_catalogue=config.getoption("full_catalogue"),
        exploit_workers=config.getoption("exploit_workers"),
        exploit=config.getoption("exploit"),
        runs_per_gpu=config.getoption("runs_per_gpu"),
        executor=config.getoption("executor"),
        ray_address=config.getoption("ray_address"),
        subject_kind=config.getoption("subject_kind"),
    )
    from audit.config.startup import check_options

    check_options(options, collect_only=bool(config.getoption("collectonly")))
    # metric weights load through their libraries (audit/parts/metrics/weights.py)
    if options.allow_download:
        os.environ["PROTECTION_AUDIT_ALLOW_DOWNLOAD"] = "1"
    config.stash[_RECORDS_KEY] = []
    run_id = (config.workerinput["audit_run_id"] if _is_worker(config)  # type: ignore[attr-defined]
              else time.strftime("%Y%m%d-%H%M%S") + f"-{uuid.uuid4().hex[:6]}")
    config.stash[_RUN_KEY] = {"options": options, "run_id": run_id, "started": time.time()}
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(CASES_MODULE)]
    elif str(CASES_MODULE) not in config.args:
        config.args = [*config.args, str(CASES_MODULE)]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist hook: share the run id with workers
    run = node.config.stash.get(_RUN_KEY, None)
    if run is not None:
        node.workerinput["audit_run_id"] = run["run_id"]


@dataclass(frozen=True)
class AuditCase:
    """One collected case: a protection, a scenario file and a subject, or the error that stops
    it."""

    case_id: str
    scenario_path: str
    scenario: Any = None  # audit.config.scenario.Scenario
    subject: str | None = None
    error: str | None = None
    protection: str | None = None  # the item of --protection (None: the whole option)

    def __repr__(self) -> str:
        return f"AuditCase({self.case_id})"


def _id_prefix(protection: str) -> str:
    """A case id starts with its protection's spec, made safe for a test id."""
    return protection.replace(":", "_").replace("/", "_")


def _build_cases(config: pytest.Config) -> list[tuple[AuditCase, list[str]]]:
    """Every (protection × scenario × subject) case, protection by protection; with one
    protection the ids are '<protection>-<scenario>-<subject>' as they always were."""
    from audit.config.scenario import catalogue_files, load_scenario
    from audit.data.subjects import discover_subjects

    options = config.stash[_RUN_KEY]["options"]
    try:
        files = catalogue_files(options.scenarios)
    except AuditError as exc:
        return [(AuditCase(f"{_id_prefix(options.protection)}-catalogue", str(options.scenarios),
                           error=str(exc)), [])]
    subject_error = None
    try:
        subjects = discover_subjects(options.data, options.subject_kind)
    except AuditError as exc:
        subjects, subject_error = ["no-subject"], str(exc)
    tag = None if options.full_catalogue else options.tier_settings.data.get("catalogue_tag")
    loaded, left_out = [], []
    for path in files:
        try:
            scenario, error = load_scenario(path), None
            tags = list(scenario.tags)
        except AuditError as exc:
            scenario, error, tags = None, str(exc), []
        if scenario is not None and tag and tag not in tags:
            left_out.append(path.stem)
            continue
        loaded.append((path, scenario, error, tags))
    cases = [(AuditCase(f"{_id_prefix(protection)}-{path.stem}-{subject}", str(path), scenario,
                        subject, error or subject_error, protection), tags)
             for protection in options.protections
             for path, scenario, error, tags in loaded for subject in subjects]
    cases = _unique_ids(cases)
    config.stash[_RUN_KEY]["left_out"] = left_out
    config.stash[_RUN_KEY]["selection"] = (
        f"tier '{options.tier}' default selection: scenarios tagged '{tag}'" if tag
        else "the full catalogue")
    return cases


def _unique_ids(cases: list[tuple[AuditCase, list[str]]]) -> list[tuple[AuditCase, list[str]]]:
    """Case ids that collide (scenario 'a-b' × subject 'c' and 'a' × 'b-c'; protections alike)
    get a stable suffix from the scenario file and subject (and, in an audit of several
    protections, the protection) that made them, so no record ever replaces another."""
    import hashlib
    from collections import Counter
    from dataclasses import replace

    counts = Counter(case.case_id for case, _ in cases)
    several = len({case.protection for case, _ in cases}) > 1
    out = []
    for case, tags in cases:
        if counts[case.case_id] > 1:
            what = f"{Path(case.scenario_path).name}|{case.subject}"
            what = f"{case.protection}|{what}" if several else what
            digest = hashlib.sha256(what.encode()).hexdigest()[:6]
            case = replace(case, case_id=f"{case.case_id}~{digest}")
        out.append((case, tags))
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "audit_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if not _active(config):
        pytest.skip("protection-audit cases run only with --protection=NAME")
    params = []
    for case, tags in _build_cases(config):
        marks = [pytest.mark.audit]
        for tag in tags:
            config.addinivalue_line("markers", f"{tag}: scenario tag")
            marks.append(getattr(pytest.mark, tag))
        params.append(pytest.param(case, id=case.case_id, marks=marks))
    metafunc.parametrize("audit_case", params)


class AuditRun:
    """Session-wide runner: runs cases, writes each record at once, keeps the results file
    current."""

    def __init__(self, config: pytest.Config) -> None:
        from audit.results.files import ResultsWriter
        from audit.run.progress import Progress
        from audit.run.session import AuditSession

        run = config.stash[_RUN_KEY]
        self.config = config
        self.options = run["options"]
        self.session = run.get("session") or AuditSession(self.options,
                                                          Progress(_terminal_writer(config)))
        self.writer = ResultsWriter(self.options.results_dir, run["run_id"])
        self.session.artifacts_dir = self.writer.run_dir / "artifacts"
        run["audit_run"] = self

    def run(self, case: AuditCase) -> CaseRecord:
        if case.error is not None:
            from audit.results.records import scenario_record
            from audit.results.schema import (
                CacheEvents,
                ErrorRecord,
                ProtectionRecord,
                ScenarioRecord,
                SubjectRecord,
            )

            record = CaseRecord(
                case_id=case.case_id,
                protection=ProtectionRecord(name=case.protection or self.options.protection),
                scenario=scenario_record(case.scenario) if case.scenario
                else ScenarioRecord(id=Path(case.scenario_path).stem, path=case.scenario_path),
                subject=SubjectRecord(name=case.subject),
                tier=self.options.tier, seed=self.options.seed, outcome="error",
                reason=case.error, metrics={}, variants=[], flags=[],
                error=ErrorRecord(type="input", message=case.error, user_error=True,
                                  traceback=None),
                seconds=0.0, timings=[], cache=CacheEvents(hits=[], misses=[], corrupt=[]))
        else:
            self.session.progress.write(f"  case {case.case_id}")
            record = self.session.run_case(case.scenario, case.subject,  # type: ignore[arg-type]
                                           case.case_id, case.protection)
        self.writer.write_case(record)
        self.config.stash[_RECORDS_KEY].append(record)
        if not _is_worker(self.config):
            self.writer.aggregate(run_record(self.config))
        return record


def _terminal_writer(config: pytest.Config):
    if _is_worker(config):
        return None
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return None

    def write(line: str) -> None:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(line)
        else:
            reporter.write_line(line)

    return write


@pytest.fixture(scope="session")
def audit_run(request: pytest.FixtureRequest) -> AuditRun:
    """The audit's shared state: model, cache, protection, results writer."""
    return AuditRun(request.config)


def run_record(config: pytest.Config) -> dict[str, Any]:
    from audit.results.provenance import run_provenance

    run = config.stash[_RUN_KEY]
    options = run["options"]
    return {
        **run_provenance(options),
        "interrupted": bool(run.get("interrupted")),
        "selected_cases": run.get("selected") or [],
        "not_run": [],
        "selection": run.get("selection"),
        "left_out_scenarios": run.get("left_out") or [],
        "command_line": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "invocation_dir": str(config.invocation_params.dir),
        "started": run["started"],
        "finished": time.time(),
        "reproduce": reproduce_command(options),
    }


def reproduce_command(options: Any) -> str:
    parts = ["pytest", f"--protection={options.protection}", f"--model={options.model}",
             f"--tier={options.tier}", f"--seed={options.seed}"]
    if options.transfer_model:
        parts.append(f"--transfer-model={options.transfer_model}")
    if options.data:
        parts.append(f"--data={options.data}")
    if options.subject_kind:
        parts.append(f"--subject-kind={options.subject_kind}")
    if options.scenarios:
        parts.append(f"--scenarios={options.scenarios}")
    if options.replicates is not None:
        parts.append(f"--replicates={options.replicates}")
    if options.epsilon is not None:
        parts.append(f"--epsilon={options.epsilon}")
    if options.full_catalogue:
        parts.append("--full-catalogue")
    if getattr(options, "exploit", None):
        parts.append(f"--exploit={options.exploit}")
    for key, value in _flat_overrides(options.overrides):
        if isinstance(value, list | tuple):
            value = "|".join(value)
        parts.append(f"--audit-set={key}={value}")
    return shlex.join(parts)


def _flat_overrides(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        name = f"{prefix}{key}" if key else prefix.rstrip(".")
        if isinstance(value, dict):
            out.extend(_flat_overrides(value, f"{name}." if name else ""))
        else:
            out.append((name, value))
    return out


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if _active(config) and _RUN_KEY in config.stash:
        cases = [item.callspec.params["audit_case"] for item in session.items
                 if hasattr(item, "callspec") and "audit_case" in item.callspec.params]
        config.stash[_RUN_KEY]["selected"] = [case.case_id for case in cases]
        if not _is_worker(config) and not config.getoption("collectonly"):
            _estimate_line(config, cases)


def _estimate_line(config: pytest.Config, cases: list[AuditCase]) -> None:
    """The start-up line: the work the selected cases still need after cache hits and its
    device-hours from a cached calibration (``audit/run/estimate.py``; ``python -m audit plan
    --estimate`` measures one). Never stops the audit."""
    from audit.run.estimate import estimate
    from audit.run.progress import Progress
    from audit.run.session import AuditSession

    write = _terminal_writer(config) or (lambda line: None)
    run = config.stash[_RUN_KEY]
    try:
        audit = AuditSession(run["options"], Progress(_terminal_writer(config)))
        selected = [(c.scenario, c.subject, c.protection) for c in cases
                    if c.error is None and c.scenario and c.subject]
        lines = estimate(audit, selected, run_calibration=False)[2]
        run["session"] = audit  # the audit goes on with it (model, protection already loaded)
    except Exception as exc:
        lines = [f"estimate: not available ({type(exc).__name__}: {exc})"]
    for line in lines:
        write(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not _active(config) or _RUN_KEY not in config.stash:
        return
    run = config.stash[_RUN_KEY]
    if run.get("audit_run") is not None:
        run["audit_run"].session.close()  # the exploit worker processes
    if _is_worker(config):
        return
    from audit.results.files import ResultsWriter

    run["interrupted"] = int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)
    writer = ResultsWriter(run["options"].results_dir, run["run_id"])
    if writer.cases_dir.is_dir() or run["interrupted"]:
        run["results_path"] = writer.aggregate(run_record(config))
        run["report"] = _write_report(config, run["results_path"], writer)


def _write_report(config: pytest.Config, results_path: Path, writer: Any) -> str:
    """Render this run's HTML report (its own file, also copied atomically to the results
    folder's 'latest' report.html); a report that cannot be drawn never costs the results JSON."""
    target = config.getoption("report") or str(writer.run_dir / "report.html")
    try:
        from reports import write_report

        path = write_report([results_path], Path(target).expanduser())
        if not config.getoption("report"):
            writer.publish_latest(path, "report.html")
    except Exception as exc:
        return (f"not written ({type(exc).__name__}: {exc}); retry with: python -m reports render "
                f"{results_path} -o {target}")
    return f"{path} ({path.stat().st_size / 1e6:.2f} MB)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _active(config) or _RUN_KEY not in config.stash:
        return
    run = config.stash[_RUN_KEY]
    path = run.get("results_path")
    if path is None:
        if run.get("left_out") and int(exitstatus) == int(pytest.ExitCode.NO_TESTS_COLLECTED):
            # Nothing ran, and the tier's default selection left scenarios out: say where they went.
            terminalreporter.write_line(
                f"no audit case ran: {run['selection']}, so these scenarios were not collected: "
                f"{', '.join(run['left_out'])}. Pass --full-catalogue to run them (with -k to pick "
                "some).")
        return
    import json

    from audit.results.schema import RunFile
    from audit.results.summary import summary_table

    data = RunFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    buffer = io.StringIO()
    summary_table(data.cases, run["options"], buffer, color=terminalreporter.isatty(),
                  run=data.run)
    terminalreporter.write_sep("=", "protection audit")
    for line in buffer.getvalue().rstrip("\n").splitlines():
        terminalreporter.write_line(line)
    if run.get("left_out"):
        terminalreporter.write_line(f"{run['selection']}; not run: {', '.join(run['left_out'])} "
                                    "(--full-catalogue runs them)")
    terminalreporter.write_line(f"results JSON: {path}")
    if run.get("report"):
        terminalreporter.write_line(f"HTML report: {run['report']}")
