"""What an audit will cost before it runs: the work left after cache hits, and its GPU-hours.

``python -m audit plan --estimate`` (and the plugin's start-up line) counts the protection
crafts, fine-tunes and generations the selected cases still need — each run's image chain is
followed through the cache (protected images, attacked images, then the run's generations),
so a run whose inputs are not computed yet is pending, and one whose generations are cached
costs nothing — and prices them with per-stage timings measured on this device:

    craft       = c.protect_fixed + iterations × c.protect_per_iteration
    fine-tune   = c.finetune_fixed[exploit] + steps × c.finetune_per_step[exploit]
    generation  = c.generate_fixed + images × sampling steps × c.generate_per_image_step

(the class images of prior preservation and the untrained reference are generations). The
calibration fits each line through two short measurements (``SIZES``: e.g. 2 and 6 PGD
iterations), so the fixed cost (building the optimiser, the pipeline) is not multiplied by
the iteration count. It is cached under ``<results-dir>/cache/calibration/``, keyed by the
device's name, the model, the tier, the resolution and the toolkit version. Attack steps
(JPEG, purifiers) are not priced: on the catalogue they are seconds next to a fine-tune, save
the diffusion purifiers, which the estimate names when the selection has them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from audit import __version__
from audit.parts.protections.eot import objective_missing
from audit.results.provenance import cpu_description
from audit.run.cache import canonical_json

if TYPE_CHECKING:
    from audit.parts.exploits.dreambooth import DreamboothParams
    from audit.parts.exploits.editing import EditParams

SIZES = (2, 6)  # the two sizes each stage is timed at (iterations, steps, sampling steps)


@dataclass
class Work:
    """The compute an audit still needs: one entry per pending unit."""

    crafts: list[int] = field(default_factory=list)  # PGD iterations of each protection craft
    finetunes: list[tuple[str, int]] = field(default_factory=list)  # (exploit, steps)
    generations: list[tuple[int, int]] = field(default_factory=list)  # (images, sampling steps)
    cached_runs: int = 0  # exploit runs whose generations are in the cache
    cached_crafts: int = 0
    purifiers: set[str] = field(default_factory=set)  # model-based attack steps (not priced)

    def counts(self) -> dict[str, int]:
        return {"protection_crafts": len(self.crafts), "fine_tunes": len(self.finetunes),
                "generation_batches": len(self.generations),
                "generated_images": sum(n for n, _ in self.generations),
                "cached_runs": self.cached_runs, "cached_crafts": self.cached_crafts}


@dataclass(frozen=True)
class Calibration:
    """Seconds per unit of each stage on one device, model, tier and resolution."""

    device: str
    protect_fixed: float
    protect_per_iteration: float
    finetune_fixed: dict[str, float]
    finetune_per_step: dict[str, float]
    generate_fixed: float
    generate_per_image_step: float
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: (tuple(v) if k == "notes" else v) for k, v in data.items()
                                  if k in names}
        return cls(**kwargs)


def cost_seconds(work: Work, cal: Calibration) -> dict[str, float]:
    """Seconds of device time per stage: the lines of the module docstring summed."""
    crafts = sum(cal.protect_fixed + n * cal.protect_per_iteration for n in work.crafts)
    finetunes = 0.0
    for exploit, steps in work.finetunes:
        if exploit not in cal.finetune_per_step:
            raise KeyError(f"the calibration has no timing for exploit '{exploit}'")
        finetunes += cal.finetune_fixed[exploit] + steps * cal.finetune_per_step[exploit]
    generations = sum(cal.generate_fixed + n * s * cal.generate_per_image_step
                      for n, s in work.generations)
    return {"protection_crafts": crafts, "fine_tunes": finetunes, "generations": generations,
            "total": crafts + finetunes + generations}


def fit_line(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """(fixed, per-unit) seconds through two (units, seconds) measurements; both ≥ 0."""
    (a, ta), (b, tb) = small, large
    per = max((tb - ta) / (b - a), 0.0)
    return max(ta - a * per, 0.0), per


def summary_lines(work: Work, cal: Calibration | None, gpus: int = 1,
                  why_not: str | None = None) -> list[str]:
    """The estimate as printed: counts, then GPU-hours per stage (or why there are none)."""
    c = work.counts()
    lines = [f"estimate: {c['protection_crafts']} protection crafts, {c['fine_tunes']} fine-tunes, "
             f"{c['generation_batches']} generation batches ({c['generated_images']} images) "
             f"still to compute; {c['cached_runs']} exploit runs and {c['cached_crafts']} crafts "
             "already cached"]
    if cal is None:
        lines.append(f"estimate: GPU-hours not known: {why_not or 'no calibration'}")
        return lines
    cost = cost_seconds(work, cal)
    hours = cost["total"] / 3600
    unit = "CPU" if cal.device.startswith(("cpu", "mps")) else "GPU"
    lines.append(
        f"estimate: {hours:.2f} {unit}-hours on {cal.device} (crafts "
        f"{cost['protection_crafts'] / 3600:.2f}"
        f" h, fine-tunes {cost['fine_tunes'] / 3600:.2f} h, generations "
        f"{cost['generations'] / 3600:.2f} h)" + (f"; ≈ {hours / gpus:.2f} h of wall time on "
                                                   f"{gpus} GPUs" if gpus > 1 else ""))
    if work.purifiers:
        lines.append("estimate: not priced: the diffusion purifiers' attack steps ("
                     f"{', '.join(sorted(work.purifiers))})")
    return lines


# -- the calibration, cached --------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = cpu_description()["model"] or "unknown CPU"
    return f"{device.type}: {platform.processor() or platform.machine()} ({cpu})"




def calibration_path(cache_root: Path, device: str, model: str, tier: str,
                     resolution: int | str) -> Path:
    """Where the calibration of (device, model, tier, resolution, toolkit version) is kept."""
    ident = canonical_json({"device": device, "model": model, "tier": tier,
                            "resolution": resolution, "toolkit": __version__})
    return Path(cache_root) / "calibration" / f"{hashlib.sha256(ident.encode()).hexdigest()}.json"


def load_calibration(path: Path) -> Calibration | None:
    try:
        return Calibration.from_dict(json.loads(path.read_text(encoding="utf-8"))["calibration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_calibration(path: Path, cal: Calibration, ident: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**ident, "created": time.time(), "calibration": cal.to_dict()},
                              indent=1))
    tmp.replace(path)


def timed(device: torch.device, fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``, the device's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


# -- the work left, followed through the cache ---------------------------------------------------
def count_work(session: Any, cases: list[tuple[Any, ...]], lookup: bool) -> Work:
    """The pending work of ``cases`` — (scenario, subject name[, protection item]) — of an
    ``AuditSession`` (no item: the first protection); with ``lookup`` (a cache with entries)
    each run's chain is followed through the cache. Runs shared by several protections (the
    clean runs, the matched controls, the null baseline) are counted once."""
    work, seen = Work(), set[tuple[Any, ...]]()
    generation = session.tier.generation
    images = len(generation.prompts) * generation.images_per_prompt
    for scenario, subject_name, *item in cases:
        kind = session.subject_kind(subject_name)
        audited = session.audited(item[0] if item else None, kind)
        if "objective" in scenario.requires and objective_missing(audited.protection):
            continue  # skipped by the case, as run/case.py does
        plan = session.plan(scenario, audited.spec, kind)
        # the subject's images key the cache; without lookups (and the paper tier's native
        # resolution, which needs the model) they are not loaded
        subject = session.subject(subject_name) if lookup else None
        for run in plan.unique_runs():
            if (subject_name, run.identity) in seen:
                continue
            seen.add((subject_name, run.identity))
            chain = _chain_images(session, audited, plan, run, (subject_name, subject), work,
                                  seen)
            _count_run(session, run, chain, work, seen, lookup, images)
        for seed in plan.seeds:
            key = ("untrained", plan.standard_exploit.name, seed)
            if key not in seen:
                seen.add(key)
                if not (lookup and session.cache.has("untrained", session.stages.untrained_key(
                        plan.standard_exploit, generation, seed))):
                    work.generations.append((images, generation.steps))
    return work


def _lookup(cache: Any, stage: str, key: str) -> torch.Tensor | None:
    hit = cache.get(stage, key) if cache.has(stage, key) else None
    return None if hit is None else hit[0]["images"]


def _chain_images(session: Any, audited: Any, plan: Any, run: Any, subject: tuple[str, Any],
                  work: Work, seen: set) -> torch.Tensor | None:
    """The run's training images when every step of its chain is cached, else None; ``subject``
    is (name, Subject or None: no lookups). A craft of the audited protection is counted once
    per subject and seed, as pending or cached."""
    from audit.data.images import to_uint8
    from audit.parts import TRANSFORMS
    from audit.parts.protections.simple import RandomNoise
    from audit.run.fingerprint import code_fingerprint

    name, loaded = subject
    current = to_uint8(loaded.images) if loaded is not None else None
    for step in run.chain:
        if step.kind == "protection":
            is_audited = step.spec == plan.protection
            protection = (audited.protection if is_audited
                          else RandomNoise(float(step.spec.params["epsilon"])))
            code = audited.code if is_audited else code_fingerprint(protection)
            if current is not None and code.sha256:
                key = session.stages.protect_key(protection, step, loaded, session.tier, code)
                current = _lookup(session.cache, "protect", key)
            else:
                current = None
            if is_audited and (name, audited.spec, "craft", step.seed) not in seen:
                seen.add((name, audited.spec, "craft", step.seed))
                if current is None:
                    work.crafts.append(int(protection.params(session.tier).get("steps") or 0))
                else:
                    work.cached_crafts += 1
        else:
            if TRANSFORMS.get(step.spec.name).uses_model:
                work.purifiers.add(step.spec.name)
            current = (_lookup(session.cache, "transform",
                               session.stages.transform_key(step, current))
                       if current is not None else None)
        if current is None:
            return None
    return current


def _count_run(session: Any, run: Any, images: torch.Tensor | None, work: Work, seen: set,
               lookup: bool, n_images: int) -> None:
    """A run's fine-tune, generations and (once per audit) class images, unless cached."""
    from audit.parts import EXPLOITS
    from audit.parts.exploits import trains

    generation = session.tier.generation
    raw = EXPLOITS.get(run.exploit.name).validate(run.exploit.params)
    if not trains(run.exploit.name):  # an editing exploit: one edit per image and prompt
        edit = cast("EditParams", raw)
        if images is not None and lookup and session.cache.has(
                "generate", session.stages.exploit_keys(run, images, generation)[1]):
            work.cached_runs += 1
            return
        edits = len(edit.prompts) * (len(images) if images is not None else 4)
        work.generations.append((edits, max(1, round(edit.steps * edit.strength))))
        return
    params = cast("DreamboothParams", raw)
    finetuned = False
    if images is not None and lookup:
        wkey, gkey = session.stages.exploit_keys(run, images, generation)
        if session.cache.has("generate", gkey):
            work.cached_runs += 1
            return
        finetuned = session.cache.has("finetune", wkey)
    if not finetuned:
        work.finetunes.append((run.exploit.name, int(params.steps)))
        if params.prior_preservation:
            ident = ("class_images", params.class_prompt, params.num_class_images,
                     getattr(params, "model", "protector"))
            if ident not in seen:
                seen.add(ident)
                key = session.stages.class_images_key(params, generation) if lookup else None
                if not (key and session.cache.has("class_images", key)):
                    work.generations.append((int(params.num_class_images), generation.steps))
    work.generations.append((n_images, generation.steps))


# -- the calibration run -------------------------------------------------------------------------
def _override(options: Any, section: str, key: str, value: Any) -> Any:
    """The tier of ``options`` with one more ``--audit-set section.key=value``."""
    import copy

    overrides = copy.deepcopy(options.overrides)
    overrides.setdefault(section, {})[key] = value
    return dataclasses.replace(options, overrides=overrides).tier_settings


def _time_crafts(session: Any, subject: Any) -> tuple[float, float, str | None]:
    """(fixed, per-iteration) seconds of the audited protection, or one whole craft when its
    iterations cannot be set (a module:factory or folder protection)."""
    from audit.parts.protections.base import ProtectionContext
    from audit.parts.protections.build import build_protection

    options = session.options
    spec = options.protections[0]  # several protections: the first is timed (the note says so)

    def craft(tier: Any) -> float:
        protection = build_protection(spec, tier, options.epsilon)[0]
        ctx = ProtectionContext(session.model if protection.uses_model else None,
                                session.device, 0, tier, session.progress, subject)
        return timed(session.device, lambda: protection.protect(subject.images.clone(), ctx))

    several = (f"protection: {spec}'s crafts timed; the crafts of "
               f"{', '.join(options.protections[1:])} are priced at its per-iteration time"
               if len(options.protections) > 1 else None)
    if "steps" not in session.protection.params(session.tier) or ":" in spec:
        note = "protection: one whole craft timed (no 'steps' to scale)"
        return craft(session.tier), 0.0, f"{note}; {several}" if several else note
    measured = [(n, craft(_override(options, spec, "steps", n))) for n in SIZES]
    return (*fit_line(*measured), several)


def _time_finetune(session: Any, subject: Any, spec: Any) -> tuple[float, float]:
    """(fixed, per-step) seconds of one exploit's fine-tune with its resolved parameters."""
    from audit.parts import EXPLOITS
    from audit.run.stages import single_thread

    part = EXPLOITS.get(spec.name)
    measured = []
    for n in SIZES:
        params = cast("DreamboothParams", part.validate({**spec.params, "steps": n}))
        # the class half of a batch costs the same whatever its images: the subject's stand in
        classes = subject.images if params.prior_preservation else None
        model = session.stages.model_for(params)

        def fit(p: Any = params, m: Any = model, c: Any = classes) -> Any:
            return part.load()(m, subject.images, p.config(0), session.progress, class_images=c)

        with single_thread(session.device):
            measured.append((n, timed(session.device, fit)))
    return fit_line(*measured)


def _time_generation(session: Any) -> tuple[float, float]:
    """(fixed, per image × sampling step) seconds of the tier's generation batch."""
    from audit.diffusion.sampling import GenerationConfig, generate
    from audit.run.stages import single_thread

    g, model = session.tier.generation, session.model
    measured = []
    for n in SIZES:
        cfg = GenerationConfig((g.prompts[0],), g.images_per_prompt, n, g.guidance_scale,
                               g.negative_prompt, seed=0, sampler=g.sampler)
        def sample(c: Any = cfg) -> Any:
            return generate(model, model.unet, model.text_encoder, c, session.resolution,
                            session.progress)

        with single_thread(session.device):
            measured.append((n, timed(session.device, sample)))
    fixed, per_step = fit_line(*measured)
    return fixed, per_step / g.images_per_prompt


def calibrate(session: Any, exploits: list[Any], subject_name: str) -> Calibration:
    """Time each stage at two small sizes on the session's device and model (seconds to a
    minute: the model's load is most of it)."""
    subject = session.subject(subject_name)
    with session.progress.stage(f"calibration on {device_name(session.device)}"):
        p_fixed, p_per, note = _time_crafts(session, subject)
        fixed, per = {}, {}
        for spec in exploits:
            fixed[spec.name], per[spec.name] = _time_finetune(session, subject, spec)
        g_fixed, g_per = _time_generation(session)
    return Calibration(device_name(session.device), p_fixed, p_per, fixed, per, g_fixed, g_per,
                       (note,) if note else ())


def estimate(session: Any, cases: list[tuple[Any, ...]], *, run_calibration: bool = True,
             gpus: int = 1) -> tuple[Work, Calibration | None, list[str]]:
    """The work ``cases`` still need, its calibration (cached; measured when absent and
    ``run_calibration``) and the lines that say both."""
    root = session.cache.root
    lookup = session.cache.enabled and any(root.glob("*/*/*/manifest.json"))
    notes = []
    try:
        work = count_work(session, cases, lookup)
    except Exception as exc:  # the model (its fingerprint keys the cache) cannot be loaded here
        if not lookup:
            raise
        work = count_work(session, cases, False)
        notes.append(f"estimate: cache not consulted ({type(exc).__name__}: {exc}); every run "
                     "counted as pending")
    ident = {"device": device_name(session.device), "model": session.options.model,
             "tier": session.tier.name, "resolution": session.tier.resolution or "native"}
    path = calibration_path(root, ident["device"], ident["model"], ident["tier"],
                            ident["resolution"])
    cal, why = load_calibration(path), None
    names = {name for name, _ in work.finetunes}
    if cal is not None and not names <= set(cal.finetune_per_step):
        cal = None  # an exploit the cached calibration has not timed
    if cal is None and run_calibration and cases:
        from audit.parts.exploits import trains

        # the fine-tuning exploits are timed; an edit is priced as generation (no training)
        specs = {run.exploit.name: run.exploit for scenario, _, *item in cases
                 for run in session.plan(scenario, item[0] if item else None).runs
                 if trains(run.exploit.name)}
        try:
            cal = calibrate(session, list(specs.values()), cases[0][1])
            save_calibration(path, cal, ident)
        except Exception as exc:
            why = f"the calibration could not run ({type(exc).__name__}: {exc})"
    elif cal is None:
        why = ("no calibration cached for this device, model and tier: run python -m audit plan "
               "--estimate with the same --model, --tier and --results-dir to measure one")
    return work, cal, [*notes, *summary_lines(work, cal, gpus, why)]
