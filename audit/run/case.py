"""The flow of one case: plan → images → exploits → metrics → verdict → checks.

A case is planned first (``audit/run/planner.py``: its runs by role × replicate), then each
distinct run's images, exploit and metric values are computed through the cached stages
(``audit/run/stages.py``), so the clean and protected replicates are computed once per audit
and shared by every scenario, and a rerun recomputes nothing. The shared resources (model,
cache, protection, subjects, worker pool) are the session's (``audit/run/session.py``).
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from audit.config.scenario import Scenario
from audit.config.settings import GenerationSettings
from audit.data.images import png_bytes, to_uint8
from audit.data.kinds import PERSON, SubjectKind
from audit.data.subjects import Subject
from audit.errors import AuditError, BudgetExceeded
from audit.judge.case import CaseJudge, metric_choice
from audit.parts import EXPLOITS
from audit.parts.exploits import trains
from audit.parts.protections.eot import objective_missing
from audit.results.files import case_file_stem
from audit.results.records import (
    exploit_record,
    new_record,
    plan_record,
    scenario_record,
    subject_record,
)
from audit.results.schema import CacheEvents, CaseRecord, ErrorRecord, Timing, UntrainedRun
from audit.run.planner import CasePlan
from audit.run.stages import ExploitOutput

if TYPE_CHECKING:
    from audit.parts.exploits.editing import EditParams
    from audit.run.session import AuditSession

MAX_SAVED_GENERATIONS = 12


class CaseRun:
    """One (protection × scenario × subject) case of an audit session."""

    def __init__(self, session: AuditSession, scenario: Scenario, subject_name: str,
                 case_id: str, protection: str | None = None) -> None:
        self.session = session
        self.scenario = scenario
        self.subject_name = subject_name
        self.case_id = case_id
        # one item of --protection (the audit may list several); the first by default
        self.protection = protection or session.options.protections[0]
        self.judge = CaseJudge(session.tier, session.options.seed)
        self.kind: SubjectKind = PERSON  # read from the subject at the start of the run

    @property
    def generation(self) -> GenerationSettings:
        """The tier's generation settings, with the evaluation prompts of the subject's kind."""
        return kind_generation(self.session.tier.generation, self.kind)

    def run(self) -> CaseRecord:
        """Run one (protection × scenario × subject) case; never raises: errors are recorded."""
        started = time.time()
        self.session.cache.take_events()
        self.session.progress.take_timings()
        record = new_record(self.case_id, self.session.options, scenario_record(self.scenario),
                            self.subject_name, self.session.tier.name, self.protection)
        try:
            self._run(record)
        except Exception as exc:
            record_failure(record, exc)
        record.seconds = round(time.time() - started, 3)
        record.timings = [Timing.model_validate(t) for t in self.session.progress.take_timings()]
        record.cache = CacheEvents.model_validate(self.session.cache.take_events().to_dict())
        return record

    def _run(self, record: CaseRecord) -> None:
        scenario, case_id = self.scenario, self.case_id
        self.kind = self.session.subject_kind(self.subject_name)
        audited = self.session.audited(self.protection, self.kind)
        missing = (objective_missing(audited.protection)
                   if "objective" in scenario.requires else None)
        if missing is not None:
            record.outcome, record.reason = "skipped", (
                f"skipped: scenario '{scenario.id}' re-crafts the protection through its "
                f"objective, and protection '{audited.protection.name}' ({audited.spec}) has "
                f"none the toolkit can see: {missing}")
            return
        plan = self.session.plan(scenario, self.protection, self.kind)
        record.plan = plan_record(plan)
        edit = editing_params(plan)
        why = edit.unavailable(self.session.model) if edit is not None else None
        if why is not None:
            record.outcome, record.reason = "skipped", f"skipped: scenario '{scenario.id}': {why}"
            return
        if uses_transfer(plan) and not self.session.options.transfer_model_spec:
            record.outcome, record.reason = "skipped", (
                f"skipped: scenario '{scenario.id}' fine-tunes the transfer model (PID §6.3), and "
                f"none is set for --model={self.session.options.model}: pass --transfer-model (a "
                "Hugging Face id or a local diffusers folder)")
            return
        record.protection = self.session.protection_record(self.protection, self.kind)
        record.model = self.session.model_record()
        if uses_transfer(plan):  # the report names both models and their hashes
            record.transfer_model = self.session.model_record(self.session.transfer_model)
        record.device = str(self.session.device)
        subject = self.session.subject(self.subject_name)
        record.subject = subject_record(subject, self.session.resolution)
        images = self.run_images(plan, subject, record)
        outputs = self.run_exploits(plan, images)
        record.exploits = {run.label(): exploit_record(run, outputs[run.identity])
                           for run in plan.runs}
        choice = metric_choice(self.session.tier, self.session.resolution, scenario, self.kind,
                               edit.metrics if edit is not None else None)
        if choice.note is not None:
            record.verdict_metric_note = choice.note
        if edit is not None:  # nothing trained: no untrained reference (audit/judge/case.py)
            untrained: list[torch.Tensor] = []
            values = measure_edits(self.session, plan, outputs, choice.names)
            judgement = self.judge.judge(plan, scenario, values, choice.verdict_metric,
                                         note=choice.note, editing=True)
        else:
            untrained = self.run_untrained(plan, record)
            values = self.measure(plan, outputs, subject, choice.names)
            judgement = self.judge.judge(
                plan, scenario, values, choice.verdict_metric, note=choice.note,
                untrained=self.measure_untrained(untrained, subject, choice.names))
        record.apply(judgement)
        record.artifacts = self.save_artifacts(case_id, plan, subject, images, outputs,
                                               judgement.worst_variant, untrained=untrained)

    def run_images(
            self, plan: CasePlan, subject: Subject,
            record: CaseRecord) -> dict[tuple, torch.Tensor]:
        """The 8-bit training images of every run: its chain applied to the subject (cached)."""
        clean = to_uint8(subject.images)
        images: dict[tuple, torch.Tensor] = {}
        record.protection_runs = []
        for run in plan.unique_runs():
            current = clean
            for step in run.chain:
                # the null baseline's noise
                if step.kind == "protection" and step.spec != plan.protection:
                    current = self.session.null_protected(subject, step)
                elif step.kind == "protection":
                    current = self.session.protected(subject, step, record, self.protection)
                else:
                    current = self.session.stages.transform(step, current, record.flags)
            images[run.identity] = current
        return images

    def run_untrained(self, plan: CasePlan, record: CaseRecord) -> list[torch.Tensor]:
        """The untrained reference, per replicate: the base model's generations with the replicate's
        prompts, settings and seed, no fine-tune (cached once per model, settings and seed, so
        shared by every case and rerun of the audit)."""
        generation = self.generation
        out: list[torch.Tensor] = []
        record.untrained = []
        for r, seed in enumerate(plan.seeds):
            generations, key = self.session.stages.untrained(
                plan.standard_exploit, generation, seed)
            out.append(generations)
            record.untrained.append(UntrainedRun(
                replicate=r, seed=seed, cache_key=key,
                what="base model, no fine-tune: the exploits' prompts, settings and seed"))
        return out

    def measure_untrained(self, untrained: list[torch.Tensor], subject: Subject,
                          names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every metric on the untrained reference of every replicate, against the clean subject."""
        reference = to_uint8(subject.images)
        with self.session.progress.stage(f"metrics: {', '.join(names)} on the untrained reference"):
            return {name: [self.session.stages.metric(name, g, reference) for g in untrained]
                    for name in names}

    def run_exploits(
            self, plan: CasePlan, images: dict[tuple, torch.Tensor]) -> dict[tuple, ExploitOutput]:
        """Every distinct run's fine-tune and generations: cached ones read here, the others
        computed side by side in worker processes when there are several
        (``audit/run/workers.py``, one GPU each on CUDA) or as Ray tasks (``--executor ray``,
        ``audit/run/ray_executor.py``)."""
        generation = self.generation
        runs = plan.unique_runs()
        # Editing runs (seconds each, nothing trained) stay here; fine-tunes go to the workers.
        pending = [r for r in runs if trains(r.exploit.name)
                   and not self.session.stages.exploit_cached(r, images[r.identity], generation)]
        outputs: dict[tuple, ExploitOutput] = {}
        executor = self.session.executor(len(pending))
        if executor is not None:
            with self.session.progress.stage(f"exploits: {len(pending)} runs in "
                                             f"{executor.describe(len(pending))}",
                                             total=len(pending), unit="runs") as stage:
                jobs = [(run, images[run.identity], generation) for run in pending]
                for run, (output, timings, events) in zip(pending, executor.run(
                        jobs, lambda run, _: stage.advance(1, run.label())), strict=True):
                    outputs[run.identity] = output
                    self.session.progress.timings.extend({**t, "worker": True} for t in timings)
                    self.session.cache.merge_events(events)
        for run in runs:
            if run.identity not in outputs:
                outputs[run.identity] = self.session.stages.exploit(
                    run, images[run.identity], generation)
        return outputs

    def measure(self, plan: CasePlan, outputs: dict[tuple, ExploitOutput], subject: Subject,
                names: list[str]) -> dict[str, dict[tuple, dict[str, Any]]]:
        """Every metric on every distinct run's generations, against the clean subject images."""
        reference = to_uint8(subject.images)
        runs = plan.unique_runs()
        with self.session.progress.stage(f"metrics: {', '.join(names)} on {len(runs)} exploits"):
            return {name: {run.identity: self.session.stages.metric(
                name, outputs[run.identity].generations, reference)
                           for run in runs} for name in names}

    def save_artifacts(self, case_id: str, plan: CasePlan, subject: Subject,
                       images: dict[tuple, torch.Tensor],
                       outputs: dict[tuple, ExploitOutput], worst: int,
                       untrained: list[torch.Tensor] | None = None) -> dict[str, list[str]]:
        """PNG files of replicate 1's inputs and generations under results_dir/artifacts/<case>."""
        folder = self.session.artifacts_dir / case_file_stem(case_id)
        folder.mkdir(parents=True, exist_ok=True)
        protected, attacked = plan.runs_for("protected")[0], plan.runs_for("attacked", worst)[0]
        groups = {
            "clean": to_uint8(subject.images),
            "protected": images[protected.identity],
            "attacked_input": images[attacked.identity],
            "generated_clean": saved_generations(outputs[plan.runs_for("clean")[0].identity]),
            "generated_protected": saved_generations(outputs[protected.identity]),
            "generated_attacked": saved_generations(outputs[attacked.identity]),
        }
        control = plan.runs_for("control", worst)
        if control:
            groups["generated_control"] = saved_generations(outputs[control[0].identity])
        if untrained:
            groups["generated_untrained"] = untrained[0][:MAX_SAVED_GENERATIONS]
        null = plan.runs_for("null_baseline")
        if null:
            groups["generated_null_baseline"] = saved_generations(outputs[null[0].identity])
        return write_pngs(folder, groups, self.session.results_dir)


def record_failure(record: CaseRecord, exc: Exception) -> None:
    """A case that raised: over its budget is a fail (its own answer, summary.audit_answer),
    anything else an error with its traceback."""
    if isinstance(exc, BudgetExceeded):
        record.outcome, record.reason, record.budget_exceeded = "fail", str(exc), True
        record.flags.append("protection exceeds its budget")
        return
    record.outcome, record.reason = "error", f"{type(exc).__name__}: {exc}"
    record.error = ErrorRecord(type=type(exc).__name__, message=str(exc),
                               user_error=isinstance(exc, AuditError),
                               traceback=traceback.format_exc())


def kind_generation(settings: GenerationSettings, kind: SubjectKind) -> GenerationSettings:
    """Generation settings with the evaluation prompts of a subject's kind (unchanged for a
    person)."""
    if kind is PERSON:
        return settings
    return settings.model_copy(update={"prompts": kind.eval_prompts_for(tuple(settings.prompts))})


def saved_generations(output: ExploitOutput) -> torch.Tensor:
    """The generations of a run that are saved as files (the first ``MAX_SAVED_GENERATIONS``)."""
    return output.generations[:MAX_SAVED_GENERATIONS]


def write_pngs(folder: Path, groups: dict[str, torch.Tensor], root: Path) -> dict[str, list[str]]:
    """Each group's images as ``<group>_<i>.png`` in ``folder``; the paths relative to ``root``."""
    saved: dict[str, list[str]] = {}
    for group, batch in groups.items():
        saved[group] = []
        for i, image in enumerate(batch):
            path = folder / f"{group}_{i:02d}.png"
            path.write_bytes(png_bytes(image))
            saved[group].append(str(path.relative_to(root)))
    return saved


def measure_edits(session: AuditSession, plan: CasePlan, outputs: dict[tuple, ExploitOutput],
                  names: list[str]) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every metric on every distinct run's edits, against the clean run's edits of the same
    replicate, slot by slot (the editing exploits' reference: PhotoGuard Table 6)."""
    clean = {run.replicate: outputs[run.identity].generations for run in plan.runs_for("clean")}
    runs = plan.unique_runs()
    with session.progress.stage(f"metrics: {', '.join(names)} on {len(runs)} runs' edits against "
                                "the clean edits"):
        return {name: {run.identity: session.stages.metric(
            name, outputs[run.identity].generations, clean[run.replicate]) for run in runs}
                for name in names}


def editing_params(plan: CasePlan) -> EditParams | None:
    """The editing exploit's parameters when the case's standard exploit is one (the planner makes
    an editing scenario's exploit the standard one), else None."""
    from audit.parts.exploits.editing import EditParams

    spec = plan.standard_exploit
    params = EXPLOITS.get(spec.name).validate(spec.params)
    return params if isinstance(params, EditParams) else None


def uses_transfer(plan: CasePlan) -> bool:
    """Whether any run of the plan fine-tunes the transfer model (``model: transfer``)."""
    return any(run.exploit.params.get("model") == "transfer" for run in plan.runs)
