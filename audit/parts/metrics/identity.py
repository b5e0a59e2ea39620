"""dlib identity similarity: the offline identity metric (neither PID's FDS nor Anti-DreamBooth's
ISM).

Embeddings: dlib's face-recognition ResNet (128-d, trained for face verification) with its
5-point landmark aligner, both from the ``face_recognition_models`` package, detection with
dlib's HOG frontal-face detector — all shipped in packages, so it runs without downloads. We
read the model files from the package's folder instead of importing it (its ``__init__`` needs
``pkg_resources``) and never import the ``face_recognition`` wrapper (it calls ``quit()`` when
the models are missing, killing the test session).

Per generated image: the mean cosine similarity between its embedding and each clean image's.
Where no face is detected the whole frame is used as the face box (the subjects are
face-centred crops) and the image is counted in ``missing``. This differs from the papers'
metrics on purpose and in name: PID's FDS (``fds``) scores a missed face as 0 with facenet's
VGGFace2 network, Anti-DreamBooth's ISM (``ism``) leaves it out and compares ArcFace embeddings
with the mean clean one. Images are upsampled to at least 256 px first: the HOG detector finds
no face below about 80 px.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from audit.data.images import to_uint8
from audit.parts.metrics.base import Metric, MetricResult, package_version

MIN_SIDE = 256


def models_folder() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@functools.cache
def _dlib_models() -> tuple[Any, Any, Any]:
    import dlib

    folder = cast(Path, models_folder())  # _dlib_models runs once it was found
    recognition = folder / "dlib_face_recognition_resnet_model_v1.dat"
    landmarks = folder / "shape_predictor_5_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(
        str(landmarks)), dlib.face_recognition_model_v1(str(recognition))


def _prepare(images: torch.Tensor) -> list[np.ndarray]:
    side = images.shape[-1]
    if side < MIN_SIDE:
        images = F.interpolate(images, size=(MIN_SIDE, MIN_SIDE), mode="bicubic",
                               align_corners=False).clamp(0, 1)
    return [np.ascontiguousarray(im.permute(1, 2, 0).numpy()) for im in to_uint8(images)]


class DlibIdentitySimilarity(Metric):
    name = "dlib_identity_similarity"
    direction = "down"
    description = ("mean cosine similarity of dlib ResNet face embeddings to the clean subject "
                   "(offline; not FDS or ISM)")

    def implementation_name(self) -> str:
        version = package_version("dlib-bin")
        version = package_version("dlib") if version == "missing" else version
        return (f"dlib {version} face-recognition ResNet v1 + 5-point aligner "
                f"(face_recognition_models), HOG detector, inputs ≥{MIN_SIDE} px")

    def missing_why(self) -> str | None:
        try:
            import dlib  # noqa: F401
        except ImportError:
            return "dlib is not installed (pip install dlib-bin)"
        folder = models_folder()
        if folder is None:
            return "face_recognition_models is not installed (pip install face-recognition-models)"
        for name in ("dlib_face_recognition_resnet_model_v1.dat",
                     "shape_predictor_5_face_landmarks.dat"):
            if not (folder / name).is_file():
                return f"{folder / name} is missing (reinstall face-recognition-models)"
        return None

    def embed(self, images: torch.Tensor) -> tuple[np.ndarray, int]:
        """(N×128 embeddings, number of images where no face was found and the frame was used)."""
        import dlib

        detector, aligner, recognition = _dlib_models()
        out, fallbacks = [], 0
        for array in _prepare(images):
            faces = detector(array, 0)
            if len(faces):
                box = max(faces, key=lambda r: r.width() * r.height())
            else:
                fallbacks += 1
                box = dlib.rectangle(0, 0, array.shape[1] - 1, array.shape[0] - 1)
            shape = aligner(array, box)
            out.append(np.asarray(recognition.compute_face_descriptor(array, shape),
                                  dtype=np.float64))
        return np.stack(out), fallbacks

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        gen, missing = self.embed(generated.cpu())
        ref, ref_missing = self.embed(reference.cpu())
        gen_n = gen / np.linalg.norm(gen, axis=1, keepdims=True).clip(1e-12)
        ref_n = ref / np.linalg.norm(ref, axis=1, keepdims=True).clip(1e-12)
        values = (gen_n @ ref_n.T).mean(axis=1)
        notes = []
        if missing:
            notes.append(f"no face detected in {missing} of {len(gen)} generated images: whole "
                         "frame used as the face box")
        if ref_missing:
            notes.append(f"no face detected in {ref_missing} of {len(ref)} reference images: whole "
                         "frame used")
        return MetricResult(self.name, self.direction, [float(v) for v in values],
                            self.implementation_name(), missing=missing, notes=notes)
