"""BRISQUE (Mittal et al. 2012), no-reference image quality; higher = worse quality.

Implementation: the ``brisque`` package (v0.2.0), its feature extractor and its bundled libsvm
SVR model and feature scaling. Implementations differ (PID used a libsvm BRISQUE, Anti-DreamBooth
this package,
MetaCloak piq's at 256², and their values differ), so this one is named in
every result. brisque 0.2.0's ``score`` breaks on NumPy ≥ 2 (it calls ``float`` on 1-element
arrays); we call its own feature and scaling methods and only flatten the features to floats
in between — same features, same model.

Run-to-run variation, and why it is gone: the features are bit-for-bit reproducible, but
libsvm's prediction was not. The ``libsvm-official`` wheel is built with OpenMP (its
``clib`` links libgomp), and ``svm_predict_values`` sums an ε-SVR's terms
``sv_coef[i] · exp(−γ‖x − SV_i‖²)`` in ``#pragma omp parallel for reduction(+:sum)
schedule(guided)``: which thread adds which support vectors, and in what order the partial sums
are combined, changes from call to call. The 770 terms are up to ±1024 and cancel to a score of
~10–100, so the order shows in the last digits (measured: up to 1.2e-11 apart on the same
features; 13 distinct values in 200 calls on 2 cores). We therefore evaluate the same model
(its support vectors, coefficients, γ and ρ, read from libsvm's loaded model) ourselves: each
squared distance accumulated feature by feature as libsvm's ``k_function`` does, and the terms
summed with ``math.fsum``, which is correctly rounded and so independent of order and thread
count.

Undefined values: on some images (a flat one) BRISQUE's fit is undefined. Such an image keeps
its slot with the value None, so the i-th value of every exploit still belongs to the i-th
prompt and seed; ``audit.judge.verdict.pair_slots`` leaves that slot out of clean, protected and
attacked of the replicate alike, and the checks count and flag it.

Tolerance: a BRISQUE value is identical (0 difference) when recomputed — in the same process,
in a fresh process, with any number of threads — on the same platform and library versions,
so a cached value equals a recomputed one exactly. Against libsvm's own (order-dependent)
prediction it differs by at most ``BRISQUE_TOLERANCE`` = 1e-7: any summation order of n = 770
terms errs by at most (n − 1)·2⁻⁵³·Σ|terms| ≤ 769 · 1.1e-16 · 7.4e5 (Σ|sv_coef|) ≈ 6.3e-8,
plus a few ulps per term from ``exp``; measured ≤ 3e-11 on the bundled subject and noisy
copies. Features computed on another machine or library version may differ more (scipy,
OpenCV); the cache key names this implementation, not the machine.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from audit.data.images import to_uint8
from audit.parts.metrics.base import Metric, MetricResult, package_version


@functools.cache
def _brisque():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brisque import BRISQUE

        return BRISQUE(url=False)


BRISQUE_TOLERANCE = 1e-7  # |ours − libsvm's prediction| on the same features (see the docstring)
_EPSILON_SVR, _NU_SVR, _RBF = 3, 4, 2  # libsvm's svm_type and kernel_type codes


@functools.cache
def _svr() -> tuple[np.ndarray, np.ndarray, float, float]:
    """The brisque model's support vectors (dense), coefficients, ρ and γ, from libsvm's copy."""
    model = _brisque().model
    if model.param.svm_type not in (_EPSILON_SVR, _NU_SVR) or model.param.kernel_type != _RBF:
        raise RuntimeError(
            f"brisque's model is svm_type {model.param.svm_type}, kernel "
            f"{model.param.kernel_type}; expected an RBF ε/ν-SVR (brisque==0.2.0's bundled model). "
            "Reinstall brisque==0.2.0."
        )
    rows = []
    for i in range(model.l):
        node, row = model.SV[i], {}
        j = 0
        while node[j].index != -1:
            row[node[j].index] = node[j].value
            j += 1
        rows.append(row)
    width = max((max(row) for row in rows if row), default=0)
    support = np.zeros((model.l, width), dtype=np.float64)
    for i, row in enumerate(rows):
        for index, value in row.items():
            support[i, index - 1] = value
    coef = np.array([model.sv_coef[0][i] for i in range(model.l)], dtype=np.float64)
    return support, coef, float(model.rho[0]), float(model.param.gamma)


def svr_predict(scaled: np.ndarray) -> float:
    """libsvm's ε-SVR prediction ``Σ coef·exp(−γ‖x − SV‖²) − ρ``, summed order-independently."""
    support, coef, rho, gamma = _svr()
    x = np.asarray(scaled, dtype=np.float64).reshape(-1)
    width = max(len(x), support.shape[1])
    x = np.pad(x, (0, width - len(x)))
    support = np.pad(support, ((0, 0), (0, width - support.shape[1])))
    squared = np.zeros(len(support), dtype=np.float64)
    for j in range(width):  # feature by feature, as libsvm's k_function accumulates
        d = x[j] - support[:, j]
        squared += d * d
    terms = coef * np.exp(-gamma * squared)
    return math.fsum(terms.tolist()) - rho


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
        features = np.array([float(np.asarray(f, dtype=np.float64).reshape(-1)[0])
                             for f in np.concatenate((fine, coarse))])
    return svr_predict(model.scale_features(features))


class Brisque(Metric):
    name = "brisque"
    direction = "up"
    description = "BRISQUE no-reference quality of the generations (PID Table 3; higher = worse)"

    def implementation_name(self) -> str:
        return (f"brisque {package_version('brisque')} (libsvm SVR, bundled model, "
                "order-independent sum), grayscale, 2 scales")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        try:
            _brisque()
            import cv2  # noqa: F401
        except ImportError as exc:
            return self.unavailable(f"{exc.name or exc} is not installed (pip install "
                                    "brisque==0.2.0 opencv-python-headless)")
        values: list[float | None] = []
        for image in to_uint8(generated.cpu()).permute(0, 2, 3, 1).numpy():
            try:
                score = brisque_score(np.ascontiguousarray(image))
            except (ValueError, FloatingPointError, ZeroDivisionError, RuntimeError):
                score = float("nan")
            values.append(score if math.isfinite(score) else None)
        failed = sum(v is None for v in values)
        notes = [f"BRISQUE undefined for {failed} image(s) (e.g. flat images): their slots are "
                 "kept empty (None) and left out of the comparison with the other exploits' "
                 "images in the same slots"] if failed else []
        return MetricResult(self.name, self.direction, values, self.implementation_name(),
                            missing=failed, notes=notes)
