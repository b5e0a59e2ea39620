"""One registry type for every kind of part, and one YAML grammar for naming them.

Parts are image transforms (corruptions, purifiers), protections, exploits and metrics. Each
is registered once (in its kind's ``audit/parts/<kind>/__init__.py``) with its name, a
one-line description, the paper and section it comes from, a version, and two lazy
``"module:attr"`` references: the object that does the work and the pydantic model of its
parameters. Listing the parts imports nothing
heavy (lm-evaluation-harness's lazy registry entries are the model); looking one up by a
wrong name says "did you mean".

Every part is named the same way wherever it appears (``attack:`` steps, ``exploit:``,
tier sections, ``--audit-set``): ``name: {params}``, the params validated by the part's own
model, so a typo in a parameter is an error that names it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

KINDS = ("transform", "protection", "exploit", "metric")


class Params(BaseModel):
    """Base of every part's parameters: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """A part without parameters."""


class UnknownPart(KeyError):
    """A part name that is not registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidParams(ValueError):
    """Parameters a part's model refuses; the message names each field and the fix."""


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def format_validation(where: str, exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per refused field, with "did you mean" for unknown keys."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields)
            lines.append(
                f"unknown field '{loc}'{did_you_mean(str(err['loc'][-1]), known)}; allowed: "
                f"{', '.join(known) or 'none'}"
            )
        else:
            lines.append(f"field '{loc}': {err['msg']}")
    return f"{where}: " + "; ".join(lines)


@dataclass(frozen=True)
class Part:
    """A registered part. ``target`` and ``params`` are imported on first use."""

    kind: str
    name: str
    target: str  # "module:attr": the function or class that does the work
    params: str  # "module:attr": its pydantic parameter model (a ``Params`` subclass)
    description: str
    source: str
    version: int = 1
    random: bool = False  # the output depends on a seed (replicates re-draw it)
    uses_model: bool = False  # the output depends on the audited model's weights
    differentiable: bool = False  # a torch-differentiable form exists (for adaptive protectors)
    direction: str = ""  # metrics: "up" | "down", the way a value means BETTER protection
    implementation: str = ""  # metrics: the library (and network, weights) that computes it

    def __post_init__(self) -> None:
        if self.direction not in ("", "up", "down"):
            raise ValueError(f"{self.kind} '{self.name}': direction must be 'up' or 'down', got "
                             f"{self.direction!r}")

    def load(self) -> Any:
        return _resolve(self.target)

    def params_model(self) -> type[Params]:
        return _resolve(self.params)

    def validate(self, params: dict[str, Any] | None, where: str = "") -> Params:
        """The part's validated parameters (defaults filled in); InvalidParams names the field."""
        model = self.params_model()
        try:
            return model(**(params or {}))
        except ValidationError as exc:
            raise InvalidParams(format_validation(where
                                                  or f"{self.kind} '{self.name}'", exc,
                                                  model)) from None

    def identity(self) -> dict[str, Any]:
        """What names this part's implementation in a cache key."""
        return {"kind": self.kind, "name": self.name, "version": self.version,
                "target": self.target}

    def listing(self) -> str:
        flags = [f for f, on in (("random", self.random), ("uses model", self.uses_model),
                                 ("differentiable", self.differentiable)) if on]
        extra = f" [{', '.join(flags)}]" if flags else ""
        if self.kind == "metric":
            arrow = {"up": "↑", "down": "↓"}.get(self.direction, "?")
            return (f"{self.name:<28} {arrow} {self.description} — {self.source} · "
                    f"{self.implementation or '?'}{extra}")
        return f"{self.name:<28} {self.description} — {self.source}{extra}"


class Registry:
    """Parts of one kind, by name."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown part kind '{kind}'; kinds: {', '.join(KINDS)}")
        self.kind = kind
        self._parts: dict[str, Part] = {}

    def register(self, name: str, **fields: Any) -> Part:
        if name in self._parts:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        part = Part(kind=self.kind, name=name, **fields)
        self._parts[name] = part
        return part

    def get(self, name: str) -> Part:
        if name not in self._parts:
            known = sorted(self._parts)
            raise UnknownPart(
                f"unknown {self.kind} '{name}'{did_you_mean(name, known)}; known: "
                f"{', '.join(known)}"
            )
        return self._parts[name]

    def __contains__(self, name: object) -> bool:
        return name in self._parts

    def __iter__(self) -> Iterator[Part]:
        return iter(sorted(self._parts.values(), key=lambda p: p.name))

    def names(self) -> list[str]:
        return sorted(self._parts)


@dataclass(frozen=True)
class PartSpec:
    """A named part with its (validated, fully resolved) parameters, as written in YAML."""

    kind: str
    name: str
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {self.name: dict(self.params)}

    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})" if args else self.name


def split_spec(raw: Any, where: str, example: str) -> tuple[str, dict[str, Any]]:
    """``name``, ``{name: {params}}`` or ``{name: null}`` → (name, params); else a clear error."""
    if isinstance(raw, str):
        return raw, {}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidParams(f"{where}: write one part as 'name: {{params}}', e.g. {example}")
    ((name, params),) = raw.items()
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParams(f"{where}.{name}: parameters must be a mapping, got {params!r}")
    return str(name), params


def parse_spec(registry: Registry, raw: Any, where: str, example: str,
               *, partial: bool = False) -> PartSpec:
    """Validate ``name: {params}`` against the registry.

    ``partial`` keeps only the parameters written (still validated), so that lower layers
    (part default < tier < scenario < --audit-set) keep supplying the rest.
    """
    name, params = split_spec(raw, where, example)
    try:
        part = registry.get(name)
    except UnknownPart as exc:
        raise InvalidParams(f"{where}: {exc}") from None
    if partial:
        return PartSpec(registry.kind, name, _validate_fields(part, params, f"{where}.{name}"))
    return PartSpec(registry.kind, name, part.validate(params, f"{where}.{name}").model_dump())


def _validate_fields(part: Part, params: dict[str, Any], where: str) -> dict[str, Any]:
    """The written parameters, each field validated; checks across fields (e.g. 'prior
    preservation needs class images') wait for the resolved parameters, where the lower
    layers have filled in the rest."""
    model = part.params_model()
    try:
        return model(**params).model_dump(exclude_unset=True)
    except ValidationError as exc:
        field_errors = [e for e in exc.errors() if e["loc"]]
        if field_errors:
            raise InvalidParams(format_validation(where, exc, model)) from None
        return dict(params)
