"""The flow of one case: protect → scenario attack → exploit → metrics → verdict.

One ``AuditSession`` per pytest session holds the model (loaded once) and the cache; every
stage goes through the cache, so the clean and protected baselines are computed once per
(model, subject, exploit config) and shared by every scenario that needs them, and a rerun of
the same audit recomputes nothing.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit import __version__
from audit.cache import Cache, tensor_hash
from audit.data import Subject, load_subject
from audit.errors import AuditError, BudgetExceeded
from audit.exploits.dreambooth import FinetuneConfig, GenerationConfig, finetune, generate
from audit.images import from_uint8, png_bytes, to_uint8
from audit.metrics import FACE_METRICS, exploit_metric_names, get_metric, imperceptibility
from audit.options import AuditOptions
from audit.progress import Progress
from audit.protections import Protection, ProtectionContext, check_budget, get_protection
from audit.scenario import Scenario
from audit.transforms.corruptions import TRANSFORMS
from audit.verdict import MetricVerdict, decide

MAX_SAVED_GENERATIONS = 12


@dataclass
class ExploitRun:
    label: str
    generations: torch.Tensor  # uint8
    key: str
    finetune: dict[str, Any]
    generation: dict[str, Any]
    info: dict[str, Any]


class AuditSession:
    """State shared by all cases of one audit (model, cache, protection, subjects)."""

    def __init__(self, options: AuditOptions, progress: Progress | None = None) -> None:
        self.options = options
        self.progress = progress or Progress()
        self.tier = options.tier_settings
        self.results_dir = Path(options.results_dir)
        self.cache = Cache(self.results_dir / "cache", enabled=not options.no_cache)
        self._model = None
        self._device: torch.device | None = None
        self._protection: Protection | None = None
        self._subjects: dict[str, Subject] = {}

    # -- shared, lazily built state -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self._device is None:
            from audit.models import resolve_device

            self._device = resolve_device(self.options.device)
        return self._device

    @property
    def model(self):  # noqa: ANN201 - LatentDiffusionModel, imported lazily
        if self._model is None:
            from audit.models import load_model

            with self.progress.stage(f"load model '{self.options.model}'"):
                self._model = load_model(
                    self.options.model, self.device, allow_download=self.options.allow_download, seed=0
                )
        return self._model

    @property
    def protection(self) -> Protection:
        if self._protection is None:
            self._protection = get_protection(self.options.protection)
        return self._protection

    @property
    def resolution(self) -> int:
        return self.tier.resolution or self.model.resolution

    def model_record(self) -> dict[str, Any]:
        m = self.model
        return {
            "id": m.model_id,
            "revision": m.revision,
            "fingerprint": m.fingerprint,
            "source": m.source,
            "resolution": m.resolution,
        }

    def subject(self, name: str) -> Subject:
        if name not in self._subjects:
            subject = load_subject(name, self.options.data, self.resolution)
            for note in subject.notes:
                self.progress.note(f"subject '{name}': {note}")
            self._subjects[name] = subject
        return self._subjects[name]

    # -- stages ------------------------------------------------------------------------------
    def protect(self, subject: Subject) -> tuple[torch.Tensor, dict[str, Any]]:
        """The protected 8-bit images of a subject (cached), budget checked on every use."""
        protection = self.protection
        params = protection.params(self.tier)
        key = self.cache.key(
            "protect",
            protection=protection.name,
            cls=f"{type(protection).__module__}.{type(protection).__qualname__}",
            params=params,
            subject=subject.content_hash,
            model=self.model.fingerprint if protection.uses_model else None,
            seed=self.options.seed,
        )
        with self.cache.lock("protect", key):
            hit = self.cache.get("protect", key)
            if hit is not None:
                images, info = hit[0]["images"], hit[1]
            else:
                ctx = ProtectionContext(self.model, self.device, self.options.seed, self.tier, self.progress)
                with self.progress.stage(f"protect: {protection.name}"):
                    output = protection.protect(subject.images.clone(), ctx)
                images, info = output.images, output.info
                if images.dtype != torch.uint8:
                    images = to_uint8(images)
                self.cache.put("protect", key, {"images": images}, info)
        info = dict(info)
        info["cache_key"] = key
        return images, info

    def attack(self, scenario: Scenario, protected_u8: torch.Tensor) -> torch.Tensor:
        """The scenario's image-space steps applied to the protected images (8-bit output)."""
        if not scenario.attack:
            return protected_u8
        images = from_uint8(protected_u8)
        generator = torch.Generator().manual_seed(self.options.seed)
        with self.progress.stage("attack: " + " → ".join(s.part for s in scenario.attack)):
            for step in scenario.attack:
                params_model, fn = TRANSFORMS[step.part]
                images = fn(images, params_model(**step.params), generator)
        return to_uint8(images)

    def finetune_config(self, scenario: Scenario | None, prompt: str | None = None) -> FinetuneConfig:
        t = self.tier
        exploit = scenario.exploit if scenario else None
        posterior = exploit.posterior if exploit else None
        train_te = exploit.train_text_encoder if exploit and exploit.train_text_encoder is not None else t.train_text_encoder
        return FinetuneConfig(
            instance_prompt=prompt or t.protector_prompt,
            steps=t.finetune_steps,
            lr=t.finetune_lr,
            lr_schedule=t.finetune_lr_schedule,
            batch_size=t.finetune_batch_size,
            train_text_encoder=train_te,
            posterior_sigma=posterior.sigma if posterior else "sample",
            posterior_value=posterior.value if posterior else None,
            prior_preservation=t.prior_preservation,
            prior_loss_weight=t.prior_loss_weight,
            class_prompt=t.class_prompt,
            seed=self.options.seed,
        )

    def generation_config(self) -> GenerationConfig:
        t = self.tier
        return GenerationConfig(
            prompts=t.eval_prompts,
            images_per_prompt=t.images_per_prompt,
            steps=t.inference_steps,
            guidance_scale=t.guidance_scale,
            negative_prompt=t.negative_prompt,
            seed=self.options.seed,
        )

    def class_images(self) -> torch.Tensor | None:
        """Prior-preservation class images from the base model (cached, shared by all runs)."""
        t = self.tier
        if not t.prior_preservation:
            return None
        per_prompt = t.num_class_images
        cfg = GenerationConfig((t.class_prompt,), per_prompt, t.inference_steps, t.guidance_scale, "", seed=10_000)
        key = self.cache.key("class_images", model=self.model.fingerprint, generation=cfg.to_dict(), resolution=self.resolution)
        with self.cache.lock("class_images", key):
            hit = self.cache.get("class_images", key)
            if hit is not None:
                return from_uint8(hit[0]["images"])
            images = generate(self.model, self.model.unet, self.model.text_encoder, cfg, self.resolution, self.progress)
            self.cache.put("class_images", key, {"images": to_uint8(images)}, {"prompt": t.class_prompt})
        return images

    def exploit(self, label: str, images_u8: torch.Tensor, ft: FinetuneConfig) -> ExploitRun:
        """DreamBooth on the given 8-bit images then generation; cached by content and config."""
        gen = self.generation_config()
        key = self.cache.key(
            "exploit",
            images=tensor_hash(images_u8),
            finetune=ft.to_dict(),
            generation=gen.to_dict(),
            model=self.model.fingerprint,
            resolution=self.resolution,
        )
        with self.cache.lock("exploit", key):
            hit = self.cache.get("exploit", key)
            if hit is not None:
                return ExploitRun(label, hit[0]["generations"], key, ft.to_dict(), gen.to_dict(), hit[1])
            self.progress.note(f"exploit '{label}': fine-tune + generate (not cached)")
            unet, text_encoder, info = finetune(
                self.model, from_uint8(images_u8), ft, self.progress, class_images=self.class_images()
            )
            generations = to_uint8(generate(self.model, unet, text_encoder, gen, self.resolution, self.progress))
            self.cache.put("exploit", key, {"generations": generations}, info)
        return ExploitRun(label, generations, key, ft.to_dict(), gen.to_dict(), info)

    def metric(self, name: str, generations_u8: torch.Tensor, reference: torch.Tensor) -> dict[str, Any]:
        """A metric's per-image values on one exploit's generations (cached)."""
        key = self.cache.key("metric", metric=name, implementation=get_metric(name).implementation_name(), generations=tensor_hash(generations_u8), reference=tensor_hash(to_uint8(reference)))
        hit = self.cache.get("metric", key)
        if hit is not None:
            return hit[1]
        result = get_metric(name).compute(from_uint8(generations_u8), reference).to_dict()
        if result.get("unavailable") is None:
            self.cache.put("metric", key, {}, result)
        return result

    # -- one case ---------------------------------------------------------------------------
    def run_case(self, scenario: Scenario, subject_name: str, case_id: str) -> dict[str, Any]:
        """Run one (protection × scenario × subject) case; never raises: errors are recorded."""
        started = time.time()
        self.progress.prefix = ""
        self.cache.take_events()
        self.progress.take_timings()
        record: dict[str, Any] = {
            "case_id": case_id,
            "protection": {"name": self.options.protection},
            "scenario": scenario_record(scenario),
            "subject": {"name": subject_name},
            "tier": self.tier.name,
            "seed": self.options.seed,
            "toolkit_version": __version__,
            "outcome": "error",
            "reason": "",
            "metrics": {},
            "variants": [],
            "flags": [],
            "error": None,
            "started": started,
        }
        try:
            self._run_case(scenario, subject_name, case_id, record)
        except BudgetExceeded as exc:
            record["outcome"] = "fail"
            record["reason"] = str(exc)
            record["flags"].append("protection exceeds its budget")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, others still run
            record["outcome"] = "error"
            record["reason"] = f"{type(exc).__name__}: {exc}"
            record["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "user_error": isinstance(exc, AuditError),
                "traceback": traceback.format_exc(),
            }
        record["seconds"] = round(time.time() - started, 3)
        record["timings"] = self.progress.take_timings()
        record["cache"] = self.cache.take_events().to_dict()
        return record

    def _run_case(self, scenario: Scenario, subject_name: str, case_id: str, record: dict[str, Any]) -> None:
        protection = self.protection
        record["protection"] = {
            "name": protection.name,
            "spec": self.options.protection,
            "epsilon": protection.epsilon,
            "epsilon_255": round(protection.epsilon * 255, 4),
            "params": protection.params(self.tier),
        }
        record["model"] = self.model_record()
        record["device"] = str(self.device)
        subject = self.subject(subject_name)
        record["subject"] = {
            "name": subject.name,
            "source": subject.source,
            "files": list(subject.files),
            "notes": list(subject.notes),
            "content_hash": subject.content_hash,
            "n_images": len(subject.images),
            "resolution": self.resolution,
        }
        clean = subject.images
        protected_u8, protect_info = self.protect(subject)
        measured = check_budget(clean, protected_u8, protection.epsilon, protection.name)
        record["protection_run"] = {
            **protect_info,
            "linf": measured,
            "linf_255": round(measured * 255, 3),
            "budget_ok": True,
        }
        record["imperceptibility"] = {
            name: r.to_dict() for name, r in imperceptibility(clean, from_uint8(protected_u8)).items()
        }
        attacked_u8 = self.attack(scenario, protected_u8)

        baseline_ft = self.finetune_config(None)
        clean_run = self.exploit("clean", to_uint8(clean), baseline_ft)
        protected_run = self.exploit("protected", protected_u8, baseline_ft)
        attacked_runs = [
            self.exploit(f"attacked[{prompt}]", attacked_u8, self.finetune_config(scenario, prompt))
            for prompt in scenario.exploit_prompts(self.tier.protector_prompt)
        ]
        record["exploits"] = {
            "clean": exploit_record(clean_run),
            "protected": exploit_record(protected_run),
            "attacked": [exploit_record(r) for r in attacked_runs],
        }
        floor_run = None
        if self.tier.noise_floor_control:
            floor_run = self.exploit("noise floor (±1/255)", noise_floor_images(clean, self.options.seed), baseline_ft)
            record["exploits"]["noise_floor"] = exploit_record(floor_run)

        names = exploit_metric_names()
        verdict_metric = scenario.verdict.metric
        substitute = self.tier.face_metric_substitute
        if substitute and verdict_metric in FACE_METRICS:
            record["verdict_metric_note"] = (
                f"tier '{self.tier.name}' decides on {substitute} instead of the scenario's {verdict_metric}: "
                f"faces at {self.resolution} px are below the face metrics' working size (model card); "
                f"{verdict_metric} is still reported"
            )
            verdict_metric = substitute
        if verdict_metric not in names:
            names = [*names, verdict_metric]
        with self.progress.stage(f"metrics: {', '.join(names)} on {2 + len(attacked_runs)} exploits"):
            values = {
                name: {
                    "clean": self.metric(name, clean_run.generations, clean),
                    "protected": self.metric(name, protected_run.generations, clean),
                    "attacked": [self.metric(name, r.generations, clean) for r in attacked_runs],
                }
                for name in names
            }
        # Per variant, per metric verdicts; the scenario's verdict takes the worst variant
        # for the protector on its verdict metric (PID App. A.5: the exploiter's best prompt).
        variant_verdicts: list[dict[str, MetricVerdict]] = []
        for i, _ in enumerate(attacked_runs):
            verdicts = {}
            for name, v in values.items():
                if any(x.get("unavailable") for x in (v["clean"], v["protected"], v["attacked"][i])):
                    continue
                try:
                    verdicts[name] = decide(
                        name,
                        v["clean"]["direction"],
                        v["clean"]["values"],
                        v["protected"]["values"],
                        v["attacked"][i]["values"],
                        scenario.verdict.retained_at_least,
                        resamples=self.tier.bootstrap_resamples,
                        seed=self.options.seed,
                    )
                except ValueError as exc:  # e.g. a metric undefined on some images: no pairing
                    record["flags"].append(f"{name}: no verdict ({exc})")
            variant_verdicts.append(verdicts)
        worst = _worst_variant(variant_verdicts, verdict_metric)
        record["worst_variant"] = worst
        record["variants"] = [
            {
                "instance_prompt": attacked_runs[i].finetune["instance_prompt"],
                "posterior": {"sigma": attacked_runs[i].finetune["posterior_sigma"], "value": attacked_runs[i].finetune["posterior_value"]},
                "verdicts": {n: vd.to_dict() for n, vd in verdicts.items()},
            }
            for i, verdicts in enumerate(variant_verdicts)
        ]
        for name, v in values.items():
            entry: dict[str, Any] = {
                "direction": v["clean"].get("direction"),
                "implementation": v["clean"].get("implementation"),
                "unavailable": next((x["unavailable"] for x in (v["clean"], v["protected"], *v["attacked"]) if x.get("unavailable")), None),
                "values": {"clean": v["clean"].get("values", []), "protected": v["protected"].get("values", []), "attacked": v["attacked"][worst].get("values", [])},
                "missing": {"clean": v["clean"].get("missing", 0), "protected": v["protected"].get("missing", 0), "attacked": v["attacked"][worst].get("missing", 0)},
                "notes": v["clean"].get("notes", []),
            }
            verdict = variant_verdicts[worst].get(name)
            if verdict is not None:
                entry.update(verdict.to_dict())
            record["metrics"][name] = entry
            missing = sum(entry["missing"].values())
            if missing:
                total = sum(len(x) for x in entry["values"].values())
                record["flags"].append(f"{name}: computed as intended on {total - missing} of {total} images ({missing} fell back, see notes)")
            if entry["unavailable"]:
                record["flags"].append(f"{name}: unavailable: {entry['unavailable']}")
        if self.options.non_standard:
            record["flags"].append(f"non-standard run: tier '{self.tier.name}' settings changed: {self.options.overrides}")

        decisive = variant_verdicts[worst].get(verdict_metric)
        if floor_run is not None and decisive is not None:
            self._noise_floor(record, verdict_metric, floor_run, clean, decisive)
        record["verdict_metric"] = verdict_metric
        record["threshold"] = scenario.verdict.retained_at_least
        if decisive is None:
            record["outcome"] = "error"
            record["reason"] = f"verdict metric '{verdict_metric}' is unavailable: {record['metrics'][verdict_metric]['unavailable']}"
        else:
            record["outcome"] = decisive.outcome
            prefix = ""
            if len(attacked_runs) > 1:
                prefix = f"worst of {len(attacked_runs)} exploit variants: '{attacked_runs[worst].finetune['instance_prompt']}'; "
            record["reason"] = prefix + decisive.sentence
        record["artifacts"] = self.save_artifacts(case_id, clean, protected_u8, attacked_u8, clean_run, protected_run, attacked_runs[worst])

    def _noise_floor(self, record: dict[str, Any], metric: str, floor_run: ExploitRun, clean: torch.Tensor,
                     verdict: MetricVerdict) -> None:
        """Flag a verdict whose protective effect is not well above the exploit's noise floor.

        The floor is |m_floor − m_c|: how far the exploit's outcome moves when its training
        images change imperceptibly (±1/255, no protective intent). An effect below twice that
        cannot be told from the exploit's own sensitivity to any change of its data.
        """
        values = self.metric(metric, floor_run.generations, clean).get("values") or []
        if not values:
            return
        m_floor = sum(values) / len(values)
        shift = abs(m_floor - verdict.m_c.value)
        effect = verdict.effect.value
        record["noise_floor"] = {"metric": metric, "m_floor": m_floor, "shift": shift,
                                 "effect": effect, "perturbation": "uniform integer levels in [-1, 1] (±1/255)"}
        if verdict.outcome in ("pass", "fail") and effect < 2 * shift:
            record["flags"].append(
                f"noise floor: an imperceptible ±1/255 change of the clean images moves {metric} by {shift:.4f}; "
                f"the protective effect ({effect:+.4f}) is less than twice that, so this verdict cannot tell the "
                "protection from the exploit's sensitivity to any change of its training images"
            )

    def save_artifacts(self, case_id: str, clean: torch.Tensor, protected_u8: torch.Tensor, attacked_u8: torch.Tensor,
                       *runs: ExploitRun) -> dict[str, list[str]]:
        """PNG files of the case's inputs and generations under results_dir/artifacts/<case>."""
        folder = self.results_dir / "artifacts" / _safe(case_id)
        folder.mkdir(parents=True, exist_ok=True)
        saved: dict[str, list[str]] = {}
        groups = {
            "clean": to_uint8(clean),
            "protected": protected_u8,
            "attacked_input": attacked_u8,
            "generated_clean": runs[0].generations[:MAX_SAVED_GENERATIONS],
            "generated_protected": runs[1].generations[:MAX_SAVED_GENERATIONS],
            "generated_attacked": runs[2].generations[:MAX_SAVED_GENERATIONS],
        }
        for group, images in groups.items():
            saved[group] = []
            for i, image in enumerate(images):
                path = folder / f"{group}_{i:02d}.png"
                path.write_bytes(png_bytes(image))
                saved[group].append(str(path.relative_to(self.results_dir)))
        return saved


def noise_floor_images(clean: torch.Tensor, seed: int) -> torch.Tensor:
    """The clean images with an imperceptible change: each pixel ±1 or 0 levels (8-bit), seeded."""
    generator = torch.Generator().manual_seed(seed + 7919)
    levels = torch.randint(-1, 2, clean.shape, generator=generator).to(torch.int16)
    return (to_uint8(clean).to(torch.int16) + levels).clamp(0, 255).to(torch.uint8)


def _worst_variant(variant_verdicts: list[dict[str, MetricVerdict]], metric: str) -> int:
    """Index of the variant with the lowest retained protection on ``metric`` (0 if none)."""
    best_i, best = 0, float("inf")
    for i, verdicts in enumerate(variant_verdicts):
        v = verdicts.get(metric)
        if v is None or v.retained is None:
            continue
        if v.retained.value < best:
            best_i, best = i, v.retained.value
    return best_i


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def scenario_record(scenario: Scenario) -> dict[str, Any]:
    data = scenario.model_dump()
    data["definition_hash"] = scenario.definition_hash()
    return data


def exploit_record(run: ExploitRun) -> dict[str, Any]:
    return {"label": run.label, "cache_key": run.key, "finetune": run.finetune, "generation": run.generation, "info": run.info}


def run_provenance(options: AuditOptions) -> dict[str, Any]:
    """Versions and settings that make every number in the results reproducible."""
    import platform
    import subprocess
    import sys

    from audit.metrics.base import package_version

    versions: dict[str, str | None] = {"protection-audit": __version__, "python": sys.version.split()[0]}
    for distribution in (
        "torch", "torchvision", "diffusers", "transformers", "numpy", "piq", "open-clip-torch", "dlib-bin",
        "face-recognition-models", "brisque", "facenet-pytorch", "scikit-image", "pillow",
    ):
        versions[distribution] = package_version(distribution)
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "toolkit_version": __version__,
        "git_commit": commit,
        "versions": versions,
        "platform": platform.platform(),
        "options": options.to_dict(),
        "tier_settings": options.tier_settings.to_dict(),
        "non_standard": options.non_standard,
    }
