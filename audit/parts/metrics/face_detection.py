"""MTCNN face-detection failure rate: the offline stand-in for detection failure.

Not Anti-DreamBooth's FDFR, which detects with RetinaFace (that metric is ``fdfr``,
``audit/parts/metrics/insight.py``, and needs downloaded weights): MTCNN (Zhang et al. 2016) is the
detector whose weights ship inside the facenet-pytorch package, so this rate is computed on any
machine. Per image 1.0 when MTCNN finds no face with probability ≥ 0.9, else 0.0. Images are
upsampled to at least 160 px, the size facenet-pytorch is used at.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from audit.data.images import to_uint8
from audit.parts.metrics.base import Metric, MetricResult, package_version

MIN_SIDE = 160
PROBABILITY = 0.9


@functools.cache
def _mtcnn():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


class MtcnnDetectionFailureRate(Metric):
    name = "mtcnn_detection_failure_rate"
    direction = "up"
    description = ("share of generated images in which MTCNN finds no face (not FDFR's RetinaFace: "
                   "see fdfr)")

    def implementation_name(self) -> str:
        return (f"facenet-pytorch {package_version('facenet-pytorch')} MTCNN (bundled weights), "
                f"face if probability ≥ {PROBABILITY}, inputs ≥{MIN_SIDE} px")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        try:
            detector = _mtcnn()
        except ImportError:
            return self.unavailable("facenet-pytorch is not installed (pip install --no-deps "
                                    "facenet-pytorch==2.6.0)")
        except (OSError, RuntimeError) as exc:
            return self.unavailable("MTCNN weights could not be loaded from facenet-pytorch "
                                    f"({exc})")
        images = generated.cpu()
        if images.shape[-1] < MIN_SIDE:
            images = F.interpolate(images, size=(MIN_SIDE, MIN_SIDE), mode="bicubic",
                                   align_corners=False).clamp(0, 1)
        arrays = to_uint8(images).permute(0, 2, 3, 1).float()
        with torch.no_grad():
            _, probs = detector.detect(arrays.numpy().astype("uint8"))
        values = []
        for p in probs:
            found = p is not None and any(x is not None and float(x) >= PROBABILITY
                                          for x in list(p))
            values.append(0.0 if found else 1.0)
        return MetricResult(self.name, self.direction, values, self.implementation_name())
