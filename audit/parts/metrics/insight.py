"""Anti-DreamBooth's ISM and FDFR, and DiffShortcut's IMS, on InsightFace networks.

Library: ``insightface`` (maintained, ONNX Runtime on CPU or GPU; no TensorFlow), which
provides a face detector and ArcFace recognition in one model pack, and is the library
DiffShortcut's IMS names (antelopev2). Anti-DreamBooth (Le et al., ICCV 2023, §5) computed ISM
and FDFR with DeepFace's ArcFace and the ``retinaface`` package, both TensorFlow ports; we use
InsightFace's own networks instead: ArcFace-R50 trained on WebFace600K (``w600k_r50.onnx``) and
the SCRFD-10GF detector (``det_10g.onnx``), both from the ``buffalo_l`` pack, InsightFace's
default. SCRFD (Guo et al. 2021) is the InsightFace group's successor to their RetinaFace
(Deng et al. 2020), with the same 5-landmark output used for ArcFace's alignment; DiffShortcut
itself cites RetinaFace for InsightFace's detection. The networks differ from the paper's, so
values are comparable between runs of this implementation, and with the paper's tables only
in their direction and rough size — the implementation string names every file and hash.

Weights: a pack is the folder ``~/.insightface/models/<pack>/`` (InsightFace's own cache) or
``$PROTECTION_AUDIT_WEIGHTS/<pack>/``; a pack unzipped one level too deep
(``antelopev2/antelopev2/*.onnx``, as the antelopev2 archive unpacks) is found too. It is
downloaded by InsightFace only with ``--allow-download``; otherwise the metric is unavailable at
once. IMS's VGG-Face half needs DeepFace, which needs TensorFlow: this project does not install
it, so IMS is computed only where ``deepface`` is importable and its weights are present, and is
otherwise unavailable, saying so — never computed from a substitute network under its name.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import torch

from audit.parts.metrics.base import Metric, MetricResult, package_version
from audit.parts.metrics.faces import (
    IMS_LAMBDA,
    Embedding,
    Face,
    failure_values,
    ims_values,
    ism_values,
    largest,
    rgb_arrays,
)
from audit.parts.metrics.weights import (
    downloads_allowed,
    file_sha256,
    looked_in,
    missing_weights,
    weights_dir,
)

ISM_PACK = "buffalo_l"  # InsightFace's default pack: SCRFD-10GF + ArcFace-R50 (WebFace600K)
IMS_PACK = "antelopev2"  # DiffShortcut's (after IP-Adapter): SCRFD-10GF + ArcFace-R100 (Glint360K)
DET_SIZE = (640, 640)  # InsightFace's standard detector input
DET_THRESHOLD = 0.5  # InsightFace's default detection score threshold
DEEPFACE_FILES = ("vgg_face_weights.h5", "retinaface.h5")

# An analyzer: one RGB uint8 H×W×3 image -> the faces found in it (with embeddings if it embeds).
Analyzer = Callable[[np.ndarray], list[Face]]


def insightface_root() -> Path:
    """InsightFace's model cache: ``~/.insightface`` (its ``FaceAnalysis`` default root)."""
    return Path("~/.insightface").expanduser()


def _pack_candidates(pack: str) -> list[Path]:
    local = weights_dir()
    return ([local / pack] if local is not None else []) + [insightface_root() / "models" / pack]


def _onnx_folder(folder: Path) -> Path | None:
    """The folder holding the pack's .onnx files: ``folder`` or its one same-named subfolder."""
    if not folder.is_dir():
        return None
    if any(folder.glob("*.onnx")):
        return folder
    nested = folder / folder.name
    return nested if nested.is_dir() and any(nested.glob("*.onnx")) else None


def find_pack(pack: str) -> Path | None:
    return next((f for f in map(_onnx_folder, _pack_candidates(pack)) if f is not None), None)


def pack_missing(pack: str, needed_by: str) -> str | None:
    """Why a pack is not usable (file checks only: fast), or None."""
    find = importlib.util.find_spec
    if find("insightface") is None or find("onnxruntime") is None:
        return (f"{needed_by} needs insightface and onnxruntime (pip install onnxruntime onnx && "
                "pip install --no-deps insightface==2.1)")
    if find_pack(pack) is None and not downloads_allowed():
        return missing_weights(
            f"{needed_by} needs InsightFace's '{pack}' model pack (a folder of .onnx files)",
            looked_in(*_pack_candidates(pack)),
            f"Unzip {pack}.zip from InsightFace's model-zoo release into "
            f"{insightface_root() / 'models' / pack}.",
        )
    return None


def pack_description(pack: str) -> str:
    folder = find_pack(pack)
    if folder is None:
        return f"pack {pack} (missing)"
    files = ", ".join(f"{p.name} sha256:{file_sha256(p)[:16]}"
                      for p in sorted(folder.glob("*.onnx")))
    return f"pack {pack} [{files}]"


def insightface_analyzer(pack: str, modules: tuple[str, ...]) -> Analyzer:
    """InsightFace's ``FaceAnalysis`` on ``pack`` with only ``modules`` (detection[, recognition]),
    CPU provider, 640×640 detector input, threshold 0.5 (InsightFace's defaults)."""
    from insightface.app import FaceAnalysis

    folder = find_pack(pack)
    if folder is None:  # downloads are allowed (pack_missing said so): InsightFace fetches it
        from insightface.utils.storage import ensure_available

        folder = _onnx_folder(Path(ensure_available("models", pack, root=str(insightface_root()))))
        if folder is None:
            raise FileNotFoundError(f"InsightFace's download of '{pack}' holds no .onnx file")
    app = FaceAnalysis(name=str(folder), allowed_modules=list(modules),
                       providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=DET_SIZE, det_thresh=DET_THRESHOLD)

    def analyze(rgb: np.ndarray) -> list[Face]:
        faces = app.get(np.ascontiguousarray(rgb[:, :, ::-1]))  # InsightFace reads BGR (OpenCV)
        return [Face(tuple(float(x) for x in f.bbox[:4]), float(f.det_score),  # type: ignore[arg-type]
                     None if f.embedding is None else np.asarray(f.embedding, dtype=np.float64))
                     for f in faces]

    return analyze


def deepface_home() -> Path:
    return Path(
        os.environ.get("DEEPFACE_HOME", str(Path.home()))).expanduser() / ".deepface" / "weights"


def deepface_missing() -> str | None:
    if importlib.util.find_spec("deepface") is None:
        return ("IMS's VGG-Face half (30 %) needs DeepFace's VGG-Face network: the deepface "
                "package is not installed (it needs TensorFlow, which this project does not "
                "install; pip install deepface in an environment with TensorFlow to compute IMS)")
    absent = [f for f in DEEPFACE_FILES if not (deepface_home() / f).is_file()]
    if absent and not downloads_allowed():
        return missing_weights(f"IMS needs DeepFace's weights {', '.join(absent)}",
                               [str(deepface_home())],
                               "DeepFace downloads them to $DEEPFACE_HOME/.deepface/weights on "
                               "first use.")
    return None


def deepface_vgg_analyzer() -> Analyzer:
    """DeepFace VGG-Face embeddings of its RetinaFace faces, aligned, as Anti-DreamBooth calls
    DeepFace."""
    from deepface import DeepFace

    def analyze(rgb: np.ndarray) -> list[Face]:
        try:
            found = DeepFace.represent(img_path=np.ascontiguousarray(rgb[:, :, ::-1]),
                                       model_name="VGG-Face",
                                       detector_backend="retinaface", enforce_detection=True,
                                       align=True)
        except ValueError:  # DeepFace's "Face could not be detected"
            return []
        faces = []
        for item in found:
            area = item.get("facial_area") or {}
            x, y, w, h = (float(area.get(k, 0)) for k in ("x", "y", "w", "h"))
            faces.append(Face((x, y, x + w, y + h), float(item.get("face_confidence") or 1.0),
                              np.asarray(item["embedding"], dtype=np.float64)))
        return faces

    return analyze


def biggest_embeddings(analyzer: Analyzer, images: torch.Tensor) -> list[Embedding | None]:
    """The biggest face's embedding per image (Anti-DreamBooth's choice), None where none."""
    out: list[Embedding | None] = []
    for rgb in rgb_arrays(images):
        face = largest([f for f in analyzer(rgb) if f.embedding is not None])
        out.append(None if face is None else face.embedding)
    return out


class _InsightMetric(Metric):
    """A metric on an InsightFace pack; ``analyzer`` replaces the pack (tests' stand-ins)."""

    pack = ISM_PACK
    modules: tuple[str, ...] = ("detection", "recognition")

    def __init__(self, analyzer: Analyzer | None = None, label: str | None = None) -> None:
        self._analyzer, self._label = analyzer, label

    def library(self) -> str:
        if self._analyzer is not None and self._label is not None:
            return f"stand-in network: {self._label}"
        return (f"insightface {package_version('insightface')} / onnxruntime "
                f"{package_version('onnxruntime')}, {pack_description(self.pack)}, detector input "
                f"{DET_SIZE[0]}², threshold {DET_THRESHOLD}")

    def missing_why(self) -> str | None:
        return None if self._analyzer is not None else pack_missing(self.pack, self.name.upper())

    def analyzer(self) -> Analyzer:
        if self._analyzer is None:
            self._analyzer = insightface_analyzer(self.pack, self.modules)
        return self._analyzer


class IdentityScoreMatching(_InsightMetric):
    """Anti-DreamBooth §5 ISM: cosine of each generated face's ArcFace embedding to the mean
    clean embedding; a generation without a detected face is left out: its slot is ``None``
    (undefined, so the slot is left out of every exploit's comparison), counted in ``missing``
    and measured by ``fdfr``."""

    name = "ism"
    direction = "down"
    description = ("Anti-DreamBooth's ISM: ArcFace cosine to the mean clean-face embedding "
                   "(InsightFace buffalo_l)")

    def implementation_name(self) -> str:
        return (f"{self.library()}; ArcFace on the biggest face, mean of unit clean embeddings; no "
                "face: left out")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        analyzer = self.analyzer()
        ref = biggest_embeddings(analyzer, reference)
        try:
            slots = ism_values(biggest_embeddings(analyzer, generated), ref)
        except ValueError as exc:
            return self.unavailable(f"{exc} ({len(ref)} clean images)")
        missing = sum(v is None for v in slots)
        notes = [f"no face detected in {missing} of {len(slots)} generated images: left out of ISM "
                 "(undefined slots), as Anti-DreamBooth does (see fdfr)"] if missing else []
        ref_missing = sum(r is None for r in ref)
        if ref_missing:
            notes.append(f"no face detected in {ref_missing} of {len(ref)} clean images: the "
                         "identity is the mean of the others")
        return MetricResult(self.name, self.direction, slots, self.implementation_name(),
                            missing=missing, notes=notes)


class FaceDetectionFailureRate(_InsightMetric):
    """Anti-DreamBooth §5 FDFR: the share of generated images in which the detector finds no
    face (per image 1 or 0; their mean is the rate)."""

    name = "fdfr"
    direction = "up"
    description = ("Anti-DreamBooth's FDFR: share of generations without a detected face "
                   "(InsightFace SCRFD, buffalo_l)")
    modules = ("detection",)

    def implementation_name(self) -> str:
        return f"{self.library()}; per image 1 if no face ≥ threshold"

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        analyzer = self.analyzer()
        values = failure_values([bool(analyzer(rgb)) for rgb in rgb_arrays(generated)])
        return MetricResult(self.name, self.direction, values, self.implementation_name())


class IdentityMatchingSimilarity(Metric):
    """DiffShortcut §5 / App. A.2 IMS = 0.7 · IMS(antelopev2) + 0.3 · IMS(DeepFace VGG-Face), each
    a cosine to the mean clean embedding of its network; a face one network misses scores 0 in
    its term (the paper averages over all generated images). ``antelope`` and ``vgg`` replace
    the two networks (tests' stand-ins)."""

    name = "ims"
    direction = "down"
    description = ("DiffShortcut's IMS: 0.7·antelopev2 + 0.3·DeepFace VGG-Face cosine to the mean "
                   "clean embedding")

    def __init__(self, antelope: Analyzer | None = None, vgg: Analyzer | None = None,
                 label: str | None = None) -> None:
        if (antelope is None) != (vgg is None):
            raise ValueError("IdentityMatchingSimilarity: give both stand-in analyzers or neither")
        self._antelope, self._vgg, self._label = antelope, vgg, label

    def implementation_name(self) -> str:
        if self._antelope is not None:
            return f"stand-in networks: {self._label or 'injected analyzers'}; λ = {IMS_LAMBDA}"
        return (f"λ = {IMS_LAMBDA}: insightface {package_version('insightface')} "
                f"{pack_description(IMS_PACK)} + deepface {package_version('deepface')} VGG-Face "
                "(retinaface detector, aligned); no face: 0 in that term")

    def missing_why(self) -> str | None:
        if self._antelope is not None:
            return None
        missing = [m for m in (pack_missing(IMS_PACK, "IMS (70 % antelopev2)"), deepface_missing())
                   if m]
        return " | ".join(missing) if missing else None

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        if self._antelope is None:
            self._antelope = insightface_analyzer(IMS_PACK, ("detection", "recognition"))
            self._vgg = deepface_vgg_analyzer()
        antelope = cast(Analyzer, self._antelope)
        ip_gen = biggest_embeddings(antelope, generated)
        ip_ref = biggest_embeddings(antelope, reference)
        vgg = cast(Analyzer, self._vgg)
        vgg_gen, vgg_ref = biggest_embeddings(vgg, generated), biggest_embeddings(vgg, reference)
        try:
            values = ims_values(ip_gen, ip_ref, vgg_gen, vgg_ref)
        except ValueError as exc:
            return self.unavailable(str(exc))
        missing = sum(a is None or v is None for a, v in zip(ip_gen, vgg_gen, strict=True))
        notes = [f"a face was missed by one or both networks in {missing} of {len(values)} "
                 "generated images: 0 in that network's term"] if missing else []
        return MetricResult(self.name, self.direction, values, self.implementation_name(),
                            missing=missing, notes=notes)
