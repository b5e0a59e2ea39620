"""The declarative scenario catalogue: YAML files validated against a schema.

A scenario says what the exploiter does: image-space ``attack`` steps applied to the protected
images, and changes to the ``exploit`` itself (another instance prompt, a manipulated VAE
posterior). Files are read with ``yaml.safe_load``, may inherit from another file with
``extends:`` (deep merge, the child wins, lists are replaced), and each carries a ``version``
so results say which definition produced them. Files whose name starts with ``_`` are bases
for ``extends`` and are not run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from audit.errors import ScenarioError
from audit.transforms.corruptions import TRANSFORMS

CATALOGUE_DIR = Path(__file__).resolve().parent.parent / "scenarios"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PosteriorSpec(_Strict):
    """How the exploiter draws latents from the VAE posterior N(μ, σ²) while fine-tuning.

    ``sample`` is standard LDM training (z = μ + σ·ε). PID §6.4 adaptive attacks: ``zero``
    (σ = 0: train on μ), ``clip`` (σ clipped to at most ``value``), ``fixed`` (σ = ``value``,
    e.g. 1e-7 as in PID Table 6).
    """

    sigma: Literal["sample", "zero", "clip", "fixed"] = "sample"
    value: float | None = Field(None, ge=0)

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and v != v:
            raise ValueError("value must be a number, not NaN")
        return v


class ExploitVariant(_Strict):
    """One exploit run of a scenario that tries several (e.g. PID App. A.5's c_explo)."""

    instance_prompt: str = Field(..., min_length=1)


class ExploitSpec(_Strict):
    """The exploit: DreamBooth fine-tuning (Ruiz et al. 2023) then generation (PID App. A.1)."""

    method: Literal["dreambooth"] = "dreambooth"
    instance_prompt: str | None = Field(
        None, description="fine-tuning prompt; default: the tier's protector prompt 'a photo of sks person'"
    )
    variants: list[ExploitVariant] = Field(
        default_factory=list,
        description="several exploit runs; the verdict takes the worst case for the protector",
    )
    posterior: PosteriorSpec = PosteriorSpec()
    train_text_encoder: bool | None = None


class VerdictSpec(_Strict):
    metric: str = "identity_similarity"
    retained_at_least: float = Field(0.5, description="pass threshold on retained protection")


class AttackStep(_Strict):
    """One image-space step: a registered part name and its validated parameters."""

    part: str
    params: dict[str, Any] = Field(default_factory=dict)


class Scenario(_Strict):
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: int = Field(..., ge=1)
    title: str
    why: str
    source: str
    tags: list[str] = Field(default_factory=list)
    attack: list[AttackStep] = Field(default_factory=list)
    exploit: ExploitSpec = ExploitSpec()
    verdict: VerdictSpec = VerdictSpec()
    path: str = ""

    def definition_hash(self) -> str:
        """Hash of the validated definition (not of the file's bytes or path)."""
        payload = self.model_dump(exclude={"path"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def exploit_prompts(self, default_prompt: str) -> list[str]:
        """The instance prompts of every exploit run this scenario asks for."""
        if self.exploit.variants:
            return [v.instance_prompt for v in self.exploit.variants]
        return [self.exploit.instance_prompt or default_prompt]


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ScenarioError(f"{path}: 'extends' forms a cycle ({cycle}); remove one of the links.")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        origin = f" (named by 'extends' in {chain[-1]})" if chain else ""
        raise ScenarioError(f"{path}: scenario file not found{origin}; check the file name.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}. Fix the syntax at the position shown.") from None
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{path}: a scenario file must hold a mapping (id, version, title, ...), "
            f"got {type(data).__name__}."
        )
    parent_name = data.pop("extends", None)
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise ScenarioError(f"{path}: field 'extends' must be a file name such as '_base.yaml'.")
    parent = _read_yaml(path.parent / parent_name, (*chain, path))
    return _merge(parent, data)


def _attack_steps(path: Path, raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(f"{path}: field 'attack' must be a list of steps such as '- jpeg: {{quality: 75}}'.")
    steps = []
    known = sorted(TRANSFORMS)
    for i, step in enumerate(raw):
        where = f"{path}: field 'attack[{i}]'"
        if isinstance(step, str):
            step = {step: {}}
        if not isinstance(step, dict) or len(step) != 1:
            raise ScenarioError(f"{where}: each step is one mapping 'name: {{params}}', e.g. '- jpeg: {{quality: 75}}'.")
        (name, params), = step.items()
        if name not in TRANSFORMS:
            raise ScenarioError(
                f"{where}: unknown scenario part '{name}'{_suggest(str(name), known)}; "
                f"known parts: {', '.join(known)}."
            )
        params = params or {}
        if not isinstance(params, dict):
            raise ScenarioError(f"{where}.{name}: parameters must be a mapping, got {params!r}.")
        param_model = TRANSFORMS[name][0]
        try:
            validated = param_model(**params)
        except ValidationError as exc:
            raise ScenarioError(_format_validation(f"{where}.{name}", exc, param_model)) from None
        steps.append({"part": name, "params": validated.model_dump()})
    return steps


def _format_validation(where: str, exc: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields)
            lines.append(f"unknown field '{loc}'{_suggest(str(err['loc'][-1]), known)}; allowed: {', '.join(known)}")
        else:
            lines.append(f"field '{loc}': {err['msg']}")
    return f"{where}: " + "; ".join(lines) + ". Fix the scenario file."


def load_scenario(path: Path) -> Scenario:
    """Read, inherit, validate one scenario file; ScenarioError names the file and the field."""
    path = Path(path)
    data = _read_yaml(path)
    data["attack"] = _attack_steps(path, data.get("attack"))
    data.setdefault("id", path.stem)
    if data["id"] != path.stem:
        raise ScenarioError(
            f"{path}: field 'id' is '{data['id']}' but the file is named '{path.name}'; "
            f"make them agree (the id names the test item)."
        )
    data["path"] = str(path)
    metric = (data.get("verdict") or {}).get("metric") if isinstance(data.get("verdict"), dict) else None
    if metric is not None:
        from audit.metrics.registry import METRICS

        if metric not in METRICS:
            raise ScenarioError(
                f"{path}: field 'verdict.metric': unknown metric '{metric}'{_suggest(str(metric), list(METRICS))}; "
                f"known: {', '.join(sorted(METRICS))}. Fix the scenario file."
            )
    try:
        return Scenario(**data)
    except ValidationError as exc:
        raise ScenarioError(_format_validation(str(path), exc, Scenario)) from None


def catalogue_files(directory: Path | None = None) -> list[Path]:
    """The runnable scenario files of a catalogue, sorted by name (deterministic for xdist)."""
    directory = Path(directory) if directory else CATALOGUE_DIR
    if not directory.is_dir():
        raise ScenarioError(f"{directory}: scenario folder not found; pass --scenarios DIR with *.yaml files.")
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("_"))
