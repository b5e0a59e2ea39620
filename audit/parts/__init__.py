"""Every built-in part, by kind: transforms, protections, exploits, metrics.

Each kind's package registers its parts beside their code (``transforms/__init__.py``, ...):
a new part is one file (its function or class and its ``Params`` model) plus one
``register`` call there. References are lazy ``"module:attr"`` strings, so listing the parts
(``python -m audit ls``) imports neither torch nor any model library.
"""

from __future__ import annotations

from audit.parts.exploits import EXPLOITS
from audit.parts.metrics import (
    EXPLOIT_METRICS,
    FACE_METRICS,
    METRICS,
    RENAMED_METRICS,
    STYLE_METRICS,
    renamed_metric,
)
from audit.parts.protections import PROTECTIONS
from audit.parts.registry import NoParams
from audit.parts.transforms import TRANSFORMS

REGISTRIES = {r.kind: r for r in (TRANSFORMS, PROTECTIONS, EXPLOITS, METRICS)}

__all__ = [
    "EXPLOITS", "EXPLOIT_METRICS", "FACE_METRICS", "METRICS", "STYLE_METRICS", "NoParams",
    "PROTECTIONS", "REGISTRIES",
    "RENAMED_METRICS", "TRANSFORMS", "renamed_metric",
]
