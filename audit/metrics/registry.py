"""Metric names → metric objects (one cached instance per name, shared by all cases)."""

from __future__ import annotations

import difflib
import functools

from audit.metrics.base import Metric
from audit.metrics.face_detection import FaceDetectionFailureRate
from audit.metrics.identity import IdentitySimilarity
from audit.metrics.quality import Brisque

METRICS: dict[str, type[Metric]] = {
    IdentitySimilarity.name: IdentitySimilarity,
    FaceDetectionFailureRate.name: FaceDetectionFailureRate,
    Brisque.name: Brisque,
}


class UnknownMetric(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@functools.cache
def get_metric(name: str) -> Metric:
    if name not in METRICS:
        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownMetric(f"unknown metric '{name}'{hint}; known: {', '.join(sorted(METRICS))}")
    return METRICS[name]()


def exploit_metric_names() -> list[str]:
    """The metrics computed on every exploit's generations."""
    return ["identity_similarity", "face_detection_failure_rate", "brisque"]
