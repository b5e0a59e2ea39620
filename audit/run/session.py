"""The shared resources of one audit: options, cache and stages, the model (loaded once), the
protection and its budget, the subjects and the worker pool. One ``AuditSession`` per pytest
session; each case runs as a ``CaseRun`` over it (``audit/run/case.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from audit.config.options import AuditOptions
from audit.config.scenario import Scenario
from audit.data.images import from_uint8
from audit.data.subjects import Subject, load_subject
from audit.parts.metrics.imperceptibility import imperceptibility
from audit.parts.protections.base import Protection, check_budget
from audit.parts.protections.build import budget as protection_budget
from audit.parts.protections.build import build_protection
from audit.results.schema import CaseRecord, ModelRecord, ProtectionRecord, ProtectionRun
from audit.run.cache import Cache
from audit.run.case import CaseRun
from audit.run.fingerprint import CodeFingerprint, code_fingerprint
from audit.run.planner import CasePlan, ProtectionInfo, plan_case
from audit.run.progress import Progress
from audit.run.stages import Stages

if TYPE_CHECKING:
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
        self._protection: tuple[Protection, Any] | None = None
        self._protection_code: CodeFingerprint | None = None
        self._budget: dict[str, Any] | None = None
        self._subjects: dict[str, Subject] = {}
        self._pool: ExploitPool | None = None

    @property
    def device(self) -> torch.device:
        if self._device is None:
            from audit.diffusion import resolve_device

            self._device = resolve_device(self.options.device)
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

    @property
    def protection(self) -> Protection:
        if self._protection is None:
            self._protection = build_protection(self.options.protection, self.tier,
                                                self.options.epsilon)
        return self._protection[0]

    @property
    def protection_code(self) -> CodeFingerprint:
        """The fingerprint of the protection's code, taken once per audit
        (``audit/run/fingerprint.py``):
        its classes, its instance functions and, for ``module:factory``, the factory's module."""
        if self._protection_code is None:
            spec = self.options.protection
            factory = spec if ":" in spec and not spec.startswith("dir:") else None
            self._protection_code = code_fingerprint(self.protection, factory=factory)
        return self._protection_code

    @property
    def budget(self) -> dict[str, Any]:
        """The ℓ∞ budget judged on every replicate's output and where it came from
        (``audit/parts/protections/build.py``: ``--epsilon`` for every kind of protection)."""
        if self._budget is None:
            self._budget = protection_budget(self.options.protection, self.protection, self.tier,
                                             self.options.epsilon)
        return self._budget

    @property
    def resolution(self) -> int:
        return self.tier.resolution or self.model.resolution

    def model_record(self, m: Any = None) -> ModelRecord:
        m = m or self.model
        return ModelRecord(id=m.model_id, revision=m.revision, fingerprint=m.fingerprint,
                           source=m.source, resolution=m.resolution)

    def subject(self, name: str) -> Subject:
        if name not in self._subjects:
            subject = load_subject(name, self.options.data, self.resolution)
            for note in subject.notes:
                self.progress.note(f"subject '{name}': {note}")
            self._subjects[name] = subject
        return self._subjects[name]

    def plan(self, scenario: Scenario) -> CasePlan:
        protection = self.protection
        spec = self._protection[1]  # type: ignore[index]
        info = ProtectionInfo.of(protection, spec)
        return plan_case(scenario, info, self.tier, self.options.seed)

    def protection_record(self) -> ProtectionRecord:
        p = self.protection
        # "epsilon" is the budget judged (--epsilon when given, for every kind of protection);
        # "budget" says where it came from and what the protection itself declares.
        budget = self.budget
        epsilon = budget["epsilon"] if budget["epsilon"] is not None else p.epsilon
        return ProtectionRecord.model_validate({
            "name": p.name, "spec": self.options.protection, "epsilon": epsilon,
            "epsilon_255": round(epsilon * 255, 4), "budget": dict(budget),
            "params": p.params(self.tier), "random": p.random, "has_objective": p.has_objective,
            "code": self.protection_code.to_dict()})

    def protected(self, subject: Subject, step: Any, record: CaseRecord) -> torch.Tensor:
        """One replicate's protected images, budget checked on every use (never trusted)."""
        protection = self.protection
        images, info = self.stages.protect(protection, step, subject, self.tier,
                                           self.protection_code)
        runs = record.protection_runs if record.protection_runs is not None else []
        if any(r.cache_key == info["cache_key"] and r.seed == info["seed"] for r in runs):
            return images
        # A folder of protected files judges its declared budget at the files' own resolution
        # (resizing to the audit resolution can change ℓ∞): here it is measured only.
        judged = 1.0 if protection.judges_own_budget else self.budget["epsilon"]
        measured = check_budget(subject.images, images, judged, protection.name,
                                source=self.budget["source"])
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
        from audit.run.workers import default_workers

        return self.options.exploit_workers or default_workers(self.device)

    def pool(self) -> Any:
        """The worker processes for exploit runs, started on first use."""
        if self._pool is None:
            from audit.run.workers import ExploitPool, WorkerSetup

            transfer = self.options.transfer_model_spec
            setup = WorkerSetup(self.options.model, str(self.device), self.options.allow_download,
                                self.model.fingerprint,
                                str(self.cache.root), self.cache.enabled, self.resolution, transfer,
                                self.transfer_model.fingerprint if transfer
                                and self._transfer_model is not None else None)
            self._pool = ExploitPool(self.workers, setup)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, scenario: Scenario, subject_name: str, case_id: str) -> CaseRecord:
        """Run one (protection × scenario × subject) case; never raises: errors are recorded."""
        return CaseRun(self, scenario, subject_name, case_id).run()
