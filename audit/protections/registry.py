"""Protection names → objects: built-ins and ``package.module:factory`` for external code."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from audit.errors import ProtectionError
from audit.protections.base import Protection
from audit.protections.pid import PID
from audit.protections.simple import NoProtection, RandomNoise

PROTECTIONS: dict[str, Callable[[], Protection]] = {
    "none": NoProtection,
    "random": RandomNoise,
    "pid": PID,
}


def get_protection(spec: str) -> Protection:
    """Build the protection named ``spec`` (a built-in name or ``package.module:factory``)."""
    if spec in PROTECTIONS:
        return PROTECTIONS[spec]()
    if ":" in spec:
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
    close = difflib.get_close_matches(spec, list(PROTECTIONS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ProtectionError(
        f"--protection={spec}: unknown protection{hint}. Built-ins: {', '.join(sorted(PROTECTIONS))}; "
        "or pass 'package.module:factory' for your own."
    )
