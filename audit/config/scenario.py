"""The declarative scenario catalogue: YAML files validated against a schema.

A scenario says what the exploiter does: image-space ``attack`` steps applied to the protected
images, and changes to the ``exploit`` itself (another instance prompt, a manipulated VAE
posterior). Files are read with ``yaml.safe_load``, may inherit from another file with
``extends:`` (deep merge, the child wins, lists are replaced), and each carries a ``version``
so results say which definition produced them. Files whose name starts with ``_`` are bases
for ``extends`` and are not run.

Every part is written in one grammar, ``name: {params}`` — attack steps (``- jpeg: {quality:
75}``), the exploit (``exploit: {dreambooth: {posterior: {sigma: zero}}}``) — and validated by
the part's own parameter model from the registry (``audit/parts/__init__.py``), keeping only the
keys the file writes: the tier supplies the rest when the case is planned. ``variants`` are partial
overrides of ``attack`` and ``exploit``, one exploit run each. ``adaptive`` asks for the adaptive
protector: the protection re-crafted through a transform chain (default: the attack) by EoT
over ``samples`` draws (``audit/parts/protections/eot.py``), judged beside the protection as it is.

The exploit is either ``standard`` — the audit's standard exploit (``--exploit``, DreamBooth by
default), with the changes the file writes, e.g. ``exploit: {standard: {posterior: {sigma:
zero}}}``; a file without ``exploit`` means ``standard: {}`` — or a registered exploit named
explicitly (``exploit: {lora: {rank: 32}}``), which stays that exploit whatever ``--exploit``
says. A ``standard`` exploit's parameters must suit every registered exploit, since which one
is standard is chosen when the audit runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from audit.errors import ScenarioError
from audit.parts import EXPLOITS, METRICS, TRANSFORMS, renamed_metric
from audit.parts.registry import (
    InvalidParams,
    Registry,
    did_you_mean,
    format_validation,
    parse_spec,
    split_spec,
)

CATALOGUE_DIR = Path(__file__).resolve().parents[2] / "scenarios"
# The exploit name that means "the audit's standard exploit" (--exploit; DreamBooth by default).
STANDARD_EXPLOIT = "standard"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    """One part as written in YAML, ``name: {params}``, with its params validated.

    ``params`` holds only the keys written in the file (validated by the part's model);
    the tier fills in the rest when the case is planned (``audit/config/tiers.py`` precedence).
    """

    part: str
    params: dict[str, Any] = Field(default_factory=dict)

    def to_yaml(self) -> dict[str, Any]:
        return {self.part: dict(self.params)}


class Variant(_Strict):
    """A partial override of the scenario (its ``attack`` or ``exploit``): one more exploit
    run; the verdict takes the worst case for the protector over all variants."""

    label: str | None = None
    attack: list[Step] | None = None
    exploit: Step | None = None


class VerdictSpec(_Strict):
    metric: str = "fds"
    # Retained protection is 1 when the attack removed nothing, so a lower bound above 1 is a
    # threshold no protection can meet (only an attack that helps the protector would).
    retained_at_least: float = Field(0.5, ge=0, le=1, description="pass threshold on retained "
            "protection, in [0, 1]",
                                     allow_inf_nan=False)
    # The effect-size minimum of this scenario (audit/config/settings.py
    # VerdictSettings.min_effect);
    # None: the tier's. --audit-set verdict.min_effect overrides both.
    min_effect: float | None = Field(None, ge=0, le=1, allow_inf_nan=False,
                                     description="minimum share of what the exploit learned that "
                                                 "the protection removes")


class Adaptive(_Strict):
    """The adaptive protector (``adaptive:``): the protection re-crafted through the transform
    chain the exploiter applies, its objective averaged over ``samples`` draws of the chain (EoT,
    ``audit/parts/protections/eot.py``). ``transform`` defaults to the scenario's ``attack``;
    ``gradient`` is how each step is crafted through: ``auto`` (its differentiable form, else
    BPDA with the identity), ``bpda`` (the real step forward, the identity backward),
    ``bpda-surrogate`` (the real step forward, its differentiable form backward)."""

    transform: list[Step]
    samples: int = Field(1, ge=1, le=1000, description="EoT samples per PGD iteration")
    gradient: Literal["auto", "bpda", "bpda-surrogate"] = "auto"


class Scenario(_Strict):
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: int = Field(..., ge=1)
    title: str
    why: str
    source: str
    tags: list[str] = Field(default_factory=list)
    attack: list[Step] = Field(default_factory=list)
    exploit: Step = Step(part=STANDARD_EXPLOIT)
    variants: list[Variant] = Field(default_factory=list)
    verdict: VerdictSpec = VerdictSpec()
    # What the scenario needs of the protection: "objective" for scenarios that re-craft through
    # the protection's own objective (adaptive, EoT); a protection without one (dir:PATH) skips
    # them.
    requires: list[Literal["objective"]] = Field(default_factory=list)
    # The adaptive protector: the protection re-crafted through this chain (implies ``requires:
    # [objective]``); None: the protection as it is.
    adaptive: Adaptive | None = None
    path: str = ""

    def definition_hash(self) -> str:
        """Hash of the validated definition (not of the file's bytes or path)."""
        payload = self.model_dump(exclude={"path"})
        # unset: the hashes of earlier definitions stay
        if payload["verdict"].get("min_effect") is None:
            payload["verdict"].pop("min_effect", None)
        if payload.get("adaptive") is None:
            payload.pop("adaptive", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def resolved_variants(self) -> list[tuple[str, list[Step], Step]]:
        """(label, attack steps, exploit) of every exploit run this scenario asks for.

        A variant's ``exploit`` params are merged over the scenario's when it names the same
        part (the variant wins); its ``attack`` replaces the scenario's.
        """
        if not self.variants:
            return [("", list(self.attack), self.exploit)]
        out = []
        for i, v in enumerate(self.variants):
            exploit = self.exploit
            if v.exploit is not None:
                params = (_merge(self.exploit.params, v.exploit.params) if v.exploit.part
                          == self.exploit.part else v.exploit.params)
                exploit = Step(part=v.exploit.part, params=params)
            attack = list(v.attack) if v.attack is not None else list(self.attack)
            out.append((v.label or _variant_label(v, i), attack, exploit))
        return out


def _variant_label(variant: Variant, index: int) -> str:
    if variant.exploit is not None and variant.exploit.params:
        return ", ".join(f"{k}={v}" for k, v in _flatten_items(variant.exploit.params))
    if variant.attack is not None:
        return " → ".join(s.part for s in variant.attack) or "no attack"
    return f"variant {index + 1}"


def _flatten_items(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            items.extend(_flatten_items(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    # reported against the file being loaded, naming the link that closes the cycle
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ScenarioError(f"{chain[0]}: 'extends' forms a cycle ({cycle}): {chain[-1].name} "
                            f"extends {path.name}, which is already in the chain; remove that link "
                            "(or another one of the cycle).")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        origin = f" (named by 'extends' in {chain[-1]})" if chain else ""
        raise ScenarioError(
            f"{path}: scenario file not found{origin}; check the file name.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(
            f"{path}: not valid YAML: {exc}. Fix the syntax at the position shown.") from None
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{path}: a scenario file must hold a mapping (id, version, title, ...), got "
            f"{type(data).__name__}."
        )
    parent_name = data.pop("extends", None)
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise ScenarioError(f"{path}: field 'extends' must be a file name such as '_base.yaml'.")
    if not parent_name or Path(parent_name).name != parent_name or parent_name in (".", ".."):
        raise ScenarioError(f"{path}: field 'extends' is {parent_name!r}; it names a file of this "
                            f"folder ({path.parent}) by its name alone, such as '_base.yaml' — "
                            "copy the base file here.")
    parent = _read_yaml(path.parent / parent_name, (*chain, path))
    return _merge(parent, data)


def _step(registry: Registry, raw: Any, where: str, example: str) -> dict[str, Any]:
    try:
        spec = parse_spec(registry, raw, where, example, partial=True)
    except InvalidParams as exc:
        raise ScenarioError(f"{exc}. Fix the scenario file.") from None
    return {"part": spec.name, "params": spec.params}


def _attack_steps(path: Path, raw: Any, field: str = "attack") -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(f"{path}: field '{field}' must be a list of steps such as '- jpeg: "
                            f"{{quality: 75}}'.")
    return [_step(TRANSFORMS, step, f"{path}: field {field}[{i}]", "'- jpeg: {quality: 75}'") for i,
            step in enumerate(raw)]


def _exploit(path: Path, raw: Any, field: str = "exploit") -> dict[str, Any]:
    if isinstance(raw, dict) and "method" in raw:
        raise ScenarioError(
            f"{path}: field '{field}' uses the old form 'method: {raw['method']}, ...'; write the "
            f"exploit as one part '{field}: {{{raw['method']}: {{params}}}}', e.g. 'exploit: "
            f"{{dreambooth: {{posterior: {{sigma: zero}}}}}}'."
        )
    example = ("'exploit: {standard: {instance_prompt: a photo of sks face}}' or 'exploit: {lora: "
               "{rank: 32}}'")
    try:
        name, params = split_spec(raw, f"{path}: field {field}", example)
    except InvalidParams as exc:
        raise ScenarioError(f"{exc}. Fix the scenario file.") from None
    if name != STANDARD_EXPLOIT:
        if name not in EXPLOITS:
            known = [STANDARD_EXPLOIT, *EXPLOITS.names()]
            raise ScenarioError(
                f"{path}: field {field}: unknown exploit '{name}'{did_you_mean(name, known)}; "
                f"known: {', '.join(known)} ('{STANDARD_EXPLOIT}' is the audit's standard exploit, "
                "--exploit). Fix the scenario file.")
        return _step(EXPLOITS, raw, f"{path}: field {field}", example)
    # The standard exploit is chosen at run time: its parameters must suit every exploit that
    # can be standard (the fine-tuning ones; an editing exploit is named by its scenario).
    written: dict[str, Any] = {}
    refused: dict[str, str] = {}
    standard_capable = [part for part in EXPLOITS if part.params_model().trains]  # type: ignore[attr-defined]
    for part in standard_capable:
        try:
            written = parse_spec(EXPLOITS, {part.name: params}, f"{path}: field {field}", example,
                                 partial=True).params
        except InvalidParams as exc:
            refused[part.name] = str(exc)
    if refused:
        names = [part.name for part in standard_capable]
        accepting = [name for name in names if name not in refused]
        hint = (f"; to use them with {' or '.join(repr(a) for a in accepting)} alone, name it "
                f"instead, e.g. 'exploit: {{{accepting[0]}: {{...}}}}'" if accepting else "")
        raise ScenarioError(
            f"{next(iter(refused.values()))} — '{STANDARD_EXPLOIT}' is whichever exploit --exploit "
            "names, so its parameters must suit every exploit "
            f"({', '.join(names)}){hint}. Fix the scenario file.")
    return {"part": STANDARD_EXPLOIT, "params": written}


def _variants(path: Path, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(f"{path}: field 'variants' must be a list of partial overrides such as "
                            "'- exploit: {dreambooth: {instance_prompt: a photo of sks face}}'.")
    out = []
    for i, v in enumerate(raw):
        where = f"variants[{i}]"
        if (not isinstance(v, dict) or not set(v) <= {"label", "attack", "exploit"}
                or not ({"attack", "exploit"} & set(v))):
            raise ScenarioError(f"{path}: field '{where}': a variant overrides 'attack' and/or "
                                f"'exploit' (and may have a 'label'), got {v!r}. Fix the scenario "
                                "file.")
        item: dict[str, Any] = {"label": v.get("label")}
        if "attack" in v:
            item["attack"] = _attack_steps(path, v["attack"], f"{where}.attack")
        if "exploit" in v:
            item["exploit"] = _exploit(path, v["exploit"], f"{where}.exploit")
        out.append(item)
    return out


ADAPTIVE_KEYS = ("transform", "samples", "gradient")


def _adaptive(path: Path, raw: Any, attack: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``adaptive:`` mapping with its transform chain validated (one step or a list, in the
    attack grammar; absent: the scenario's own attack)."""
    if raw is None:
        return None
    example = "'adaptive: {transform: [jpeg: {quality: 75}], samples: 4}'"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: field 'adaptive' must be a mapping such as {example}. Fix "
                            "the scenario file.")
    unknown = [k for k in raw if k not in ADAPTIVE_KEYS]
    if unknown:
        raise ScenarioError(
            f"{path}: field 'adaptive': unknown field '{unknown[0]}'"
            f"{did_you_mean(str(unknown[0]), list(ADAPTIVE_KEYS))}; allowed: "
            f"{', '.join(ADAPTIVE_KEYS)}. Fix the scenario file.")
    out = dict(raw)
    chain = raw.get("transform")
    if chain is None:
        out["transform"] = list(attack)
    else:
        out["transform"] = _attack_steps(path, chain if isinstance(chain, list) else [chain],
                                         "adaptive.transform")
    if not out["transform"]:
        raise ScenarioError(f"{path}: field 'adaptive' has no transform to adapt to: the scenario "
                            f"has no attack and 'adaptive.transform' is not given; write one, e.g. "
                            f"{example}. Fix the scenario file.")
    return out


def _format_validation(where: str, exc: ValidationError, model: type[BaseModel]) -> str:
    return format_validation(where, exc, model) + ". Fix the scenario file."


def load_scenario(path: Path) -> Scenario:
    """Read, inherit, validate one scenario file; ScenarioError names the file and the field."""
    path = Path(path)
    data = _read_yaml(path)
    data["attack"] = _attack_steps(path, data.get("attack"))
    data["exploit"] = _exploit(path, data.get("exploit", STANDARD_EXPLOIT))
    data["variants"] = _variants(path, data.get("variants"))
    data["adaptive"] = _adaptive(path, data.get("adaptive"), data["attack"])
    if data["adaptive"] is not None:  # re-crafting needs the protection's objective
        requires = data.get("requires") or []
        if isinstance(requires, list) and "objective" not in requires:
            data["requires"] = [*requires, "objective"]
    data.setdefault("id", path.stem)
    if not isinstance(data["id"], str):
        raise ScenarioError(
            f"{path}: field 'id' must be text; YAML read it as {type(data['id']).__name__} "
            f"{data['id']!r} (unquoted yes/no/on/off/numbers are not text). Quote it: id: "
            f"\"{path.stem}\"."
        )
    if data["id"] != path.stem:
        raise ScenarioError(
            f"{path}: field 'id' is '{data['id']}' but the file is named '{path.name}'; make them "
            "agree (the id names the test item)."
        )
    data["path"] = str(path)
    metric = (data.get("verdict")
              or {}).get("metric") if isinstance(data.get("verdict"), dict) else None
    if metric is not None:
        if renamed_metric(metric):
            raise ScenarioError(f"{path}: field 'verdict.metric': {renamed_metric(metric)}. Fix "
                                "the scenario file.")
        if metric not in METRICS:
            raise ScenarioError(
                f"{path}: field 'verdict.metric': unknown metric "
                f"'{metric}'{did_you_mean(str(metric), METRICS.names())}; known: "
                f"{', '.join(METRICS.names())}. Fix the scenario file."
            )
    try:
        return Scenario(**data)
    except ValidationError as exc:
        raise ScenarioError(_format_validation(str(path), exc, Scenario)) from None


def catalogue_files(directory: Path | None = None) -> list[Path]:
    """The runnable scenario files of a catalogue, sorted by name (deterministic for xdist)."""
    directory = Path(directory) if directory else CATALOGUE_DIR
    if not directory.is_dir():
        raise ScenarioError(f"{directory}: scenario folder not found; pass --scenarios DIR with "
                            "*.yaml files.")
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("_"))
