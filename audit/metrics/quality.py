"""BRISQUE (Mittal et al. 2012), no-reference image quality; higher = worse quality.

Implementation: the ``brisque`` package (v0.2.0), its feature extractor and its bundled libsvm
SVR model and feature scaling. Implementations differ (REFERENCE.md), so this one is named in
every result. brisque 0.2.0's ``score`` breaks on NumPy ≥ 2 (it calls ``float`` on 1-element
arrays); we call its own feature and scoring methods and only flatten the features to floats
in between — same features, same model, same numbers.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from audit.images import to_uint8
from audit.metrics.base import Metric, MetricResult, package_version


@functools.cache
def _brisque():  # noqa: ANN202
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brisque import BRISQUE

        return BRISQUE(url=False)


def brisque_score(image: np.ndarray) -> float:
    """BRISQUE of one H×W×3 uint8 image with the brisque package's model."""
    import cv2
    import skimage.color

    model = _brisque()
    gray = skimage.color.rgb2gray(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fine = model.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6)
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        coarse = model.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)
        features = np.array([float(np.asarray(f, dtype=np.float64).reshape(-1)[0]) for f in np.concatenate((fine, coarse))])
        return float(model.calculate_image_quality_score(features))


class Brisque(Metric):
    name = "brisque"
    direction = "up"
    description = "BRISQUE no-reference quality of the generations (PID Table 3; higher = worse)"

    def implementation_name(self) -> str:
        return f"brisque {package_version('brisque')} (libsvm SVR, bundled model), grayscale, 2 scales"

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        try:
            _brisque()
            import cv2  # noqa: F401
        except ImportError as exc:
            return self.unavailable(f"{exc.name or exc} is not installed (pip install brisque==0.2.0 opencv-python-headless)")
        values, failed = [], 0
        for image in to_uint8(generated.cpu()).permute(0, 2, 3, 1).numpy():
            try:
                score = brisque_score(np.ascontiguousarray(image))
            except (ValueError, FloatingPointError, ZeroDivisionError, RuntimeError):
                score = float("nan")
            if math.isfinite(score):
                values.append(score)
            else:
                failed += 1
        notes = [f"BRISQUE undefined for {failed} image(s) (e.g. flat images); left out"] if failed else []
        return MetricResult(self.name, self.direction, values, self.implementation_name(), missing=failed, notes=notes)
