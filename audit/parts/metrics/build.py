"""Metric instances by name, from the metrics registry (``audit/parts/metrics/__init__.py``)."""

from __future__ import annotations

import functools

from audit.parts import EXPLOIT_METRICS, FACE_METRICS, METRICS, STYLE_METRICS, renamed_metric
from audit.parts.metrics.base import Metric
from audit.parts.registry import UnknownPart

UnknownMetric = UnknownPart

__all__ = ["FACE_METRICS", "METRICS", "STYLE_METRICS", "UnknownMetric", "exploit_metric_names",
           "get_metric"]


@functools.cache
def get_metric(name: str) -> Metric:
    """One shared instance per metric name (models inside are loaded once)."""
    if renamed_metric(name):
        raise UnknownMetric(f"{renamed_metric(name)}; known: {', '.join(METRICS.names())}")
    return METRICS.get(name).load()()


def exploit_metric_names(kind: str = "person") -> list[str]:
    """The metrics computed on every exploit's generations: on an artist's style (``kind``
    'style') the style metrics instead of the face metrics."""
    if kind == "style":
        return [n for n in EXPLOIT_METRICS if n not in FACE_METRICS] + list(STYLE_METRICS)
    return list(EXPLOIT_METRICS)
