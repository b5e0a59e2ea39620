"""The shared resources of one audit: options, cache and stages, the model (loaded once), the
protections under audit (``audit/run/audited.py``), the subjects and the worker pool. One
``AuditSession`` per pytest session; each case runs as a ``CaseRun`` over it
(``audit/run/case.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from audit.config.options import AuditOptions
from audit.config.scenario import Scenario
from audit.data.images import from_uint8
from audit.data.kinds import PERSON, SubjectKind
from audit.data.subjects import Subject, load_subject, subject_kind
from audit.parts.metrics.imperceptibility import imperceptibility
from audit.parts.protections.base import Protection, check_budget
from audit.results.schema import CaseRecord, ModelRecord, ProtectionRecord, ProtectionRun
from audit.run.audited import AuditedProtection
from audit.run.cache import Cache
from audit.run.case import CaseRun
from audit.run.fingerprint import CodeFingerprint
from audit.run.planner import CasePlan, plan_case
from audit.run.progress import Progress
from audit.run.stages import Stages

if TYPE_CHECKING:
    from audit.run.ray_executor import RayPool
    from audit.run.workers import ExploitPool


class AuditSession:
    """State shared by all cases of one audit (model, cache, protection, subjects)."""

    def __init__(self, options: AuditOptions, progress: Progress | None = None) -> None:
        self.options = options
        self.progress = progress or Progress()
        self.tier = options.tier_settings
        self.results_dir = Path(options.results_dir)
        # Each run keeps its own artifacts (runs/<id>/artifacts), so two audits into one results
        # folder never show each other's images; the plugin points this at its run's folder.
        self.artifacts_dir = self.results_dir / "artifacts"
        self.cache = Cache(self.results_dir / "cache", enabled=not options.no_cache)
        self.stages = Stages(self.cache, lambda: self.model, lambda: self.device,
                             lambda: self.resolution, self.progress,
                             transfer=(lambda: self.transfer_model) if options.transfer_model_spec
                             else None)
        self._model = None
        self._transfer_model = None
        self._device: torch.device | None = None
        self._audited: dict[tuple[str, str], AuditedProtection] = {}  # by (spec, kind)
        self._subjects: dict[str, Subject] = {}
        self._pool: ExploitPool | RayPool | None = None

    @property
    def device(self) -> torch.device:
        if self._device is None:
            from audit.diffusion import resolve_device
            from audit.run.placement import pin, visible_gpus, xdist_device

            device = resolve_device(self.options.device)
            # pytest-xdist worker gwN audits on GPU N mod count (audit/run/placement.py), made the
            # process's current CUDA device so that no library allocates on another one
            self._device = xdist_device(device, visible_gpus(device))
            pin(self._device)
        return self._device

    @property
    def model(self):
        if self._model is None:
            from audit.diffusion import load_model

            with self.progress.stage(f"load model '{self.options.model}'"):
                self._model = load_model(self.options.model, self.device,
                                         allow_download=self.options.allow_download, seed=0)
        return self._model

    @property
    def transfer_model(self):
        """The exploiter's other model (``--transfer-model``), loaded when a transfer scenario needs
        it."""
        if self._transfer_model is None:
            from audit.diffusion import load_model

            spec = self.options.transfer_model_spec
            with self.progress.stage(f"load transfer model '{spec}'"):
                self._transfer_model = load_model(spec, self.device,
                                                  allow_download=self.options.allow_download,
                                                  seed=0)
        return self._transfer_model

    def audited(self, spec: str | None = None, kind: SubjectKind = PERSON) -> AuditedProtection:
        """One protection of the audit (``--protection`` may list several); the first when no
        spec is given (a single-protection audit's only one). Built once per subject kind: a
        protection whose prompt is the exploiter's instance prompt takes the kind's."""
        spec = spec or self.options.protections[0]
        if (spec, kind.name) not in self._audited:
            self._audited[spec, kind.name] = AuditedProtection(spec, self.tier,
                                                               self.options.epsilon, kind)
        return self._audited[spec, kind.name]

    @property
    def protection(self) -> Protection:
        """The first (in a single-protection audit, the only) protection under audit."""
        return self.audited().protection

    @property
    def protection_code(self) -> CodeFingerprint:
        """The first protection's code fingerprint (``AuditedProtection.code``)."""
        return self.audited().code

    @property
    def budget(self) -> dict[str, Any]:
        """The first protection's judged budget (``AuditedProtection.budget``)."""
        return self.audited().budget

    @property
    def resolution(self) -> int:
        return self.tier.resolution or self.model.resolution

    def model_record(self, m: Any = None) -> ModelRecord:
        m = m or self.model
        return ModelRecord(id=m.model_id, revision=m.revision, fingerprint=m.fingerprint,
                           source=m.source, resolution=m.resolution)

    def subject(self, name: str) -> Subject:
        if name not in self._subjects:
            subject = load_subject(name, self.options.data, self.resolution,
                                   self.options.subject_kind)
            for note in subject.notes:
                self.progress.note(f"subject '{name}': {note}")
            self._subjects[name] = subject
        return self._subjects[name]

    def subject_kind(self, name: str) -> SubjectKind:
        """A subject's kind, read before its images are (the plan needs its prompts)."""
        return subject_kind(name, self.options.data, self.options.subject_kind)

    def plan(self, scenario: Scenario, protection: str | None = None,
             kind: SubjectKind = PERSON) -> CasePlan:
        return plan_case(scenario, self.audited(protection, kind).info, self.tier,
                         self.options.seed, kind=kind)

    def protection_record(self, protection: str | None = None,
                          kind: SubjectKind = PERSON) -> ProtectionRecord:
        return ProtectionRecord.model_validate(self.audited(protection, kind).record())

    def protected(self, subject: Subject, step: Any, record: CaseRecord,
                  protection_spec: str | None = None) -> torch.Tensor:
        """One replicate's protected images, budget checked on every use (never trusted)."""
        audited = self.audited(protection_spec, subject.kind)
        protection = audited.protection
        images, info = self.stages.protect(protection, step, subject, self.tier, audited.code)
        runs = record.protection_runs if record.protection_runs is not None else []
        if any(r.cache_key == info["cache_key"] and r.seed == info["seed"] for r in runs):
            return images
        # A folder of protected files judges its declared budget at the files' own resolution
        # (resizing to the audit resolution can change ℓ∞): here it is measured only.
        judged = 1.0 if protection.judges_own_budget else audited.budget["epsilon"]
        measured = check_budget(subject.images, images, judged, protection.name,
                                source=audited.budget["source"])
        info.update(linf=measured, linf_255=round(measured * 255, 3), budget_ok=True,
                    imperceptibility={k: v.to_dict() for k,
                                      v in imperceptibility(
                                          subject.images, from_uint8(images)).items()})
        run = ProtectionRun.model_validate(info)
        record.protection_runs = [*runs, run]
        if record.protection_run is None:  # replicate 1's, as earlier records had
            record.protection_run = run
            record.imperceptibility = run.imperceptibility
        return images

    def null_protected(self, subject: Subject, step: Any) -> torch.Tensor:
        """The null baseline's images (``controls.null_baseline``): the ``random`` protection at the
        audited protection's budget with the replicate's seed, through the same cached stage as
        any protection — auditing ``random`` into the same results folder computes them once."""
        from audit.parts.protections.simple import RandomNoise

        images, _ = self.stages.protect(RandomNoise(float(step.spec.params["epsilon"])), step,
                                        subject, self.tier)
        return images

    # -- the worker processes for exploit runs -------------------------------------------------
    @property
    def workers(self) -> int:
        from audit.run.placement import visible_gpus
        from audit.run.workers import default_workers

        return self.options.exploit_workers or default_workers(
            self.device, visible_gpus(self.device), self.options.runs_per_gpu)

    def executor(self, pending: int) -> Any:
        """Where ``pending`` exploit runs are computed: the Ray cluster (``--executor ray``, every
        pending run), the worker pool (more than one worker and run), or None: in this process."""
        if pending and self.options.executor == "ray":
            return self.pool()
        return self.pool() if min(self.workers, pending) > 1 else None

    def pool(self) -> Any:
        """The executor of exploit runs, started on first use: the local worker pool, or the
        Ray cluster (``--executor ray``)."""
        if self._pool is None:
            from audit.run.workers import worker_setup

            if self.options.executor == "ray":
                from audit.run.ray_executor import RayPool

                self._pool = RayPool(self.options.ray_address, worker_setup(self), self.cache,
                                     self.stages)
            else:
                from audit.run.workers import ExploitPool

                self._pool = ExploitPool(self.workers, worker_setup(self))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, scenario: Scenario, subject_name: str, case_id: str,
                 protection: str | None = None) -> CaseRecord:
        """Run one (protection × scenario × subject) case; never raises: errors are recorded.
        ``protection`` is one item of ``--protection`` (default: the first)."""
        return CaseRun(self, scenario, subject_name, case_id, protection).run()
