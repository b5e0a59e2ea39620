"""Metric names → metric objects (one cached instance per name, shared by all cases)."""

from __future__ import annotations

import difflib
import functools

from audit.metrics.base import Metric
from audit.metrics.face_detection import FaceDetectionFailureRate
from audit.metrics.identity import IdentitySimilarity
from audit.metrics.quality import Brisque
from audit.metrics.subject import SubjectSimilarity

METRICS: dict[str, type[Metric]] = {
    IdentitySimilarity.name: IdentitySimilarity,
    FaceDetectionFailureRate.name: FaceDetectionFailureRate,
    Brisque.name: Brisque,
    SubjectSimilarity.name: SubjectSimilarity,
}

# Metrics that need a detectable face (a tier may decide on another metric where faces are too small).
FACE_METRICS = frozenset({IdentitySimilarity.name, FaceDetectionFailureRate.name})


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
    return ["subject_similarity", "identity_similarity", "face_detection_failure_rate", "brisque"]
