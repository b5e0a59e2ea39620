"""Tiers: how much compute an audit spends, from the CI gate to the papers' own settings.

A tier is data grouped by what it configures: ``resolution`` and ``replicates``; the
``generation``, ``verdict`` and ``controls`` settings (``audit/settings.py``); and one section
per part it sets (``pid``, ``dreambooth``, ...), in that part's own parameter names. A part's
parameters are resolved with one precedence everywhere —

    part default  <  tier  <  scenario  <  --audit-set

— and every value that did not come from the part's default is recorded with the layer it
came from (Hypothesis' derived settings profiles are the model). ``paper`` is what the papers
ran (PID §6.1 and App. A; REFERENCE.md "Exploits used to evaluate"); ``standard`` keeps the
papers' recipe with fewer steps; ``smoke`` is the CPU gate on the built-in tiny model — its
numbers are real effects on a small model, not a claim about Stable Diffusion.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

from audit.registry import InvalidParams, Params, Part, did_you_mean
from audit.settings import ControlSettings, CoreSettings, GenerationSettings, VerdictSettings

SECTIONS: dict[str, type[Params]] = {
    "generation": GenerationSettings,
    "verdict": VerdictSettings,
    "controls": ControlSettings,
}
CORE_KEYS = tuple(CoreSettings.model_fields)

TIERS: dict[str, dict[str, Any]] = {
    "smoke": {
        "resolution": 64,
        # The default selection on this tier: scenarios tagged 'smoke' (--full-catalogue: all).
        "catalogue_tag": "smoke",
        # Replicates: the verdict's interval is a t / Fieller interval on replicate means
        # (audit/intervals.py); see benchmarks/results for the power this gives at smoke scale.
        "replicates": 3,
        "pid": {"steps": 100},
        # The trained tiny model learns the subject only when it nearly memorises the four
        # images: each step sees all four (batch 4, as one epoch of diffusers' shuffled loader),
        # at 3e-3 decayed to 0 by a cosine so that the outcome depends on the data rather than on
        # the last few noisy steps (model card, benchmarks/bench_tiny_effects.py). A property of
        # a 3-M-parameter model, not of the papers' recipe (SD: batch 1, 1000 steps at 2e-6).
        "dreambooth": {
            "steps": 450, "lr": 3e-3, "lr_schedule": "cosine", "batch_size": 4,
            "prior_preservation": False, "num_class_images": 0,
        },
        # 24 paired generations: generation is ~5 % of a fine-tune's cost here.
        "generation": {"images_per_prompt": 8, "steps": 10},
        # 64-px faces: dlib/MTCNN detect nothing below ~80 px (see audit/metrics/subject.py).
        "verdict": {"face_metric_substitute": "subject_similarity"},
        "controls": {},
    },
    "standard": {
        "resolution": None,
        "replicates": 3,
        "pid": {"steps": 200},
        "dreambooth": {"steps": 400, "num_class_images": 50},
        "generation": {"images_per_prompt": 8},
        # FDS needs facenet's VGGFace2 weights (a download): without them the standard tier
        # decides on dlib's identity similarity, which ships with its package — said in the
        # record and flagged (audit/engine.py: fallback). The paper tier declares no fallback.
        "verdict": {"bootstrap_resamples": 2000, "fallback_metric": "dlib_identity_similarity"},
        "controls": {},
    },
    "paper": {
        "resolution": None,
        "replicates": 3,
        "pid": {"steps": 1000},
        "dreambooth": {"steps": 1000, "num_class_images": 200},
        "generation": {"images_per_prompt": 20},
        # The papers' metrics or no verdict: a case whose verdict metric is unavailable is an error.
        "verdict": {"bootstrap_resamples": 2000, "fallback_metric": None},
        "controls": {},
    },
}

# Flat names of earlier versions, still accepted by --audit-set.
ALIASES = {
    "pgd_steps": "pid.steps",
    "finetune_steps": "dreambooth.steps",
    "finetune_lr": "dreambooth.lr",
    "finetune_batch_size": "dreambooth.batch_size",
    "finetune_lr_schedule": "dreambooth.lr_schedule",
    "train_text_encoder": "dreambooth.train_text_encoder",
    "prior_preservation": "dreambooth.prior_preservation",
    "num_class_images": "dreambooth.num_class_images",
    "images_per_prompt": "generation.images_per_prompt",
    "inference_steps": "generation.steps",
    "guidance_scale": "generation.guidance_scale",
    "bootstrap_resamples": "verdict.bootstrap_resamples",
    "face_metric_substitute": "verdict.face_metric_substitute",
    "fallback_metric": "verdict.fallback_metric",
    "noise_floor_control": "controls.noise_floor",
}


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class Resolved:
    """A part's or section's validated parameters and where each non-default value came from."""

    params: Params
    origin: dict[str, str] = field(default_factory=dict)  # dotted key -> tier | scenario | --audit-set

    def to_dict(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")


@dataclass(frozen=True)
class Tier:
    """A named tier with the user's ``--audit-set`` overrides applied on top."""

    name: str
    data: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> {key: value}

    # -- the shared settings -------------------------------------------------------------------
    @property
    def core(self) -> CoreSettings:
        values = {k: self.data.get(k) for k in CORE_KEYS if k in self.data}
        values.update(self.overrides.get("", {}))
        return CoreSettings(**values)

    @property
    def resolution(self) -> int | None:
        return self.core.resolution

    @property
    def replicates(self) -> int:
        return self.core.replicates

    def section(self, name: str) -> Params:
        return self.resolve_section(name).params  # type: ignore[return-value]

    @property
    def generation(self) -> GenerationSettings:
        return self.section("generation")  # type: ignore[return-value]

    @property
    def verdict(self) -> VerdictSettings:
        return self.section("verdict")  # type: ignore[return-value]

    @property
    def controls(self) -> ControlSettings:
        return self.section("controls")  # type: ignore[return-value]

    @property
    def non_standard(self) -> bool:
        """Settings changed from the named tier (more replicates than the tier's is not a change
        that weakens anything, so it is recorded but not flagged)."""
        for section, values in self.overrides.items():
            rest = {k: v for k, v in values.items()
                    if not (section == "" and k == "replicates" and isinstance(v, int) and v >= self.data.get("replicates", 1))}
            if rest:
                return True
        return False

    # -- resolution with precedence ------------------------------------------------------------
    def resolve_section(self, name: str) -> Resolved:
        model = SECTIONS[name]
        return _resolve(model, [("tier", self.data.get(name, {})), ("--audit-set", self.overrides.get(name, {}))],
                        f"tier '{self.name}' section '{name}'")

    def resolve_part(self, part: Part, scenario: dict[str, Any] | None = None) -> Resolved:
        """part default < tier < scenario < --audit-set, validated by the part's own model."""
        layers = [
            ("tier", self.data.get(part.name, {})),
            ("scenario", scenario or {}),
            ("--audit-set", self.overrides.get(part.name, {})),
        ]
        return _resolve(part.params_model(), layers, f"{part.kind} '{part.name}'")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": copy.deepcopy(self.data), "overrides": copy.deepcopy(self.overrides)}


def _resolve(model: type[Params], layers: list[tuple[str, dict[str, Any]]], where: str) -> Resolved:
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer, values in layers:
        merged = _merge(merged, values)
        for key in _flatten(values):
            origin[key] = layer
    try:
        params = model(**merged)
    except Exception as exc:  # pydantic ValidationError: name the layers involved
        from pydantic import ValidationError

        from audit.registry import format_validation

        if isinstance(exc, ValidationError):
            raise InvalidParams(format_validation(where, exc, model) + f" (layers: {origin})") from None
        raise
    return Resolved(params, origin)


def get_tier(name: str, overrides: dict[str, dict[str, Any]] | None = None) -> Tier:
    """The named tier with ``--audit-set`` overrides (an overridden tier is flagged non-standard)."""
    if name not in TIERS:
        raise ValueError(f"unknown tier '{name}'{did_you_mean(name, list(TIERS))}; choose one of: {', '.join(TIERS)} (--tier)")
    return Tier(name, TIERS[name], overrides or {})


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--audit-set KEY=VALUE`` items → {section: {key: value}}; values read as YAML scalars.

    KEY is ``replicates`` / ``resolution``, ``SECTION.key`` (generation, verdict, controls), or
    ``PART.key`` for a registered part (``pid.steps``, ``dreambooth.lr``, nested keys with
    dots: ``dreambooth.posterior.sigma``). Names and ranges are checked later, in one place,
    by ``validate_overrides``, before anything runs.
    """
    result: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or not key:
            raise ValueError(f"--audit-set {item!r}: expected KEY=VALUE, e.g. --audit-set dreambooth.steps=200")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        if "|" in str(raw) and key.endswith("prompts"):
            value = [s.strip() for s in raw.split("|")]
        section, _, rest = key.partition(".")
        if not rest:
            section, rest = "", key
        target = result.setdefault(section, {})
        *parents, leaf = rest.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result


def validate_overrides(tier: Tier) -> None:
    """Refuse unknown keys and out-of-range values of every override, before anything runs."""
    from audit.parts import REGISTRIES

    parts = {p.name: p for registry in REGISTRIES.values() for p in registry}
    for section, values in tier.overrides.items():
        if section == "":
            unknown = [k for k in values if k not in CORE_KEYS]
            if unknown:
                known = [*CORE_KEYS, *SECTIONS, *sorted(parts)]
                raise InvalidParams(
                    f"--audit-set {unknown[0]}: unknown setting{did_you_mean(unknown[0], list(CORE_KEYS) + list(ALIASES))}; "
                    f"use one of {', '.join(CORE_KEYS)} or SECTION.key with SECTION one of {', '.join(known[len(CORE_KEYS):])}"
                )
        elif section in SECTIONS:
            tier.resolve_section(section)
        elif section in parts:
            tier.resolve_part(parts[section])
        else:
            known = [*SECTIONS, *sorted(parts)]
            raise InvalidParams(
                f"--audit-set {section}.…: unknown section '{section}'{did_you_mean(section, known)}; "
                f"sections: {', '.join(known)}"
            )
    from pydantic import ValidationError

    from audit.registry import format_validation

    try:
        tier.core  # noqa: B018
    except ValidationError as exc:
        raise InvalidParams(format_validation("--audit-set / --replicates", exc, CoreSettings)) from None


TierSettings = Tier  # the name earlier versions used
