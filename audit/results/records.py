"""The parts of a case record that describe its inputs: the record's start, the subject, the
plan, each exploit run, the scenario definition (typed: ``audit/results/schema.py``)."""

from __future__ import annotations

import time
from typing import Any

from audit import __version__
from audit.config.options import AuditOptions
from audit.config.scenario import Scenario
from audit.data.subjects import Subject
from audit.results.schema import (
    CacheEvents,
    CaseRecord,
    ExploitRun,
    PlanRecord,
    PlanRun,
    PlanVariant,
    ProtectionRecord,
    ScenarioRecord,
    SubjectRecord,
)
from audit.run.planner import CasePlan, Run
from audit.run.stages import ExploitOutput


def new_record(case_id: str, options: AuditOptions, scenario: ScenarioRecord, subject: str,
               tier: str, protection: str | None = None) -> CaseRecord:
    """A case's record as it starts: an error until the case says otherwise (its time, timings
    and cache events are set when it ends). ``protection`` is the case's item of
    ``--protection`` (which may list several), the whole option by default."""
    return CaseRecord(
        case_id=case_id, protection=ProtectionRecord(name=protection or options.protection),
        scenario=scenario,
        subject=SubjectRecord(name=subject), tier=tier, seed=options.seed,
        toolkit_version=__version__, outcome="error", reason="", metrics={}, variants=[],
        flags=[], error=None, started=time.time(), seconds=0.0, timings=[], cache=CacheEvents())


def subject_record(subject: Subject, resolution: int) -> SubjectRecord:
    return SubjectRecord(name=subject.name, kind=subject.kind.name, source=subject.source,
                         files=list(subject.files),
                         notes=list(subject.notes), content_hash=subject.content_hash,
                         n_images=len(subject.images), resolution=resolution)


def plan_record(plan: CasePlan) -> PlanRecord:
    return PlanRecord(
        replicates=plan.replicates, seeds=list(plan.seeds),
        standard_exploit=plan.standard_exploit.to_dict(),
        variants=[PlanVariant(label=v.label, attack=[a.to_dict() for a in v.attack],
                              exploit=v.exploit.to_dict(), matched_control=v.changes_exploit,
                              exploit_params_origin=v.origin) for v in plan.variants],
        runs=[PlanRun(run=r.label(), role=r.role, variant=r.variant, replicate=r.replicate,
                      seed=r.seed, chain=[s.label() for s in r.chain], exploit=r.exploit.name)
              for r in plan.runs],
        distinct_exploits=len(plan.unique_runs()), notes=list(plan.notes),
        adaptation=plan.adaptation.to_dict() if plan.adaptation is not None else None,
        text=plan.table())


def exploit_record(run: Run, output: ExploitOutput) -> ExploitRun:
    return ExploitRun(label=run.label(), role=run.role, variant=run.variant,
                      replicate=run.replicate, seed=run.seed, finetune=dict(run.exploit.params),
                      weights_key=output.weights_key, cache_key=output.generations_key,
                      info=output.info)


def scenario_record(scenario: Scenario) -> ScenarioRecord:
    data: dict[str, Any] = scenario.model_dump()
    data["definition_hash"] = scenario.definition_hash()
    return ScenarioRecord.model_validate(data)
