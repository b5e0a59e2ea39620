"""Set-level metrics on Inception features: FID (PID; PhotoGuard) and PRD precision/recall
(PhotoGuard Table 6, citing Sajjadi et al., NeurIPS 2018).

Features: the 2048-d final average-pool activations of the TensorFlow FID Inception v3
(Heusel et al. 2017), as piq 0.8's ``InceptionV3`` computes them (bilinear resize to 299,
inputs scaled to [−1, 1]); the weights are the ones pytorch-fid ported,
``pt_inception-2015-12-05-6726825d.pth``, which piq downloads into torch hub's checkpoint
folder at run time. Here the file is looked for as ``$PROTECTION_AUDIT_WEIGHTS/<file>`` and in
``$TORCH_HOME/hub/checkpoints/``; missing → ``unavailable`` at once (file checks only) unless
downloads are allowed. PID computed FID with torch-fidelity, whose Inception weights are the
same network; its resize differs slightly, so values can differ in the last digits.

Reference set. PID App. A.2 defines FID between "the generated images and the training
images": here the generations of each exploit against the **clean subject images** (the
clean training set), which is the ``reference`` every exploit metric receives. PhotoGuard
compares edits of immunized images with edits of the clean images; for editing exploits the
reference is then the clean edits (the same functions, another reference).

Set-level. Each is one number per set of generations, so one value per replicate
(``MetricResult.level = "set"``). The verdict is over replicate means
(``audit/judge/intervals.py``),
which for these is the replicate's value itself: with K ≥ 2 replicates the usual t and Fieller
intervals apply; with K = 1 there is no image bootstrap (one value has nothing to resample) and
the verdict says so (``audit/judge/verdict.py``).

Too few images. FID fits a Gaussian to 2048-d features: with fewer than
``FID_MIN_IMAGES`` = 2048 images in a set the sample covariance is singular (rank ≤ n − 1),
and FID is biased upwards by a term that shrinks like 1/n (Chong & Forsyth, CVPR 2020), so
values from sets of different sizes — or next to papers' values — are not comparable. PID's
own FID (60 generations against a handful of training images) is in this regime too. Within
one audit, clean, protected and attacked use the same set sizes and the same reference, so
their comparison is like for like; the result carries a caution (flagged where FID decides).

FID itself: ‖μ_x − μ_y‖² + Tr(Σ_x + Σ_y − 2 (Σ_x Σ_y)^{1/2}) with unbiased covariances. The
trace of the matrix square root is computed exactly as the nuclear norm of A_x A_yᵀ (with
Σ = AᵀA, A = centred features / √(n − 1)): the non-zero eigenvalues of Σ_x Σ_y are the squared
singular values of A_x A_yᵀ. piq's ``FID`` gives the same value (tests: to 1e-4 relative on
small features) but iterates Newton–Schulz on 2048 × 2048 matrices: 20 s per call on two CPU
cores against 0.1 s here.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audit.parts.metrics.base import Metric, MetricResult, package_version
from audit.parts.metrics.weights import (
    find_weights,
    hub_checkpoints,
    hub_file_missing,
    weights_label,
)

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
FID_MIN_IMAGES = 2048  # the feature dimension: fewer images give a singular covariance
BATCH = 32

# Sajjadi et al. 2018 §4 / App.: k-means with 20 clusters on the union of both sets, PRD curves
# averaged over 10 clusterings, 1001 slopes λ = tan(θ), θ ∈ (0, π/2); F_8 summarises recall
# and F_{1/8} precision.
PRD_CLUSTERS = 20
PRD_RUNS = 10
PRD_ANGLES = 1001
PRD_BETA = 8.0


@dataclass
class FeatureNetwork:
    """Images (N×3×H×W in [0, 1]) -> features (N×D)."""

    extract: Callable[[torch.Tensor], torch.Tensor]
    label: str


def inception_weights() -> Path | None:
    return find_weights(hub_checkpoints() / INCEPTION_FILE, name=INCEPTION_FILE)


def inception_missing() -> str | None:
    """Why the FID Inception cannot be loaded (file checks only), or None."""
    return hub_file_missing(f"the FID Inception v3 weights {INCEPTION_FILE}", INCEPTION_FILE,
                            INCEPTION_URL)


def inception_network(path: Path) -> torch.nn.Module:
    """piq's FID ``InceptionV3`` (pool3 block) with the TF-FID weights read from ``path``.

    piq builds the network by patching torchvision's Inception v3 with its TF-compatible
    blocks and then downloads the weights; here torchvision's own ``inception_blocks`` hook
    takes piq's blocks, and the weights come from the file.
    """
    from piq.feature_extractors import fid_inception as fi
    from torchvision.models import inception as tv

    # Mixed_7b (1280 in) and Mixed_7c (2048 in) differ
    def inception_e(channels: int) -> torch.nn.Module:
        return fi.FIDInceptionE1(channels) if channels == 1280 else fi.FIDInceptionE2(channels)

    def fid_inception() -> torch.nn.Module:
        blocks = [tv.BasicConv2d, fi.FIDInceptionA, tv.InceptionB, fi.FIDInceptionC, tv.InceptionD,
                  inception_e, tv.InceptionAux]
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False,
                            inception_blocks=blocks)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return net

    class FromFile(fi.InceptionV3):
        fid_inception_v3 = staticmethod(fid_inception)

    return FromFile(output_blocks=[fi.InceptionV3.DEFAULT_BLOCK_INDEX], resize_input=True,
                    normalize_input=True).eval()


@functools.cache
def _inception(path: str | None) -> FeatureNetwork:
    if path is None:  # downloads allowed: piq's own download into torch hub's cache
        from piq.feature_extractors import InceptionV3

        net = InceptionV3().eval()
    else:
        net = inception_network(Path(path))

    def extract(images: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), BATCH):
                out.append(net(images[start:start + BATCH].float().clamp(0, 1))[0].flatten(1))
        return torch.cat(out).double()

    return FeatureNetwork(extract, inception_label())


def inception_label() -> str:
    return (f"piq {package_version('piq')} FID InceptionV3 pool3 (2048-d) "
            f"[{weights_label(inception_weights(), INCEPTION_FILE)}]")


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Heusel et al. 2017: FID between feature sets x (n×D) and y (m×D), n, m ≥ 2."""
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"FID needs at least 2 images in each set (got {len(x)} and {len(y)})")
    x, y = x.double(), y.double()
    mx, my = x.mean(0), y.mean(0)
    ax, ay = (x - mx) / math.sqrt(len(x) - 1), (y - my) / math.sqrt(len(y) - 1)
    root_trace = torch.linalg.svdvals(ax @ ay.T).sum()  # Tr (Σx Σy)^{1/2}
    return float(((mx - my) ** 2).sum() + (ax * ax).sum() + (ay * ay).sum() - 2 * root_trace)


def prd_curve(
        eval_hist: np.ndarray, ref_hist: np.ndarray,
        angles: int = PRD_ANGLES) -> tuple[np.ndarray, np.ndarray]:
    """Sajjadi et al. 2018, Thm. 2: α(λ) = Σ min(λ P(ω), Q(ω)), β(λ) = Σ min(P(ω), Q(ω)/λ) for
    the reference P and evaluated Q histograms, at λ = tan θ on ``angles`` slopes in (0, π/2)."""
    theta = np.linspace(1e-6, math.pi / 2 - 1e-6, angles)
    slopes = np.tan(theta)[:, None]
    precision = np.minimum(ref_hist[None, :] * slopes, eval_hist[None, :]).sum(axis=1)
    recall = precision / slopes[:, 0]
    return np.clip(precision, 0, 1), np.clip(recall, 0, 1)


def _histograms(
        eval_features: np.ndarray, ref_features: np.ndarray, clusters: int,
        seed: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.cluster.vq import kmeans2

    data = np.concatenate([eval_features, ref_features])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty clusters only carry no mass
        _, labels = kmeans2(data, clusters, iter=20, minit="++", seed=np.random.default_rng(seed))
    n = len(eval_features)
    q = np.bincount(labels[:n], minlength=clusters) / n
    p = np.bincount(labels[n:], minlength=clusters) / len(ref_features)
    return q, p


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> float:
    """max over the PRD curve of F_β = (1 + β²) p r / (β² p + r) (Sajjadi et al. 2018 §4)."""
    denom = beta**2 * precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(denom > 0, (1 + beta**2) * precision * recall / denom, 0.0)
    return float(f.max())


def prd_scores(eval_features: torch.Tensor, ref_features: torch.Tensor) -> tuple[float, float]:
    """(precision F_{1/8}, recall F_8) of the evaluated set against the reference set: the PRD
    curve averaged over ``PRD_RUNS`` k-means clusterings (seeds 0…9, so repeatable).

    k = min(20, number of images in both sets). The paper clusters with mini-batch k-means,
    which exists to scale to tens of thousands of points; on the tens of images here scipy's
    exact Lloyd iterations (k-means++ start) are cheap.
    """
    q_feat = eval_features.double().cpu().numpy()
    p_feat = ref_features.double().cpu().numpy()
    if len(q_feat) < 1 or len(p_feat) < 1:
        raise ValueError("PRD needs at least one image in each set")
    clusters = min(PRD_CLUSTERS, len(q_feat) + len(p_feat))
    curves = [prd_curve(*_histograms(q_feat, p_feat, clusters, seed)) for seed in range(PRD_RUNS)]
    precision = np.mean([c[0] for c in curves], axis=0)
    recall = np.mean([c[1] for c in curves], axis=0)
    return f_beta(precision, recall, 1 / PRD_BETA), f_beta(precision, recall, PRD_BETA)


class _InceptionMetric(Metric):
    """A set-level metric on Inception features; ``network`` is a stand-in (logic tests)."""

    def __init__(self, network: FeatureNetwork | None = None) -> None:
        self._network, self._stand_in = network, network
        self._features: OrderedDict[tuple[str, tuple[int, ...]], torch.Tensor] = OrderedDict()

    def missing_why(self) -> str | None:
        return None if self._stand_in is not None else inception_missing()

    def network(self) -> FeatureNetwork:
        if self._network is None:
            path = inception_weights()
            self._network = _inception(str(path) if path else None)
        return self._network

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of an image batch; the last few batches are kept (the reference set and the
        generations meet several of these metrics in a row)."""
        images = images.detach().cpu().float().contiguous()
        key = (hashlib.sha256(images.numpy().tobytes()).hexdigest(), tuple(images.shape))
        if key not in self._features:
            self._features[key] = self.network().extract(images)
            while len(self._features) > 8:
                self._features.popitem(last=False)
        return self._features[key]

    def unavailable(self, why: str) -> MetricResult:
        result = super().unavailable(why)
        result.level = "set"
        return result

    def network_label(self) -> str:
        return (f"stand-in network: {self._stand_in.label}" if self._stand_in is not None
                else inception_label())

    def set_result(self, value: float, n: int, m: int, minimum: int, why: str) -> MetricResult:
        caution = None
        if min(n, m) < minimum:
            caution = (f"{self.name} on {n} generated vs {m} reference images, fewer than "
                       f"{minimum} in a set: {why}; compare it only between exploits of this audit "
                       "(same set sizes), not with papers' values")
        notes = [f"one value for the set of {n} generations against {m} clean subject images (one "
                 "per replicate)"]
        if caution:
            notes.append(caution)
        return MetricResult(self.name, self.direction, [value], self.implementation_name(),
                            notes=notes,
                            level="set", caution=caution)


class FrechetInceptionDistance(_InceptionMetric):
    name = "fid"
    direction = "up"
    description = ("FID of the generations against the clean subject images (Inception pool3 "
                   "features)")

    def implementation_name(self) -> str:
        return (f"{self.network_label()}; Fréchet distance, exact trace of the matrix root "
                "(nuclear norm)")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        if len(generated) < 2 or len(reference) < 2:
            return self.unavailable("FID needs at least 2 images in each set (got "
                                    f"{len(generated)} generated, {len(reference)} reference)")
        value = frechet_distance(self.features(generated), self.features(reference))
        return self.set_result(value, len(generated), len(reference), FID_MIN_IMAGES,
                               "the 2048-d covariance is singular and FID's small-sample bias "
                               "dominates")


class _PRDMetric(_InceptionMetric):
    direction = "down"
    which = 0  # 0: precision (F_1/8), 1: recall (F_8)

    def implementation_name(self) -> str:
        return (f"{self.network_label()}; PRD (Sajjadi et al. 2018): k-means k ≤ {PRD_CLUSTERS} "
                f"(scipy kmeans2, k-means++), {PRD_RUNS} clusterings averaged, {PRD_ANGLES} "
                f"slopes, F_{{{'1/8' if self.which == 0 else '8'}}}")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        if len(generated) < 1 or len(reference) < 1:
            return self.unavailable("PRD needs at least one image in each set")
        value = prd_scores(self.features(generated), self.features(reference))[self.which]
        return self.set_result(value, len(generated), len(reference), PRD_CLUSTERS,
                               f"with fewer images than the {PRD_CLUSTERS} clusters the histograms "
                               "are as coarse as they get")


class PRDPrecision(_PRDMetric):
    name = "prd_precision"
    which = 0
    description = ("PRD precision F_1/8 of the generations against the clean subject images "
                   "(Sajjadi et al.)")


class PRDRecall(_PRDMetric):
    name = "prd_recall"
    which = 1
    description = ("PRD recall F_8 of the generations against the clean subject images (Sajjadi et "
                   "al.)")
