"""The flow of one case: plan → images → exploits → metrics → verdict → checks.

One ``AuditSession`` per pytest session holds the model (loaded once), the cache and the
protection. A case is planned first (``audit/run/planner.py``: its runs by role × replicate), then
each distinct run's images, exploit and metric values are computed through the cached stages
(``audit/run/stages.py``), so the clean and protected replicates are computed once per audit and
shared by every scenario, and a rerun recomputes nothing.
"""

from __future__ import annotations

import math
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from audit import __version__
from audit.config.options import AuditOptions
from audit.config.scenario import Scenario
from audit.data.images import from_uint8, png_bytes, to_uint8
from audit.data.subjects import Subject, load_subject
from audit.errors import AuditError, BudgetExceeded
from audit.judge import checks
from audit.judge.verdict import MetricVerdict, decide, worst_variant
from audit.parts.metrics import FACE_METRICS
from audit.parts.metrics.build import exploit_metric_names
from audit.parts.metrics.imperceptibility import imperceptibility
from audit.parts.protections.base import Protection, check_budget
from audit.parts.protections.build import budget as protection_budget
from audit.parts.protections.build import build_protection
from audit.results.files import case_file_stem
from audit.run.cache import Cache
from audit.run.fingerprint import CodeFingerprint, code_fingerprint
from audit.run.planner import CasePlan, ProtectionInfo, Run, plan_case
from audit.run.progress import Progress
from audit.run.stages import ExploitOutput, Stages

MAX_SAVED_GENERATIONS = 12


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
        self.stages = Stages(self.cache, lambda: self.model, lambda: self.device, lambda: self.resolution, self.progress,
                             transfer=(lambda: self.transfer_model) if options.transfer_model_spec else None)
        self._model = None
        self._transfer_model = None
        self._device: torch.device | None = None
        self._protection: tuple[Protection, Any] | None = None
        self._protection_code: CodeFingerprint | None = None
        self._budget: dict[str, Any] | None = None
        self._subjects: dict[str, Subject] = {}
        self._pool = None

    # -- shared, lazily built state -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self._device is None:
            from audit.diffusion import resolve_device

            self._device = resolve_device(self.options.device)
        return self._device

    @property
    def model(self):  # noqa: ANN201 - LatentDiffusionModel, imported lazily
        if self._model is None:
            from audit.diffusion import load_model

            with self.progress.stage(f"load model '{self.options.model}'"):
                self._model = load_model(self.options.model, self.device, allow_download=self.options.allow_download, seed=0)
        return self._model

    @property
    def transfer_model(self):  # noqa: ANN201 - LatentDiffusionModel, imported lazily
        """The exploiter's other model (``--transfer-model``), loaded when a transfer scenario needs it."""
        if self._transfer_model is None:
            from audit.diffusion import load_model

            spec = self.options.transfer_model_spec
            with self.progress.stage(f"load transfer model '{spec}'"):
                self._transfer_model = load_model(spec, self.device, allow_download=self.options.allow_download, seed=0)
        return self._transfer_model

    @property
    def protection(self) -> Protection:
        if self._protection is None:
            self._protection = build_protection(self.options.protection, self.tier, self.options.epsilon)
        return self._protection[0]

    @property
    def protection_code(self) -> CodeFingerprint:
        """The fingerprint of the protection's code, taken once per audit (``audit/run/fingerprint.py``):
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
            self._budget = protection_budget(self.options.protection, self.protection, self.tier, self.options.epsilon)
        return self._budget

    @property
    def resolution(self) -> int:
        return self.tier.resolution or self.model.resolution

    def model_record(self, m: Any = None) -> dict[str, Any]:
        m = m or self.model
        return {"id": m.model_id, "revision": m.revision, "fingerprint": m.fingerprint, "source": m.source,
                "resolution": m.resolution}

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
        info = ProtectionInfo(spec, random=protection.random,
                              shared_across_replicates=getattr(protection, "shared_across_replicates", False))
        return plan_case(scenario, info, self.tier, self.options.seed)

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, scenario: Scenario, subject_name: str, case_id: str) -> dict[str, Any]:
        """Run one (protection × scenario × subject) case; never raises: errors are recorded."""
        started = time.time()
        self.cache.take_events()
        self.progress.take_timings()
        record = new_record(case_id, self.options, scenario_record(scenario), subject_name, self.tier.name)
        try:
            self._run_case(scenario, subject_name, case_id, record)
        except BudgetExceeded as exc:
            record.update(outcome="fail", reason=str(exc), budget_exceeded=True)  # its own answer (summary.audit_answer)
            record["flags"].append("protection exceeds its budget")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, others still run
            record.update(outcome="error", reason=f"{type(exc).__name__}: {exc}")
            record["error"] = {"type": type(exc).__name__, "message": str(exc),
                               "user_error": isinstance(exc, AuditError), "traceback": traceback.format_exc()}
        record["seconds"] = round(time.time() - started, 3)
        record["timings"] = self.progress.take_timings()
        record["cache"] = self.cache.take_events().to_dict()
        return record

    def _run_case(self, scenario: Scenario, subject_name: str, case_id: str, record: dict[str, Any]) -> None:
        if "objective" in scenario.requires and not self.protection.has_objective:
            record.update(outcome="skipped", reason=(
                f"skipped: scenario '{scenario.id}' re-crafts the protection through its objective, and protection "
                f"'{self.protection.name}' ({self.options.protection}) has none the toolkit can see (a folder of "
                "protected files); audit the protection's code to run it"))
            return
        plan = self.plan(scenario)
        record["plan"] = plan_record(plan)
        if uses_transfer(plan) and not self.options.transfer_model_spec:
            record.update(outcome="skipped", reason=(
                f"skipped: scenario '{scenario.id}' fine-tunes the transfer model (PID §6.3), and none is set for "
                f"--model={self.options.model}: pass --transfer-model (a Hugging Face id or a local diffusers folder)"))
            return
        record["protection"] = self.protection_record()
        record["model"] = self.model_record()
        if uses_transfer(plan):  # the report names both models and their hashes
            record["transfer_model"] = self.model_record(self.transfer_model)
        record["device"] = str(self.device)
        subject = self.subject(subject_name)
        record["subject"] = subject_record(subject, self.resolution)
        images = self.run_images(plan, subject, record)
        outputs = self.run_exploits(plan, images)
        record["exploits"] = {run.label(): exploit_record(run, outputs[run.identity]) for run in plan.runs}
        metric_names, verdict_metric = self.metric_choice(scenario, record)
        untrained = self.run_untrained(plan, record)
        values = self.measure(plan, outputs, subject, metric_names)
        self.judge(plan, scenario, values, verdict_metric, record,
                   untrained=self.measure_untrained(untrained, subject, metric_names))
        record["artifacts"] = self.save_artifacts(case_id, plan, subject, images, outputs, record["worst_variant"],
                                                  untrained=untrained)

    def protection_record(self) -> dict[str, Any]:
        p = self.protection
        # "epsilon" is the budget judged (--epsilon when given, for every kind of protection);
        # "budget" says where it came from and what the protection itself declares.
        budget = self.budget
        epsilon = budget["epsilon"] if budget["epsilon"] is not None else p.epsilon
        return {"name": p.name, "spec": self.options.protection, "epsilon": epsilon,
                "epsilon_255": round(epsilon * 255, 4), "budget": dict(budget), "params": p.params(self.tier),
                "random": p.random, "has_objective": p.has_objective, "code": self.protection_code.to_dict()}

    def run_images(self, plan: CasePlan, subject: Subject, record: dict[str, Any]) -> dict[tuple, torch.Tensor]:
        """The 8-bit training images of every run: its chain applied to the subject (cached)."""
        clean = to_uint8(subject.images)
        images: dict[tuple, torch.Tensor] = {}
        record["protection_runs"] = []
        for run in plan.unique_runs():
            current = clean
            for step in run.chain:
                if step.kind == "protection" and step.spec != plan.protection:  # the null baseline's noise
                    current = self.null_protected(subject, step)
                elif step.kind == "protection":
                    current = self.protected(subject, step, record)
                else:
                    current = self.stages.transform(step, current)
            images[run.identity] = current
        return images

    def protected(self, subject: Subject, step: Any, record: dict[str, Any]) -> torch.Tensor:
        """One replicate's protected images, budget checked on every use (never trusted)."""
        protection = self.protection
        images, info = self.stages.protect(protection, step, subject, self.tier, self.protection_code)
        if any(r.get("cache_key") == info["cache_key"] and r.get("seed") == info["seed"] for r in record["protection_runs"]):
            return images
        # A folder of protected files judges its declared budget at the files' own resolution
        # (resizing to the audit resolution can change ℓ∞): here it is measured only.
        judged = self.budget["epsilon"] if not hasattr(protection, "declared_epsilon") else 1.0
        measured = check_budget(subject.images, images, judged, protection.name, source=self.budget["source"])
        info.update(linf=measured, linf_255=round(measured * 255, 3), budget_ok=True,
                    imperceptibility={k: v.to_dict() for k, v in imperceptibility(subject.images, from_uint8(images)).items()})
        record["protection_runs"].append(info)
        record.setdefault("protection_run", info)  # replicate 1's, as earlier records had
        record.setdefault("imperceptibility", info["imperceptibility"])
        return images

    def null_protected(self, subject: Subject, step: Any) -> torch.Tensor:
        """The null baseline's images (``controls.null_baseline``): the ``random`` protection at the
        audited protection's budget with the replicate's seed, through the same cached stage as
        any protection — auditing ``random`` into the same results folder computes them once."""
        from audit.parts.protections.simple import RandomNoise

        images, _ = self.stages.protect(RandomNoise(float(step.spec.params["epsilon"])), step, subject, self.tier)
        return images

    def run_untrained(self, plan: CasePlan, record: dict[str, Any]) -> list[torch.Tensor]:
        """The untrained reference, per replicate: the base model's generations with the replicate's
        prompts, settings and seed, no fine-tune (cached once per model, settings and seed, so
        shared by every case and rerun of the audit)."""
        generation = self.tier.generation
        out, record["untrained"] = [], []
        for r, seed in enumerate(plan.seeds):
            generations, key = self.stages.untrained(plan.standard_exploit, generation, seed)
            out.append(generations)
            record["untrained"].append({"replicate": r, "seed": seed, "cache_key": key,
                                        "what": "base model, no fine-tune: the exploits' prompts, settings and seed"})
        return out

    def measure_untrained(self, untrained: list[torch.Tensor], subject: Subject,
                          names: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every metric on the untrained reference of every replicate, against the clean subject."""
        reference = to_uint8(subject.images)
        with self.progress.stage(f"metrics: {', '.join(names)} on the untrained reference"):
            return {name: [self.stages.metric(name, g, reference) for g in untrained] for name in names}

    def verdict_minimums(self, scenario: Scenario) -> dict[str, dict[str, Any]]:
        """min_learned and min_effect with where each came from: the tier (or its default) <
        the scenario's ``verdict.min_effect`` < ``--audit-set verdict.…``."""
        resolved = self.tier.resolve_section("verdict")
        settings = resolved.params
        out = {key: {"value": float(getattr(settings, key)), "origin": resolved.origin.get(key, "default")}
               for key in ("min_learned", "min_effect")}
        if scenario.verdict.min_effect is not None and out["min_effect"]["origin"] != "--audit-set":
            out["min_effect"] = {"value": float(scenario.verdict.min_effect), "origin": "scenario"}
        return out

    def run_exploits(self, plan: CasePlan, images: dict[tuple, torch.Tensor]) -> dict[tuple, ExploitOutput]:
        """Every distinct run's fine-tune and generations: cached ones read here, the others
        computed side by side in worker processes when there are several (``audit/run/workers.py``)."""
        generation = self.tier.generation
        runs = plan.unique_runs()
        pending = [r for r in runs if not self.stages.exploit_cached(r, images[r.identity], generation)]
        outputs: dict[tuple, ExploitOutput] = {}
        workers = min(self.workers, len(pending))
        if workers > 1:
            with self.progress.stage(f"exploits: {len(pending)} runs in {workers} worker processes", total=len(pending), unit="runs") as stage:
                jobs = [(run, images[run.identity], generation) for run in pending]
                for run, (output, timings, events) in zip(pending, self.pool().run(jobs, lambda run, _: stage.advance(1, run.label())), strict=True):
                    outputs[run.identity] = output
                    self.progress.timings.extend({**t, "worker": True} for t in timings)
                    self.cache.merge_events(events)
        for run in runs:
            if run.identity not in outputs:
                outputs[run.identity] = self.stages.exploit(run, images[run.identity], generation)
        return outputs

    @property
    def workers(self) -> int:
        from audit.run.workers import default_workers

        return self.options.exploit_workers or default_workers(self.device)

    def pool(self) -> Any:
        """The worker processes for exploit runs, started on first use."""
        if self._pool is None:
            from audit.run.workers import ExploitPool, WorkerSetup

            transfer = self.options.transfer_model_spec
            setup = WorkerSetup(self.options.model, str(self.device), self.options.allow_download, self.model.fingerprint,
                                str(self.cache.root), self.cache.enabled, self.resolution, transfer,
                                self.transfer_model.fingerprint if transfer and self._transfer_model is not None else None)
            self._pool = ExploitPool(self.workers, setup)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def metric_choice(self, scenario: Scenario, record: dict[str, Any]) -> tuple[list[str], str]:
        """The metrics to compute and the one that decides (the tier's substitute, said why)."""
        names = exploit_metric_names()
        verdict_metric = scenario.verdict.metric
        substitute = self.tier.verdict.face_metric_substitute
        if substitute and verdict_metric in FACE_METRICS:
            record["verdict_metric_note"] = (
                f"tier '{self.tier.name}' decides on {substitute} instead of the scenario's {verdict_metric}: "
                f"faces at {self.resolution} px are below the face metrics' working size (model card); "
                f"{verdict_metric} is still reported"
            )
            verdict_metric = substitute
        fallback = self.tier.verdict.fallback_metric
        for name in (verdict_metric, fallback):
            if name and name not in names:
                names = [*names, name]
        return names, verdict_metric

    def fallback(self, verdict_metric: str, values: dict[str, dict[tuple, dict[str, Any]]],
                 record: dict[str, Any]) -> str:
        """The metric that decides: the verdict metric, or — where it is unavailable (its weights
        are missing) — the tier's declared fallback, said in the record and flagged (a verdict on
        a fallback is never shown as a clean one)."""
        def why(name: str) -> str | None:
            return next((r["unavailable"] for r in values.get(name, {}).values() if r.get("unavailable")), None)

        fallback = self.tier.verdict.fallback_metric
        unavailable = why(verdict_metric)
        if unavailable is None or not fallback or fallback == verdict_metric or why(fallback) is not None:
            return verdict_metric
        note = (f"{verdict_metric} is unavailable ({unavailable}); tier '{self.tier.name}' falls back to {fallback}, "
                f"as it declares (verdict.fallback_metric): this is {fallback}'s verdict, not {verdict_metric}'s")
        record["verdict_metric_note"] = f"{record['verdict_metric_note']}; {note}" if record.get("verdict_metric_note") else note
        record["verdict_fallback"] = {"metric": verdict_metric, "fallback": fallback, "unavailable": unavailable}
        record["flags"].append(
            f"verdict on a fallback metric: {verdict_metric} is unavailable, so tier '{self.tier.name}' decided on "
            f"{fallback}; provide {verdict_metric}'s weights for the paper's metric")
        return fallback

    def measure(self, plan: CasePlan, outputs: dict[tuple, ExploitOutput], subject: Subject,
                names: list[str]) -> dict[str, dict[tuple, dict[str, Any]]]:
        """Every metric on every distinct run's generations, against the clean subject images."""
        reference = to_uint8(subject.images)
        runs = plan.unique_runs()
        with self.progress.stage(f"metrics: {', '.join(names)} on {len(runs)} exploits"):
            return {name: {run.identity: self.stages.metric(name, outputs[run.identity].generations, reference)
                           for run in runs} for name in names}

    def judge(self, plan: CasePlan, scenario: Scenario, values: dict[str, dict[tuple, dict[str, Any]]],
              verdict_metric: str, record: dict[str, Any],
              untrained: dict[str, list[dict[str, Any]]] | None = None) -> None:
        """Per variant and metric verdicts; the scenario's is the worst variant on its verdict metric.
        ``untrained``: each metric's results on the untrained reference, per replicate (``run_case``
        always gives them: a pass needs the exploit to have learned and a meaningful effect size)."""
        threshold = scenario.verdict.retained_at_least
        verdict_metric = self.fallback(verdict_metric, values, record)
        minimums = self.verdict_minimums(scenario)
        record["verdict_settings"] = {**minimums, "retained_at_least": {"value": threshold, "origin": "scenario"},
                                      "untrained_reference": untrained is not None,
                                      "null_baseline": bool(plan.runs_for("null_baseline"))}
        limits = {"min_learned": minimums["min_learned"]["value"], "min_effect": minimums["min_effect"]["value"]}
        per_variant = [{name: self._verdict(plan, v, name, by_run, threshold, record,
                                            (untrained or {}).get(name) if untrained is not None else None, limits)
                        for name, by_run in values.items()} for v in range(len(plan.variants))]
        worst = worst_variant([verdicts.get(verdict_metric) for verdicts in per_variant])
        record["worst_variant"] = worst
        record["exploiter_best"] = exploiter_best(plan, worst, per_variant[worst].get(verdict_metric))
        record["variants"] = [variant_record(plan, i, verdicts) for i, verdicts in enumerate(per_variant)]
        for name, by_run in values.items():
            record["metrics"][name] = metric_entry(plan, worst, by_run, per_variant[worst].get(name),
                                                   untrained=(untrained or {}).get(name))
            # Slots left out for being undefined in some exploit, and a metric's own caution
            # (FID on few images): said with the metric, and flagged where it decides.
            entry_flags = checks.slots_left_out(name, per_variant[worst].get(name)) + checks.metric_caution(name, record["metrics"][name])
            record["metrics"][name]["flags"] = entry_flags
            # Coverage of the deciding metric bears on the verdict (a flag); another metric's is
            # shown with that metric (its 'unavailable' and 'notes'), not as a flag on the case.
            if name == verdict_metric:
                record["flags"].extend(checks.metric_coverage(name, record["metrics"][name]) + entry_flags)
        record["flags"].extend(checks.replicates(plan))
        record["flags"].extend(checks.non_standard(self.tier))
        decisive = per_variant[worst].get(verdict_metric)
        for i, verdicts in enumerate(per_variant):
            if verdicts.get(verdict_metric) is not None:
                record["flags"].extend(checks.control_shift(verdicts[verdict_metric], plan.variants[i].label))
        record.update(verdict_metric=verdict_metric, threshold=threshold)
        if decisive is None:
            record["outcome"] = "error"
            record["reason"] = f"verdict metric '{verdict_metric}' is unavailable: {record['metrics'][verdict_metric]['unavailable']}"
            return
        record["flags"].extend(checks.unbounded(decisive) + checks.inconclusive(decisive))
        self._noise_floor(plan, values.get(verdict_metric, {}), decisive, record)
        self._null_baseline(plan, decisive, record)
        prefix = f"worst of {len(plan.variants)} exploit variants: '{plan.variants[worst].label}'; " if len(plan.variants) > 1 else ""
        record.update(outcome=decisive.outcome, reason=prefix + decisive.sentence)

    def _verdict(self, plan: CasePlan, variant: int, name: str, by_run: dict[tuple, dict[str, Any]],
                 threshold: float, record: dict[str, Any], untrained: list[dict[str, Any]] | None = None,
                 limits: dict[str, float] | None = None) -> MetricVerdict | None:
        roles = {"clean": plan.runs_for("clean"), "protected": plan.runs_for("protected"),
                 "attacked": plan.runs_for("attacked", variant), "control": plan.runs_for("control", variant),
                 "null_baseline": plan.runs_for("null_baseline")}
        results = {role: [by_run[r.identity] for r in runs] for role, runs in roles.items()}
        results["untrained"] = list(untrained or [])
        if any(x.get("unavailable") for rs in results.values() for x in rs):
            return None
        per = {role: [x["values"] for x in rs] for role, rs in results.items()}
        try:
            return decide(name, results["clean"][0]["direction"], per["clean"], per["protected"], per["attacked"],
                          threshold, alpha=self.tier.verdict.alpha, control=per["control"] or None,
                          untrained=per["untrained"] or None, null=per["null_baseline"] or None, **(limits or {}),
                          resamples=self.tier.verdict.bootstrap_resamples, seed=self.options.seed)
        except ValueError as exc:  # e.g. a metric undefined on every image of a replicate
            record["flags"].append(f"{name}: no verdict ({exc})")
            return None

    def _noise_floor(self, plan: CasePlan, by_run: dict[tuple, dict[str, Any]], verdict: MetricVerdict,
                     record: dict[str, Any]) -> None:
        floor = plan.runs_for("noise_floor")
        values = [v for v in by_run[floor[0].identity].get("values") or [] if v is not None and math.isfinite(v)] if floor else []
        if values:
            record["noise_floor"], flags = checks.noise_floor(verdict, sum(values) / len(values))
            record["flags"].extend(flags)

    def _null_baseline(self, plan: CasePlan, verdict: MetricVerdict, record: dict[str, Any]) -> None:
        """The null baseline beside the protection's effect (``controls.null_baseline``), and its flag."""
        runs = plan.runs_for("null_baseline")
        if verdict.null_baseline is None or not runs:
            return
        null = verdict.null_baseline
        record["null_baseline"] = {
            "metric": verdict.metric, "protection": "random", "epsilon": runs[0].chain[0].spec.params["epsilon"],
            "m_null": null.m_null.to_dict(), "effect": null.effect.to_dict(),
            "share": null.share.to_dict() if null.share is not None else None,
            "protection_effect": verdict.effect.to_dict(),
            "protection_share": verdict.share.to_dict() if verdict.share is not None else None,
            "same_runs_as_protected": [r.identity for r in runs] == [r.identity for r in plan.runs_for("protected")],
        }
        record["flags"].extend(checks.null_baseline(verdict))

    def save_artifacts(self, case_id: str, plan: CasePlan, subject: Subject, images: dict[tuple, torch.Tensor],
                       outputs: dict[tuple, ExploitOutput], worst: int,
                       untrained: list[torch.Tensor] | None = None) -> dict[str, list[str]]:
        """PNG files of replicate 1's inputs and generations under results_dir/artifacts/<case>."""
        folder = self.artifacts_dir / case_file_stem(case_id)
        folder.mkdir(parents=True, exist_ok=True)
        protected, attacked = plan.runs_for("protected")[0], plan.runs_for("attacked", worst)[0]
        groups = {
            "clean": to_uint8(subject.images),
            "protected": images[protected.identity],
            "attacked_input": images[attacked.identity],
            "generated_clean": outputs[plan.runs_for("clean")[0].identity].generations[:MAX_SAVED_GENERATIONS],
            "generated_protected": outputs[protected.identity].generations[:MAX_SAVED_GENERATIONS],
            "generated_attacked": outputs[attacked.identity].generations[:MAX_SAVED_GENERATIONS],
        }
        control = plan.runs_for("control", worst)
        if control:
            groups["generated_control"] = outputs[control[0].identity].generations[:MAX_SAVED_GENERATIONS]
        if untrained:
            groups["generated_untrained"] = untrained[0][:MAX_SAVED_GENERATIONS]
        null = plan.runs_for("null_baseline")
        if null:
            groups["generated_null_baseline"] = outputs[null[0].identity].generations[:MAX_SAVED_GENERATIONS]
        saved: dict[str, list[str]] = {}
        for group, batch in groups.items():
            saved[group] = []
            for i, image in enumerate(batch):
                path = folder / f"{group}_{i:02d}.png"
                path.write_bytes(png_bytes(image))
                saved[group].append(str(path.relative_to(self.results_dir)))
        return saved


# -- records -----------------------------------------------------------------------------------
def new_record(case_id: str, options: AuditOptions, scenario: dict[str, Any], subject: str, tier: str) -> dict[str, Any]:
    return {
        "case_id": case_id, "protection": {"name": options.protection}, "scenario": scenario,
        "subject": {"name": subject}, "tier": tier, "seed": options.seed, "toolkit_version": __version__,
        "outcome": "error", "reason": "", "metrics": {}, "variants": [], "flags": [], "error": None,
        "started": time.time(),
    }


def subject_record(subject: Subject, resolution: int) -> dict[str, Any]:
    return {"name": subject.name, "source": subject.source, "files": list(subject.files), "notes": list(subject.notes),
            "content_hash": subject.content_hash, "n_images": len(subject.images), "resolution": resolution}


def plan_record(plan: CasePlan) -> dict[str, Any]:
    return {
        "replicates": plan.replicates, "seeds": list(plan.seeds), "standard_exploit": plan.standard_exploit.to_dict(),
        "variants": [{"label": v.label, "attack": [a.to_dict() for a in v.attack], "exploit": v.exploit.to_dict(),
                      "matched_control": v.changes_exploit, "exploit_params_origin": v.origin} for v in plan.variants],
        "runs": [{"run": r.label(), "role": r.role, "variant": r.variant, "replicate": r.replicate, "seed": r.seed,
                  "chain": [s.label() for s in r.chain], "exploit": r.exploit.name} for r in plan.runs],
        "distinct_exploits": len(plan.unique_runs()), "notes": list(plan.notes), "text": plan.table(),
    }


def exploit_record(run: Run, output: ExploitOutput) -> dict[str, Any]:
    return {"label": run.label(), "role": run.role, "variant": run.variant, "replicate": run.replicate, "seed": run.seed,
            "finetune": dict(run.exploit.params), "weights_key": output.weights_key,
            "cache_key": output.generations_key, "info": output.info}


def variant_record(plan: CasePlan, i: int, verdicts: dict[str, MetricVerdict | None]) -> dict[str, Any]:
    v = plan.variants[i]
    return {"label": v.label, "instance_prompt": v.exploit.params.get("instance_prompt"),
            "posterior": v.exploit.params.get("posterior"), "matched_control": v.changes_exploit,
            "exploit": plan.exploit_label(v.exploit),
            "verdicts": {n: vd.to_dict() for n, vd in verdicts.items() if vd is not None}}


def exploiter_best(plan: CasePlan, worst: int, verdict: MetricVerdict | None) -> dict[str, Any] | None:
    """The variant the verdict took — the exploiter's best, the protector's worst — named by its
    label (prompt mismatch: the winning prompt), with its exploit and instance prompt; None for
    a scenario with one variant."""
    if len(plan.variants) < 2:
        return None
    v = plan.variants[worst]
    retained = verdict.retained.value if verdict is not None and verdict.retained is not None else None
    return {"variant": worst, "label": v.label, "exploit": plan.exploit_label(v.exploit),
            "instance_prompt": v.exploit.params.get("instance_prompt"), "retained": retained,
            "basis": ("lowest retained protection on the verdict metric" if retained is not None else
                      "no variant retained a protective effect to compare: the first variant is shown")}


def metric_entry(plan: CasePlan, worst: int, by_run: dict[tuple, dict[str, Any]], verdict: MetricVerdict | None,
                 untrained: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    roles = {"clean": plan.runs_for("clean"), "protected": plan.runs_for("protected"),
             "attacked": plan.runs_for("attacked", worst), "null_baseline": plan.runs_for("null_baseline")}
    results = {role: [by_run[r.identity] for r in runs] for role, runs in roles.items() if runs}
    if untrained:
        results["untrained"] = list(untrained)
    first = results["clean"][0]
    entry: dict[str, Any] = {
        "direction": first.get("direction"),
        "implementation": first.get("implementation"),
        "level": first.get("level", "image"),
        "caution": next((x["caution"] for rs in results.values() for x in rs if x.get("caution")), None),
        "unavailable": next((x["unavailable"] for rs in results.values() for x in rs if x.get("unavailable")), None),
        "values": {role: [v for x in rs for v in x.get("values", [])] for role, rs in results.items()},
        "per_replicate": {role: [x.get("values", []) for x in rs] for role, rs in results.items()},
        "missing": {role: sum(x.get("missing", 0) for x in rs) for role, rs in results.items()},
        "notes": first.get("notes", []),
    }
    if verdict is not None:
        entry.update(verdict.to_dict())
    return entry


def scenario_record(scenario: Scenario) -> dict[str, Any]:
    data = scenario.model_dump()
    data["definition_hash"] = scenario.definition_hash()
    return data


def run_provenance(options: AuditOptions) -> dict[str, Any]:
    """Versions and settings that make every number in the results reproducible."""
    import platform
    import subprocess
    import sys

    from audit.parts.metrics.base import package_version

    versions: dict[str, str | None] = {"protection-audit": __version__, "python": sys.version.split()[0]}
    for distribution in (
        "torch", "torchvision", "diffusers", "transformers", "numpy", "scipy", "piq", "open-clip-torch", "dlib-bin",
        "face-recognition-models", "brisque", "facenet-pytorch", "scikit-image", "pillow",
    ):
        versions[distribution] = package_version(distribution)
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "toolkit_version": __version__, "git_commit": commit, "versions": versions, "platform": platform.platform(),
        "cpu": cpu_description(),
        "options": options.to_dict(), "tier_settings": options.tier_settings.to_dict(), "non_standard": options.non_standard,
        "replicates": replicates_origin(options),
    }


def replicates_origin(options: AuditOptions) -> dict[str, Any]:
    """K and the layer that set it (--replicates and --audit-set replicates must agree: startup)."""
    source = ("--replicates" if options.replicates is not None else
              "--audit-set replicates" if "replicates" in options.overrides.get("", {}) else f"tier '{options.tier}'")
    return {"value": options.tier_settings.replicates, "source": source}


def cpu_description() -> dict[str, str | None]:
    """The CPU and the vector instruction set torch's kernels use on it. On the CPU a rerun is
    bitwise identical only on the same kind of host (measured: the smoke audit's m_c 0.4841 on
    one 2-core host, 0.4813 on another with the same code and torch 2.14.1, well inside the
    interval over replicates), so a results file says which host it came from."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        model = platform.processor() or None
    return {"model": model, "torch_capability": torch.backends.cpu.get_cpu_capability()}


def uses_transfer(plan: CasePlan) -> bool:
    """Whether any run of the plan fine-tunes the transfer model (``model: transfer``)."""
    return any(run.exploit.params.get("model") == "transfer" for run in plan.runs)
