"""What the face metrics share: per-image embeddings where a face may be missing, and the
papers' aggregations of them (PID App. A.2 FDS; Anti-DreamBooth §5 ISM and FDFR; DiffShortcut
§5 / App. A.2 IMS).

Every face metric computes in two steps: a *face network* turns each image into the face
found in it — an embedding, or ``None`` where no face was detected — and a pure function
here turns those into per-image values. The network is the only part that needs weights; a
metric accepts a small stand-in network in its constructor, which goes through the very same
code path (``tests/test_face_metrics.py``, the logic tests). Units: cosine similarities in
[−1, 1]; failure rates as 0/1 per image (their mean is the paper's rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.data.images import to_uint8

Embedding = np.ndarray  # 1-D float64
Embeddings = Sequence[Embedding | None]  # one per image; None: no face detected

# DiffShortcut §5: IMS = λ·IMS_IP (antelopev2) + (1 − λ)·IMS_VGG (DeepFace VGG-Face), λ = 0.7.
IMS_LAMBDA = 0.7


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2) in pixels, detector score, embedding if computed."""

    box: tuple[float, float, float, float]
    score: float
    embedding: Embedding | None = None

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def largest(faces: Sequence[Face]) -> Face | None:
    """The biggest face of an image (Anti-DreamBooth's evaluation keeps the biggest one)."""
    return max(faces, key=lambda f: f.area) if faces else None


def rgb_arrays(images: torch.Tensor, min_side: int = 0) -> list[np.ndarray]:
    """H×W×3 uint8 RGB arrays of an image batch, bicubically upsampled to ``min_side`` first
    when smaller (detectors find nothing below their minimum face size; at the papers' 512 px
    nothing is resized)."""
    images = images.detach().cpu().float()
    if min_side and min(images.shape[-2:]) < min_side:
        images = F.interpolate(images, size=(min_side, min_side), mode="bicubic",
                               align_corners=False).clamp(0, 1)
    return [np.ascontiguousarray(a.permute(1, 2, 0).numpy()) for a in to_uint8(images)]


def _unit(v: np.ndarray) -> np.ndarray:
    """v / ‖v‖, computed after dividing by max |v| so that tiny or huge embeddings (whose squared
    norm would be subnormal or overflow) keep full precision; zero stays zero."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if not peak > 0:
        return np.zeros_like(v)
    v = v / peak
    return v / float(np.linalg.norm(v))


def cosine(a: Embedding | None, b: Embedding | None) -> float:
    """Cosine similarity; 0 when either side is missing or zero (a zero embedding, as PID's
    reference code substitutes for a missed face, has cosine 0 with everything)."""
    if a is None or b is None:
        return 0.0
    return float(np.dot(_unit(a), _unit(b)))


def fds_values(generated: Embeddings, reference: Embeddings) -> list[float]:
    """PID App. A.2 FDS per generated image: the mean cosine similarity between its face
    embedding and each training image's, a missed face on either side counting as a zero
    embedding (cosine 0). The mean of these values over the generations is the paper's FDS."""
    if not len(reference):
        raise ValueError("FDS needs at least one training (clean) image")
    return [float(np.mean([cosine(g, r) for r in reference])) for g in generated]


def mean_identity(reference: Embeddings) -> Embedding | None:
    """The subject's identity: the mean of the unit-normalised embeddings of the clean images
    in which a face was found (Anti-DreamBooth §5 compares with the average embedding of the
    clean images; the paper does not say whether before or after normalising: we normalise
    first, so every image weighs alike — ArcFace norms grow with image quality). ``None`` when
    no clean image has a detected face."""
    found = [_unit(r) for r in reference if r is not None]
    return np.mean(found, axis=0) if found else None


def ism_values(generated: Embeddings, reference: Embeddings) -> list[float | None]:
    """Anti-DreamBooth §5 ISM per generated image: cosine similarity between its face
    embedding and the mean clean embedding; ``None`` where no face was detected (the paper
    leaves such images out of ISM and counts them in FDFR)."""
    identity = mean_identity(reference)
    if identity is None:
        raise ValueError("no face was detected in any clean image, so there is no identity to "
                         "compare with")
    return [None if g is None else cosine(g, identity) for g in generated]


def failure_values(detected: Sequence[bool]) -> list[float]:
    """Anti-DreamBooth §5 FDFR per image: 1.0 where the detector found no face, else 0.0."""
    return [0.0 if d else 1.0 for d in detected]


def ims_values(ip_generated: Embeddings, ip_reference: Embeddings, vgg_generated: Embeddings,
               vgg_reference: Embeddings, weight: float = IMS_LAMBDA) -> list[float]:
    """DiffShortcut §5 / App. A.2 IMS per generated image: λ·cos(antelopev2) + (1 −
    λ)·cos(VGG-Face),
    each against the mean clean embedding of its own network (as ISM, the definition DiffShortcut
    follows). The paper averages over all N_k generated images (App. A.2), so a face one network
    misses scores 0 in that network's term instead of being left out."""
    if len(ip_generated) != len(vgg_generated):
        raise ValueError(f"IMS pairs the two networks image by image: {len(ip_generated)} vs "
                         f"{len(vgg_generated)} embeddings")
    ip_identity, vgg_identity = mean_identity(ip_reference), mean_identity(vgg_reference)
    if ip_identity is None or vgg_identity is None:
        raise ValueError("no face was detected in any clean image, so there is no identity to "
                         "compare with")
    return [weight * cosine(a, ip_identity) + (1 - weight) * cosine(v, vgg_identity)
            for a, v in zip(ip_generated, vgg_generated, strict=True)]
