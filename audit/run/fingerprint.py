"""Code fingerprints: a cache key changes when the code that computes a stage changes.

A stage's key names its part, resolved parameters, inputs, model and seed. Without the code, a
protection edited between two audits (a fix, a regression, an objective turned upside down)
keeps its name and parameters, and the second audit replays the first one's cached images,
fine-tunes and verdict: exactly what a CI gate for protection code must never do.

The rule, one for built-in and external code alike (``code_fingerprint``):

- **source**: the SHA-256 of every source file that defines the code: the module of each class
  in the object's MRO (standard library and ``builtins`` left out), the module of every function
  stored on the instance (a replaced objective), and the factory's module for
  ``--protection=package.module:factory``;
- **bytecode**: the compiled code of every function defined on those classes and on the instance,
  and their plain class attributes, so that a class defined inside a function (a test) and then
  redefined in the same file is told apart too.

A hash of the code, not a declared version the author must bump: a version is exactly what a
developer forgets to bump in the commit that breaks the protection, and a gate that trusts it
replays the old audit. What the fingerprint does not see: helper modules that the hashed
modules import (bump the part's ``version`` attribute when only such a helper changes, or run
with ``--no-audit-cache``). An object whose source file cannot be read (defined in ``exec`` or
an interactive session) has no fingerprint: its stage is computed every time, never cached,
and the record says why.
"""

from __future__ import annotations

import hashlib
import inspect
import marshal
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

_STDLIB = frozenset(sys.stdlib_module_names) | {"builtins"}
_PLAIN = (int, float, str, bool, bytes, type(None))


@dataclass(frozen=True)
class CodeFingerprint:
    """What names a part's code in a cache key; ``sha256`` is None when it cannot be read."""

    sha256: str | None
    files: dict[str, str] = field(default_factory=dict)  # module name → SHA-256 of its source file
    reason: str = ""  # why there is no fingerprint

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "files": dict(sorted(self.files.items()))}
        if self.reason:
            out["reason"] = self.reason
        return out


@lru_cache(maxsize=512)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def module_source_digest(module_name: str) -> str | None:
    """SHA-256 of a module's source file, or None where it has none that can be read."""
    module = sys.modules.get(module_name)
    if module is None:
        return None
    try:
        path = inspect.getsourcefile(module)
    except TypeError:  # a built-in module
        return None
    if not path or not Path(path).is_file():
        return None
    stat = Path(path).stat()
    return _file_digest(str(path), stat.st_mtime_ns, stat.st_size)


def _code_digest(code: types.CodeType, h: Any) -> None:
    """Feed a code object (its bytecode, constants and names; nested code recursively)."""
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(const, h)
        else:
            h.update(marshal.dumps(const) if isinstance(const, (*_PLAIN, tuple, frozenset))
                     else repr(const).encode())


def _function_code(value: Any) -> types.CodeType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return getattr(value, "__code__", None)


def _own(module: str | None) -> bool:
    return module is not None and bool(module) and module.partition(".")[0] not in _STDLIB


def code_fingerprint(obj: Any, *, factory: str | None = None) -> CodeFingerprint:
    """The fingerprint of an object's code (its class's MRO and its instance functions) and of
    the ``module:attr`` factory that built it, if any."""
    h = hashlib.sha256()
    modules: set[str] = set()
    classes = [c for c in type(obj).__mro__ if _own(c.__module__)]
    for cls in classes:
        modules.add(cls.__module__)
        h.update(f"class {cls.__module__}:{cls.__qualname__}\n".encode())
        for name in sorted(vars(cls)):
            value = vars(cls)[name]
            code = _function_code(value)
            if code is not None:
                h.update(f"def {name}\n".encode())
                _code_digest(code, h)
            elif isinstance(value, _PLAIN) and not name.startswith("__"):
                h.update(f"{name}={value!r}\n".encode())
    for name, value in sorted(getattr(obj, "__dict__", {}).items()):
        code = _function_code(value)
        if code is not None:
            h.update(f"instance {name}\n".encode())
            _code_digest(code, h)
            if _own(getattr(value, "__module__", None)):
                modules.add(value.__module__)
    if factory:
        modules.add(factory.partition(":")[0])
    files: dict[str, str] = {}
    for module in sorted(modules):
        digest = module_source_digest(module)
        if digest is None:
            return CodeFingerprint(None, files, reason=(
                f"the source of module '{module}' cannot be read (defined in exec, an interactive "
                "session or a compiled extension), so a change to it could not be seen: its "
                "stages are not cached"))
        files[module] = digest
        h.update(f"{module}={digest}\n".encode())
    return CodeFingerprint(h.hexdigest(), files)
