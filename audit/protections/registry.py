"""Protection names → objects: built-ins from the parts registry, ``dir:PATH`` for a folder of
already-protected images, and ``package.module:factory`` for external code."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from audit.errors import ProtectionError
from audit.parts import PROTECTIONS
from audit.protections.base import Protection
from audit.registry import InvalidParams, PartSpec, did_you_mean

PROTECTION_FORMS = "a built-in name ({names}), 'dir:PATH' (a folder of protected images), or 'package.module:factory'"


def build_protection(spec: str, tier: Any = None, epsilon: float | None = None) -> tuple[Protection, PartSpec]:
    """The protection named by ``--protection`` with its resolved parameters.

    Built-ins take their parameters with the one precedence (part default < tier <
    --audit-set); ``epsilon`` (``--epsilon``) sets the budget of a ``dir:`` protection and
    overrides a built-in's.
    """
    if spec.startswith("dir:"):
        from audit.protections.folder import ProtectedFolder

        folder = Path(spec[4:]).expanduser()
        protection = ProtectedFolder(folder, epsilon)
        return protection, PartSpec("protection", "dir", {"path": str(folder), "epsilon": epsilon})
    if spec == "dir":
        raise ProtectionError("--protection=dir needs a folder: --protection=dir:PATH, with PATH/<subject>/<file> "
                              "holding the protected version of each clean image under its file name.")
    if spec in PROTECTIONS:
        part = PROTECTIONS.get(spec)
        try:
            params = tier.resolve_part(part).to_dict() if tier is not None else part.validate({}).model_dump()
        except InvalidParams as exc:
            raise ProtectionError(f"--protection={spec}: {exc}") from None
        if epsilon is not None:
            params["epsilon"] = epsilon
        protection = part.load()(**params)
        return protection, PartSpec("protection", spec, params)
    if ":" in spec:
        protection = _external(spec)
        return protection, PartSpec("protection", protection.name, {"factory": spec, **protection.params(tier)})
    raise ProtectionError(
        f"--protection={spec}: unknown protection{did_you_mean(spec, PROTECTIONS.names())}. Give "
        + PROTECTION_FORMS.format(names=", ".join(PROTECTIONS.names())) + "."
    )


def _external(spec: str) -> Protection:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ProtectionError(
            f"--protection={spec}: cannot import '{attr}' from module '{module_name}' ({exc}). "
            "Give an importable 'package.module:factory' that returns a Protection."
        ) from None
    protection = factory()
    if not isinstance(protection, Protection):
        raise ProtectionError(
            f"--protection={spec}: the factory returned {type(protection).__name__}, not an "
            "audit.protections.Protection subclass instance."
        )
    return protection


def get_protection(spec: str) -> Protection:
    """The protection with its part defaults (the paper's settings); see ``build_protection``."""
    return build_protection(spec)[0]
