"""Metric instances by name, from the metrics registry (``audit/parts/metrics/__init__.py``)."""

from __future__ import annotations

import functools

from audit.parts import EXPLOIT_METRICS, FACE_METRICS, METRICS, renamed_metric
from audit.parts.metrics.base import Metric
from audit.parts.registry import UnknownPart

UnknownMetric = UnknownPart

__all__ = ["FACE_METRICS", "METRICS", "UnknownMetric", "exploit_metric_names", "get_metric"]


@functools.cache
def get_metric(name: str) -> Metric:
    """One shared instance per metric name (models inside are loaded once)."""
    if renamed_metric(name):
        raise UnknownMetric(f"{renamed_metric(name)}; known: {', '.join(METRICS.names())}")
    return METRICS.get(name).load()()


def exploit_metric_names() -> list[str]:
    """The metrics computed on every exploit's generations."""
    return list(EXPLOIT_METRICS)
