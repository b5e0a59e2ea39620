"""FDS, PID's Face Detection Score (Li et al., ICML 2024, App. A.2).

Definition (PID App. A.2): the average cosine similarity between the face embeddings of the
training images and those of the generated images, the faces found by MTCNN (Zhang et al.
2016) and embedded by a network trained on VGGFace2. Implementation: facenet-pytorch, as PID's
evaluation uses it — ``MTCNN`` (its weights ship inside the package; defaults: 160-px aligned
crop, margin 0, the largest face) and ``InceptionResnetV1(pretrained='vggface2')`` (512-d, L2
normalised). Per generated image the value is its mean cosine over all training images, so the
mean over generations is the paper's all-pairs average.

A generation without a detected face counts as a zero embedding, i.e. similarity 0 with every
training image — PID's convention (its evaluation substitutes a zero embedding for a missed
face in its released evaluation code). Why keep it: FDS asks whether the model learned
the face, and a generation in which no face can be found did not reproduce it; leaving such
images out would average only over the generations where the face survived and so hide the
strongest protective outcome. The price is that FDS mixes detection failure into similarity
(0 is not the floor of a cosine); the share of missed faces is counted in ``missing``, noted,
and measured on its own by ``fdfr``. Training images without a face count the same way (0 in
every pair) and are noted. Images smaller than 160 px are upsampled to 160 first (MTCNN's crop
size; the papers' images are 512 px and are not resized).

Weights: the VGGFace2 checkpoint ``20180402-114759-vggface2.pt`` is read from torch hub's cache,
``$TORCH_HOME/checkpoints/`` (where facenet-pytorch itself caches it), or from
``$PROTECTION_AUDIT_WEIGHTS/``; it is downloaded from facenet-pytorch's release only with
``--allow-download``. Otherwise the metric is unavailable at once, saying where it looked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from audit.parts.metrics.base import Metric, MetricResult, package_version
from audit.parts.metrics.faces import Embedding, fds_values, rgb_arrays
from audit.parts.metrics.weights import (
    downloads_allowed,
    file_sha256,
    find_weights,
    looked_in,
    missing_weights,
)

FACENET_FILE = "20180402-114759-vggface2.pt"
FACENET_URL = f"https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/{FACENET_FILE}"
VGGFACE2_CLASSES = 8631  # the checkpoint's classifier head (unused for embeddings, loaded strictly)
MIN_SIDE = 160
BATCH = 32

# crop: RGB uint8 H×W×3 arrays -> one 3×160×160 standardised face crop per image, or None.
Cropper = Callable[[Sequence[Any]], list[torch.Tensor | None]]


def torch_checkpoints() -> Path:
    """torch hub's checkpoint folder, resolved as facenet-pytorch resolves it."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(home).expanduser() / "checkpoints"


def facenet_weights() -> Path | None:
    return find_weights(torch_checkpoints() / FACENET_FILE, name=FACENET_FILE)


def mtcnn_cropper() -> Cropper:
    """facenet-pytorch's MTCNN with its defaults (bundled weights), one image at a time (its
    batched face selection fails on NumPy ≥ 2 when some images have no face)."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(image_size=160, margin=0, select_largest=True, post_process=True, device="cpu")

    def crop(arrays: Sequence[Any]) -> list[torch.Tensor | None]:
        with torch.no_grad():
            return [mtcnn(array) for array in arrays]

    return crop


def inception_resnet(path: Path) -> torch.nn.Module:
    """InceptionResnetV1 with the VGGFace2 checkpoint at ``path`` (embedding mode, eval)."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    net.logits = torch.nn.Linear(512, VGGFACE2_CLASSES)  # the checkpoint carries its classifier
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


class FaceDetectionScore(Metric):
    """PID App. A.2 FDS. ``crop`` and ``embed`` replace MTCNN and the VGGFace2 network (tests'
    stand-ins go through the same code path); by default both are facenet-pytorch's."""

    name = "fds"
    direction = "down"
    description = ("PID's FDS: mean cosine of facenet VGGFace2 embeddings (MTCNN faces) to the "
                   "training images'")

    def __init__(self, crop: Cropper | None = None, embed: torch.nn.Module | None = None,
                 label: str | None = None) -> None:
        if (crop is None) != (embed is None):
            raise ValueError("FaceDetectionScore: give both crop and embed (a stand-in pair) or "
                             "neither")
        self._crop, self._embed, self._label = crop, embed, label
        self._stand_in = embed is not None

    def implementation_name(self) -> str:
        if self._stand_in:
            return f"stand-in networks: {self._label or type(self._embed).__name__}"
        path = facenet_weights()
        weights = f"{path.name} sha256 {file_sha256(path)}" if path else f"{FACENET_FILE} (missing)"
        return (f"facenet-pytorch {package_version('facenet-pytorch')} MTCNN (bundled weights, "
                f"160-px crop, largest face) + InceptionResnetV1 vggface2 [{weights}]; missed face "
                f"= zero embedding; inputs ≥{MIN_SIDE} px")

    def missing_why(self) -> str | None:
        """Why the real networks cannot be loaded (decided from file checks only: fast)."""
        import importlib.util

        if importlib.util.find_spec("facenet_pytorch") is None:
            return "facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0)"
        if facenet_weights() is None and not downloads_allowed():
            return missing_weights(
                f"FDS needs facenet-pytorch's VGGFace2 InceptionResnetV1 weights: {FACENET_FILE}",
                looked_in(torch_checkpoints() / FACENET_FILE, name=FACENET_FILE),
                f"Copy it from {FACENET_URL} into {torch_checkpoints()}.",
            )
        return None

    def networks(self) -> tuple[Cropper, torch.nn.Module]:
        if self._embed is None:
            path = facenet_weights()
            # downloads allowed (missing_why said so): where facenet-pytorch caches it
            if path is None:
                path = torch_checkpoints() / FACENET_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(FACENET_URL, str(path), progress=False)
            self._crop, self._embed = mtcnn_cropper(), inception_resnet(path)
        return self._crop, self._embed  # type: ignore[return-value]

    def embeddings(self, images: torch.Tensor) -> list[Embedding | None]:
        """One 512-d embedding per image, ``None`` where no face was detected."""
        crop, embed = self.networks()
        crops = crop(rgb_arrays(images, MIN_SIDE))
        found = [i for i, c in enumerate(crops) if c is not None]
        out: list[Embedding | None] = [None] * len(crops)
        with torch.no_grad():
            for start in range(0, len(found), BATCH):
                index = found[start:start + BATCH]
                vectors = embed(torch.stack([crops[i] for i in index]).float())  # type: ignore[misc]
                for i, v in zip(index, vectors, strict=True):
                    out[i] = v.double().numpy()
        return out

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if not self._stand_in:
            why = self.missing_why()
            if why:
                return self.unavailable(why)
        if len(reference) == 0:
            return self.unavailable("no clean (training) images to compare with")
        gen, ref = self.embeddings(generated), self.embeddings(reference)
        values = fds_values(gen, ref)
        missing, ref_missing = sum(g is None for g in gen), sum(r is None for r in ref)
        notes = []
        if missing:
            notes.append(f"no face detected in {missing} of {len(gen)} generated images: each "
                         "counts as similarity 0 (PID's zero embedding)")
        if ref_missing:
            notes.append(f"no face detected in {ref_missing} of {len(ref)} training images: their "
                         "pairs count as similarity 0")
        return MetricResult(self.name, self.direction, values, self.implementation_name(),
                            missing=missing, notes=notes)
