"""The stages of a run, each cached under one key rule.

Every stage's key is built by ``stage_key`` from the same fields, named the same way:

    stage · part (kind, name, version, implementation; a protection's code fingerprint) · resolved
    params
          · inputs (content hashes of what it consumes) · model fingerprint (when the part
            uses the model) · seed (when the part is random) · toolkit version

and every stage's output hash feeds the next stage's inputs (subject → protected images →
attacked images → fine-tuned weights → generations → metric values). Fine-tuned weights and
generations are separate entries, so changing the evaluation prompts re-generates without
re-fitting. Each stage holds the entry's lock while it looks up and computes, so concurrent
workers (xdist) compute a shared entry once.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

import audit.diffusion.sampling as sampling
from audit.data.images import from_uint8, to_uint8
from audit.parts import EXPLOITS, METRICS, TRANSFORMS
from audit.parts.protections.base import Protection, ProtectionContext, check_output
from audit.run.cache import Cache, tensor_hash
from audit.run.fingerprint import CodeFingerprint, code_fingerprint
from audit.run.planner import ChainStep, Run

if TYPE_CHECKING:
    from audit.config.settings import GenerationSettings
    from audit.data.subjects import Subject
    from audit.parts.exploits.dreambooth import DreamboothParams
    from audit.parts.registry import PartSpec
    from audit.run.progress import Progress


# Fine-tunes and generations on the CPU run with one intra-op thread (audit/run/workers.py).
CPU_THREADS = 1


@contextlib.contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread for the block on the CPU (deterministic whatever the executor)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stage_key(cache: Cache, stage: str, *, part: dict[str, Any], params: dict[str, Any],
              inputs: dict[str, str],
              model: str | None, seed: int | None, **extra: Any) -> str:
    """The one cache-key rule (the toolkit version is added by ``Cache.key``)."""
    return cache.key(
        stage, part=part, params=params, inputs=inputs, model=model, seed=seed, **extra)


def protection_identity(protection: Protection, code: CodeFingerprint) -> dict[str, Any]:
    """The protection's part identity: name, version, class and the fingerprint of its code
    (``audit/run/fingerprint.py``), so an edited protection is never served its old results."""
    cls = type(protection)
    return {"kind": "protection", "name": protection.name,
            "version": protection.version,
            "target": f"{cls.__module__}:{cls.__qualname__}", "code": code.sha256}


Entry = tuple[dict[str, torch.Tensor], dict[str, Any]]  # a cache entry: tensors, metadata


def cached(cache: Cache, stage: str, key: str, compute: Callable[[], Entry]) -> Entry:
    """The entry under ``key``, computed and stored when absent, under the entry's lock."""
    with cache.lock(stage, key):
        hit = cache.get(stage, key)
        if hit is not None:
            return hit
        tensors, meta = compute()
        cache.put(stage, key, tensors, meta)
        return tensors, meta


@dataclass
class ExploitOutput:
    """One run's fine-tune and generations (8-bit), with their cache keys and training info."""

    weights_key: str
    generations_key: str
    generations: torch.Tensor
    info: dict[str, Any]


class _StagesBase:
    """What every stage needs: the cache, the model (fetched lazily, when a key needs its
    fingerprint or a stage computes), the device, the resolution and the progress display."""

    def __init__(self, cache: Cache, model: Callable[[], Any], device: Callable[[], torch.device],
                 resolution: Callable[[], int], progress: Progress,
                 transfer: Callable[[], Any] | None = None) -> None:
        self.cache = cache
        self._model = model
        self._transfer = transfer
        self._device = device
        self._resolution = resolution
        self.progress = progress
        # Protections whose code has no fingerprint: kept for this session only, never cached.
        self._uncached: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
        self._purifiers: dict[str, Any] = {}  # purifiers' models other than the audited one
        self._editors: dict[str, Any] = {}  # editing exploits' inpainting UNets

    @property
    def model(self) -> Any:
        return self._model()

    def model_for(self, params: Any) -> Any:
        """The model an exploit fine-tunes: the protector's (``--model``) or the transfer model
        (``--transfer-model``), by the role its params name (``audit/parts/exploits/base.py``)."""
        if getattr(params, "model", "protector") != "transfer":
            return self.model
        if self._transfer is None:
            from audit.errors import ModelError

            raise ModelError("this exploit fine-tunes the transfer model, and none is set: pass "
                             "--transfer-model (a Hugging Face id or a local diffusers folder; on "
                             "the built-in models tiny ↔ tiny-2)")
        return self._transfer()

    def editing_unet(self, params: Any) -> Any:
        """An inpainting exploit's UNet (``audit/diffusion/editing.py``: ``InpaintingUNet``; on
        ``tiny`` its companion ``tiny-inpainting``), loaded once per session; None for img2img."""
        if getattr(params, "mode", None) != "inpainting":
            return None
        from audit.diffusion.editing import load_inpainting_unet
        from audit.parts.metrics.weights import downloads_allowed

        model = self.model_for(params)
        key = f"{model.fingerprint}|{params.inpainting_model}"
        if key not in self._editors:
            self._editors[key] = load_inpainting_unet(model, params.inpainting_model,
                                                      downloads_allowed())
        return self._editors[key]

    def edit_info(self, params: Any) -> dict[str, Any]:
        """What an editing run records of its weights: the model and, for inpainting with a UNet
        of its own, that UNet (id, hash, source)."""
        model = self.model_for(params)
        info: dict[str, Any] = {"trained": "nothing (editing exploit)", "mode": params.mode,
                                "model": {"role": params.model, "id": model.model_id,
                                          "fingerprint": model.fingerprint}}
        editor = self._other_editor(params)
        if editor is not None:
            info["inpainting_unet"] = {"id": editor.model_id, "fingerprint": editor.fingerprint,
                                       "source": editor.source}
        return info

    def edit_fingerprint(self, params: Any) -> str:
        """What an editing exploit's edits depend on of the weights: the model's fingerprint and,
        for inpainting with a UNet of its own, that UNet's."""
        fingerprint = str(self.model_for(params).fingerprint)
        editor = self._other_editor(params)
        return fingerprint if editor is None else f"{fingerprint}+{editor.fingerprint}"

    def _other_editor(self, params: Any) -> Any:
        """The inpainting UNet where it is not the audited model's own, else None."""
        editor = self.editing_unet(params)
        if editor is None or editor.fingerprint == self.model_for(params).fingerprint:
            return None
        return editor


class _BaseModelStages(_StagesBase):
    """Stages that generate with the base model as loaded: prior-preservation class images and
    the untrained reference."""

    def class_images(
            self, params: DreamboothParams, generation: GenerationSettings) -> torch.Tensor | None:
        """Prior-preservation class images from the base model with the class prompt (cached,
        shared by every run and replicate, as diffusers' class_data_dir), generated
        ``CLASS_BATCH`` at a time; image i is drawn from seed 10 000 + i either way."""
        if not params.prior_preservation:
            return None
        from dataclasses import replace

        model = self.model_for(params)
        cfg = class_config(params, generation)
        key = cast(str, self.class_images_key(params, generation))

        def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            n = cfg.images_per_prompt
            images = torch.cat([
                sampling.generate(model, model.unet, model.text_encoder,
                         replace(cfg, images_per_prompt=min(sampling.CLASS_BATCH, n - start),
                                 seed=cfg.seed + start),
                         self._resolution(), self.progress)
                for start in range(0, n, sampling.CLASS_BATCH)])
            return {"images": to_uint8(images)}, {"prompt": params.class_prompt}

        return from_uint8(cached(self.cache, "class_images", key, compute)[0]["images"])

    def class_images_key(self, params: DreamboothParams,
                         generation: GenerationSettings) -> str | None:
        """The class images' cache key (None without prior preservation)."""
        if not params.prior_preservation:
            return None
        cfg = class_config(params, generation)
        return stage_key(self.cache, "class_images", part={"name": "class_images"},
                         params=cfg.to_dict(), inputs={},
                         model=self.model_for(params).fingerprint, seed=cfg.seed,
                         resolution=self._resolution(), batch=sampling.CLASS_BATCH)

    # -- untrained reference -----------------------------------------------------------------
    def untrained_key(self, exploit: PartSpec, generation: GenerationSettings, seed: int) -> str:
        """The untrained reference's cache key: the ``generate`` stage's fields with the base
        model's own weights (its fingerprint) in the place of the fine-tuned ones."""
        part = EXPLOITS.get(exploit.name)
        fingerprint = self.model_for(part.validate(exploit.params)).fingerprint
        return stage_key(self.cache, "untrained", part={"name": "generate",
                                                        "sampler": generation.sampler},
                         params=generation_config(generation, seed).to_dict(),
                         inputs={"weights": "base model"},
                         model=fingerprint, seed=seed, resolution=self._resolution(),
                         cpu_threads=CPU_THREADS)

    def untrained(
            self, exploit: PartSpec, generation: GenerationSettings,
            seed: int) -> tuple[torch.Tensor, str]:
        """The base model's generations with the prompts, settings and seed of an exploit's
        generation, without fine-tuning (the verdict's untrained reference, m_u): the model the
        exploit would fine-tune, its UNet and text encoder as loaded. Cached once per (model,
        generation settings, seed, resolution), so every case and rerun of an audit shares it;
        one intra-op thread on the CPU, as the exploits' generations."""
        part = EXPLOITS.get(exploit.name)
        model = self.model_for(part.validate(exploit.params))
        key = self.untrained_key(exploit, generation, seed)
        cfg = generation_config(generation, seed)

        def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            self.progress.note(f"untrained reference: base model generations @seed {seed} (not "
                               "cached)")
            with single_thread(self._device()):
                images = sampling.generate(model, model.unet, model.text_encoder, cfg,
                                           self._resolution(), self.progress)
            return {"generations": to_uint8(images)}, {"prompts": list(cfg.prompts),
                                                       "model": model.model_id}

        return cached(self.cache, "untrained", key, compute)[0]["generations"], key


class _PurifierStages(_BaseModelStages):
    """Purifiers' models, and the adaptive protector's EoT around a protect step."""

    def purifier_model(self, spec: str | None) -> Any:
        """A purifier's model (its ``model`` parameter): the audited one unless it names a
        diffusers folder or a hub id, loaded once per session on the audit's device."""
        if spec in (None, "audited"):
            return self.model
        if spec not in self._purifiers:
            from audit.diffusion.loading import load_model
            from audit.parts.metrics.weights import downloads_allowed

            self._purifiers[spec] = load_model(spec, self._device(),
                                               allow_download=downloads_allowed())
        return self._purifiers[spec]

    def _adaptation_uses_model(self, step: ChainStep) -> bool:
        return step.adapt is not None and any(TRANSFORMS.get(t.name).uses_model
                                              for t in step.adapt.transform)

    def _adaptation_key(self, step: ChainStep) -> dict[str, Any]:
        """The adapted protect step's extra key fields: the adaptation, the EoT code, and the
        fingerprint of every purifier model its chain uses (none for a plain protect step, whose
        key is as it always was)."""
        if step.adapt is None:
            return {}
        from audit.parts.protections.eot import code_version

        models = [self.purifier_model(t.params.get("model")).fingerprint
                  for t in step.adapt.transform if TRANSFORMS.get(t.name).uses_model]
        return {"adaptation": {**step.adapt.to_dict(), "eot_code": code_version(),
                               "purifier_models": models}}

    def _protect(self, protection: Protection, step: ChainStep, subject: Subject,
                 ctx: ProtectionContext) -> Any:
        """``protect``, through EoT over the step's adaptation where it has one; the output's
        info then says how each transform step was crafted through."""
        if step.adapt is None:
            return protection.protect(subject.images.clone(), ctx)
        from audit.parts.protections.eot import adapted, build_eot
        from audit.parts.transforms.context import TransformContext

        adapt = step.adapt
        model = (self.purifier_model(next(t.params.get("model") for t in adapt.transform
                                          if TRANSFORMS.get(t.name).uses_model))
                 if self._adaptation_uses_model(step) else None)
        context = TransformContext(model, ctx.device, torch.Generator().manual_seed(ctx.seed))
        eot, through = build_eot(adapt.transform, adapt.samples, adapt.gradient,  # type: ignore[arg-type]
                                 ctx.seed, context)
        with adapted(protection, eot) as crafting:
            output = crafting.protect(subject.images.clone(), ctx)
        info = getattr(output, "info", None)
        if isinstance(info, dict):
            info["adaptation"] = {**adapt.to_dict(), "crafted_through": through,
                                  "eot_calls": eot.calls, "notes": list(context.notes)}
        return output


class Stages(_PurifierStages):
    """The cached stages of a run: protect, transform, fine-tune and generate, metric."""

    # -- image chain ---------------------------------------------------------------------------
    def protect_key(self, protection: Protection, step: ChainStep, subject: Subject, tier: Any,
                    code: CodeFingerprint) -> str:
        """The protected images' cache key (the model's fingerprint when the protection or its
        adaptation uses it; an adapted step adds its adaptation)."""
        uses_model = protection.uses_model or self._adaptation_uses_model(step)
        return stage_key(
            self.cache, "protect", part=protection_identity(protection, code),
            params=protection.params(tier),
            inputs={"subject": subject.content_hash},
            model=self.model.fingerprint if uses_model else None, seed=step.seed,
            **self._adaptation_key(step),
        )

    def transform_key(self, step: ChainStep, images_u8: torch.Tensor) -> str:
        """An attack step's cache key on these 8-bit images."""
        part = TRANSFORMS.get(step.spec.name)
        model = self.purifier_model(step.spec.params.get("model")) if part.uses_model else None
        return stage_key(self.cache, "transform", part=part.identity(), params=step.spec.params,
                         inputs={"images": tensor_hash(images_u8)},
                         model=model.fingerprint if model is not None else None,
                         seed=step.seed if part.random else None)

    def protect(self, protection: Protection, step: ChainStep, subject: Subject, tier: Any,
                code: CodeFingerprint | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """The protected 8-bit images of a subject for one replicate's seed. ``code`` is the
        protection's code fingerprint (computed here when not given); without one (source not
        readable) the images are crafted every time and never cached."""
        code = code or code_fingerprint(protection)
        uses_model = protection.uses_model or self._adaptation_uses_model(step)
        key = self.protect_key(protection, step, subject, tier, code)

        def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            model = self.model if uses_model else None
            ctx = ProtectionContext(model, self._device(), step.seed or 0, tier, self.progress,
                                    subject)
            with self.progress.stage(f"protect: {protection.name} (seed {step.seed})"
                                     + (" adaptive (EoT)" if step.adapt is not None else "")):
                output = self._protect(protection, step, subject, ctx)
            # The interface, finiteness and shape are checked before 8-bit rounding (NaN would
            # become 0) and before the cache: nothing downstream sees a broken output.
            images = check_output(output, subject.images, protection.name)
            images = images if images.dtype == torch.uint8 else to_uint8(images)
            return {"images": images}, dict(getattr(output, "info", None) or {})

        if code.sha256 is None:  # crafted once per audit session, never written to the cache
            if key not in self._uncached:
                self.cache.events.misses.append("protect")
                self._uncached[key] = compute()
            tensors, info = self._uncached[key]
            return tensors["images"], {**info, "cache_key": None, "seed": step.seed,
                                       "not_cached": code.reason}
        tensors, info = cached(self.cache, "protect", key, compute)
        return tensors["images"], {**info, "cache_key": key, "seed": step.seed}

    def transform(self, step: ChainStep, images_u8: torch.Tensor,
                  notes: list[str] | None = None) -> torch.Tensor:
        """One attack step on 8-bit images (8-bit output: what the exploiter saves). A transform
        whose function takes ``context`` gets the purifier's model, the device and the seeded
        generator (``audit/parts/transforms/context.py``); the sentences it notes are appended
        to ``notes`` (the case's flags), from the cache too."""
        part = TRANSFORMS.get(step.spec.name)
        model = self.purifier_model(step.spec.params.get("model")) if part.uses_model else None
        key = self.transform_key(step, images_u8)

        def compute() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            from audit.parts.transforms.context import TransformContext

            params = part.validate(step.spec.params)
            generator = torch.Generator().manual_seed(step.seed or 0)
            function = part.load()
            context = TransformContext(model, self._device(), generator)
            takes_context = "context" in inspect.signature(function).parameters
            extra = {"context": context} if takes_context else {}
            with self.progress.stage(f"attack: {step.spec.label()}"):
                out = function(from_uint8(images_u8), params, generator, **extra)
            return {"images": to_uint8(out)}, {"step": step.spec.label(), "notes": context.notes}

        tensors, meta = cached(self.cache, "transform", key, compute)
        if notes is not None:
            notes.extend(n for n in meta.get("notes", []) if n not in notes)
        return tensors["images"]

    # -- exploit -------------------------------------------------------------------------------
    def exploit_keys(
            self, run: Run, images_u8: torch.Tensor,
            generation: GenerationSettings) -> tuple[str, str]:
        """The fine-tuned weights' and the generations' cache keys of a run (an editing exploit
        trains nothing: no weights key, its edits keyed by the run's images)."""
        part = EXPLOITS.get(run.exploit.name)
        resolution = self._resolution()
        params = part.validate(run.exploit.params)
        fingerprint = self.model_for(params).fingerprint
        if not params.trains:  # type: ignore[attr-defined]
            return "", stage_key(self.cache, "generate", part=part.identity(),
                                 params=run.exploit.params,
                                 inputs={"images": tensor_hash(images_u8)},
                                 model=self.edit_fingerprint(params),
                                 seed=run.seed, resolution=resolution, cpu_threads=CPU_THREADS)
        wkey = stage_key(self.cache, "finetune", part=part.identity(), params=run.exploit.params,
                         inputs={"images": tensor_hash(images_u8)}, model=fingerprint,
                         seed=run.seed,
                         resolution=resolution, cpu_threads=CPU_THREADS)
        gen_cfg = generation_config(generation, run.seed)
        gkey = stage_key(self.cache, "generate", part={"name": "generate",
                                                       "sampler": generation.sampler},
                         params=gen_cfg.to_dict(), inputs={"weights": wkey}, model=fingerprint,
                         seed=run.seed, resolution=resolution, cpu_threads=CPU_THREADS)
        return wkey, gkey

    def exploit_cached(
            self, run: Run, images_u8: torch.Tensor, generation: GenerationSettings) -> bool:
        """Whether a run's generations are in the cache (looked up, not verified or counted)."""
        return self.cache.has("generate", self.exploit_keys(run, images_u8, generation)[1])

    def exploit(
            self, run: Run, images_u8: torch.Tensor,
            generation: GenerationSettings) -> ExploitOutput:
        """Fine-tune on the run's images (weights cached), then generate (generations cached).

        On the CPU both run with one intra-op thread (``audit/run/workers.py``: the same numbers
        in a worker process or here)."""
        with single_thread(self._device()):
            return self._exploit(run, images_u8, generation)

    def _exploit(
            self, run: Run, images_u8: torch.Tensor,
            generation: GenerationSettings) -> ExploitOutput:
        part = EXPLOITS.get(run.exploit.name)
        if not part.params_model().trains:  # type: ignore[attr-defined]
            return self._edit(run, images_u8)
        # every fine-tuning exploit's parameters extend DreamboothParams (config, trained_weights,
        # load_trained)
        params = cast("DreamboothParams", part.validate(run.exploit.params))
        model = self.model_for(params)
        resolution = self._resolution()
        wkey, gkey = self.exploit_keys(run, images_u8, generation)
        gen_cfg = generation_config(generation, run.seed)
        tuned: dict[str, Any] = {}

        def fit() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            self.progress.note(f"exploit {run.label()}: fine-tune (not cached)")
            class_images = self.class_images(params, generation)
            unet, text_encoder, info = part.load()(model, from_uint8(images_u8),
                                                   params.config(run.seed),
                                                   self.progress, class_images=class_images)
            tuned.update(unet=unet, text_encoder=text_encoder)
            info = {**info, "model": {"role": getattr(params, "model", "protector"),
                                      "id": model.model_id,
                                      "fingerprint": model.fingerprint}}
            # what the exploit trained (LoRA: adapters)
            return params.trained_weights(unet, text_encoder), info

        with self.cache.lock("generate", gkey):
            hit = self.cache.get("generate", gkey)
            if hit is not None:  # the fine-tune's info travels with its generations: no re-fit
                return ExploitOutput(wkey, gkey, hit[0]["generations"],
                                     hit[1].get("finetune_info", {}))
            weights, winfo = cached(self.cache, "finetune", wkey, fit)
            unet, text_encoder = tuned.get("unet"), tuned.get("text_encoder")
            if unet is None:
                unet, text_encoder = params.load_trained(model, weights)
            generations = to_uint8(sampling.generate(model, unet, text_encoder, gen_cfg, resolution,  # type: ignore[arg-type]
                                                     self.progress))
            self.cache.put("generate", gkey, {"generations": generations},
                           {"prompts": list(gen_cfg.prompts), "finetune_info": winfo})
        return ExploitOutput(wkey, gkey, generations, winfo)

    def _edit(self, run: Run, images_u8: torch.Tensor) -> ExploitOutput:
        """An editing exploit's run: the run's images edited with the base model as loaded (its
        components, not reloaded), nothing trained; the edits cached under the generations'
        key."""
        from audit.parts.exploits.editing import EditParams

        part = EXPLOITS.get(run.exploit.name)
        params = cast(EditParams, part.validate(run.exploit.params))
        model = self.model_for(params)
        _, gkey = self.exploit_keys(run, images_u8, None)  # type: ignore[arg-type]
        info, editor = self.edit_info(params), self.editing_unet(params)

        def compute() -> Entry:
            self.progress.note(f"exploit {run.label()}: {params.mode} edits (not cached)")
            edits = part.load()(model, from_uint8(images_u8), params, run.seed,
                                self._resolution(), self.progress,
                                editor.unet if editor is not None else None)
            return {"generations": to_uint8(edits)}, {"prompts": list(params.prompts),
                                                      "finetune_info": info}

        tensors, _ = cached(self.cache, "generate", gkey, compute)
        return ExploitOutput("", gkey, tensors["generations"], info)

    # -- metrics -------------------------------------------------------------------------------
    def metric(
            self, name: str, generations_u8: torch.Tensor,
            reference_u8: torch.Tensor) -> dict[str, Any]:
        """A metric's per-image values on one run's generations (cached, under the entry's lock)."""
        return metric_stage(self.cache, name, generations_u8, reference_u8)


def class_config(params: DreamboothParams, generation: GenerationSettings) -> Any:
    """Prior preservation's class-image generation: the class prompt, image i from seed
    10 000 + i, the tier's sampling steps and guidance."""
    return sampling.GenerationConfig((params.class_prompt,), params.num_class_images,
                                     generation.steps, generation.guidance_scale, "", seed=10_000)


def generation_config(settings: GenerationSettings, seed: int) -> Any:
    return sampling.GenerationConfig(tuple(settings.prompts), settings.images_per_prompt,
                                     settings.steps,
                            settings.guidance_scale, settings.negative_prompt, seed=seed,
                            sampler=settings.sampler)


def metric_stage(
        cache: Cache, name: str, generations_u8: torch.Tensor,
        reference_u8: torch.Tensor) -> dict[str, Any]:
    """A metric's per-image values on one run's generations (cached, under the entry's lock)."""
    from audit.parts.metrics.build import get_metric

    metric = get_metric(name)
    part = METRICS.get(name)
    key = stage_key(cache, "metric", part={**part.identity(),
                                           "implementation": metric.implementation_name()},
                    params={}, inputs={"generations": tensor_hash(generations_u8),
                                       "reference": tensor_hash(reference_u8)},
                    model=None, seed=None)
    # An unavailable result (weights missing) is decided in well under a second and is not
    # cached, so that weights provided later are used; it is neither a hit nor a miss.
    with cache.lock("metric", key):
        looked_up = cache.has("metric", key)
        if looked_up:
            hit = cache.get("metric", key)  # a hit, or a corrupt entry counted as a miss
            if hit is not None:
                return hit[1]
        result = metric.compute(from_uint8(generations_u8), from_uint8(reference_u8)).to_dict()
        if result.get("unavailable") is None:
            if not looked_up and cache.enabled:
                cache.events.misses.append("metric")
            cache.put("metric", key, {}, result)
    return result
