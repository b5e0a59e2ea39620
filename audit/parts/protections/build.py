"""Protection names → objects: built-ins from the parts registry, ``dir:PATH`` for a folder of
already-protected images, and ``package.module:factory`` for external code."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from audit.data.kinds import PERSON, SubjectKind
from audit.errors import ProtectionError
from audit.parts import PROTECTIONS
from audit.parts.protections.base import Protection
from audit.parts.registry import InvalidParams, PartSpec, did_you_mean

PROTECTION_FORMS = ("a built-in name ({names}), 'dir:PATH' (a folder of protected images), or "
                    "'package.module:factory'")


def build_protection(spec: str, tier: Any = None, epsilon: float | None = None,
                     kind: SubjectKind = PERSON) -> tuple[Protection, PartSpec]:
    """The protection named by ``--protection`` with its resolved parameters.

    Built-ins take their parameters with the one precedence (part default < tier < the subject's
    kind < --audit-set); ``epsilon`` (``--epsilon``) sets the budget of a ``dir:`` protection and
    overrides a built-in's. A subject kind other than ``person`` sets the prompts the protection
    declares as its instance or class prompt (``SubjectKind.protection_params``).
    """
    if spec.startswith("dir:"):
        from audit.parts.protections.folder import ProtectedFolder

        folder = Path(spec[4:]).expanduser()
        folder_protection = ProtectedFolder(folder, epsilon)
        params = {"path": str(folder), "epsilon": epsilon}
        return folder_protection, PartSpec("protection", "dir", params)
    if spec == "dir":
        raise ProtectionError("--protection=dir needs a folder: --protection=dir:PATH, with "
                              "PATH/<subject>/<file> holding the protected version of each clean "
                              "image under its file name.")
    if spec in PROTECTIONS:
        part = PROTECTIONS.get(spec)
        try:
            layer = None
            if kind is not PERSON:
                layer = (f"subject kind '{kind.name}'",
                         kind.protection_params(part.params_model()))
            params = (tier.resolve_part(part, kind=layer).to_dict() if tier is not None
                      else part.validate(layer[1] if layer else {}).model_dump())
        except InvalidParams as exc:
            raise ProtectionError(f"--protection={spec}: {exc}") from None
        if epsilon is not None:
            params["epsilon"] = epsilon
        protection = part.load()(**params)
        return protection, PartSpec("protection", spec, params)
    if ":" in spec:
        protection = _external(spec)
        return protection, PartSpec("protection", protection.name,
                                    {"factory": spec, **protection.params(tier)})
    raise ProtectionError(
        f"--protection={spec}: unknown protection{did_you_mean(spec, PROTECTIONS.names())}. Give "
        + PROTECTION_FORMS.format(names=", ".join(PROTECTIONS.names())) + "."
    )


def _external(spec: str) -> Protection:
    """The protection a ``package.module:factory`` returns. Whatever goes wrong on the way — the
    module does not import (a syntax error, an exception at import time), the attribute is
    missing or not callable, the call needs arguments or raises, the result is not a
    ``Protection`` — is one ``ProtectionError`` naming the factory, what it raised and the fix."""
    module_name, _, attr = spec.partition(":")
    fix = ("Give an importable 'package.module:factory': a callable that takes no arguments and "
           "returns an audit.parts.protections.Protection instance.")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "its source"
        raise ProtectionError(f"--protection={spec}: module '{module_name}' has a syntax error "
                              f"({where}: {exc.msg}). Fix the module. {fix}") from None
    except Exception as exc:
        raise ProtectionError(f"--protection={spec}: importing module '{module_name}' raised "
                              f"{type(exc).__name__}: {exc}. Fix the module (it must import "
                              f"without side effects that fail). {fix}") from None
    if not attr:
        raise ProtectionError(f"--protection={spec}: no factory named after the ':'. {fix}")
    try:
        factory = getattr(module, attr)
    except AttributeError:
        known = [n for n in dir(module) if not n.startswith("_")
                 and callable(getattr(module, n, None))]
        raise ProtectionError(f"--protection={spec}: module '{module_name}' has no attribute "
                              f"'{attr}'{did_you_mean(attr, known)}. {fix}") from None
    if not callable(factory):
        raise ProtectionError(f"--protection={spec}: '{attr}' in module '{module_name}' is a "
                              f"{type(factory).__name__}, not callable. {fix}")
    try:
        protection = factory()
    except TypeError as exc:
        raise ProtectionError(f"--protection={spec}: calling {attr}() raised TypeError: {exc}. The "
                              "factory is called without arguments: give the parameters defaults, "
                              "or point at a function that builds the protection with them. "
                              f"{fix}") from None
    except Exception as exc:
        raise ProtectionError(f"--protection={spec}: calling {attr}() raised {type(exc).__name__}: "
                              f"{exc}. Fix the factory. {fix}") from None
    if not isinstance(protection, Protection):
        raise ProtectionError(
            f"--protection={spec}: the factory returned {type(protection).__name__}, not an "
            "audit.parts.protections.Protection subclass instance."
        )
    return protection


def budget(spec: str, protection: Protection, tier: Any = None, epsilon: float
           | None = None) -> dict[str, Any]:
    """The ℓ∞ budget the audit judges the protection's output against, and where it came from.

    ``--epsilon`` is the judged budget for every kind of protection: a built-in crafts at it
    (``build_protection``), a ``module:factory`` protection is judged against it whatever ε it
    declares, a ``dir:`` folder is judged against it at the files' own resolution. Without it:
    a built-in's resolved ε (part default < tier < --audit-set), a factory's declared ε, and a
    folder's ℓ∞ is measured, not judged."""
    declared = float(protection.epsilon)
    if spec.startswith("dir:"):
        given = getattr(protection, "declared_epsilon", None)
        return {"epsilon": given, "judged": given is not None, "declared": None,
                "source": "--epsilon (judged at the files' own resolution)" if given is not None
                else "none: no --epsilon, so ℓ∞ is measured, not judged"}
    if epsilon is not None:
        return {"epsilon": float(epsilon), "judged": True, "declared": declared,
                "source": "--epsilon"}
    if spec in PROTECTIONS:
        origin = "part default"
        if tier is not None:
            layer = tier.resolve_part(PROTECTIONS.get(spec)).origin.get("epsilon")
            origin = (
                {"tier": f"tier '{tier.name}'", "--audit-set": f"--audit-set {spec}.epsilon"}.get(
                    layer, layer or origin))
        return {"epsilon": declared, "judged": True, "declared": declared, "source": origin}
    return {"epsilon": declared, "judged": True, "declared": declared,
            "source": f"declared by the protection ({type(protection).__name__}.epsilon); "
                      "--epsilon overrides it"}


def get_protection(spec: str) -> Protection:
    """The protection with its part defaults (the paper's settings); see ``build_protection``."""
    return build_protection(spec)[0]
