"""Metrics of exploit outputs (identity, face detection, quality) and of imperceptibility."""

from audit.metrics.base import Metric, MetricResult
from audit.metrics.imperceptibility import imperceptibility
from audit.metrics.registry import (
    FACE_METRICS,
    METRICS,
    UnknownMetric,
    exploit_metric_names,
    get_metric,
)

__all__ = ["FACE_METRICS", "METRICS", "Metric", "MetricResult", "UnknownMetric", "exploit_metric_names", "get_metric", "imperceptibility"]
