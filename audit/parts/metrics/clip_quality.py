"""CLIP-based quality of the generations: PID's IQS, CLIP-IQAC and DiffShortcut's Q.

* **IQS** (PID App. A.2): per image, ``10³ · (cos(f(x), t("A high-quality photo")) −
  cos(f(x), t("A low-quality photo")))`` with CLIP's image and text embeddings f, t; the
  paper reports the mean over the generations. Direction ↓ (PID Tables 2–7: a lower IQS is a
  stronger protection). The prompts are App. A.2's; PID's released code uses
  "A good photo of high quality" / "A bad photo of low quality" — we follow the paper's text.
* **CLIP-IQAC** (DiffShortcut App. A.2, "following [8]" = MetaCloak): the softmax of CLIP's
  logits (100 · cosine, CLIP's logit scale) over "a good photo of face" / "a bad photo of
  face", good minus bad, so in [−1, 1]. MetaCloak's evaluation code turns the class "person"
  into "face", hence the prompts. Direction ↓.
* **Q** (DiffShortcut §5, App. A.2): the mean of LIQE (Zhang et al., CVPR 2023) re-normalised
  from its [1, 5] scale to [−1, 1], ``(LIQE − 3) / 2``, and CLIP-IQAC. Direction ↓. LIQE's
  maintained implementation is pyiqa; it is not a dependency here (``LIQE_UNAVAILABLE`` says
  why), so Q is reported unavailable unless a LIQE scorer is given to the metric.

The CLIP network. PID's and MetaCloak's released code use OpenAI's CLIP ViT-B/32; here
open_clip's ``ViT-B-32`` architecture with the ``openai`` pretrained tag — the same weights,
converted by open_clip and served from the Hugging Face hub
(``timm/vit_base_patch32_clip_224.openai``), built with QuickGELU as OpenAI trained it
(``ViT-B-32-quickgelu``). Preprocessing is open_clip's for that model (bicubic resize of the
short side to 224, centre crop, OpenAI's mean/std), applied to the 8-bit generations as PIL
images, as the papers' scripts read their PNG files.

Weights: the file is looked for, in order, as
``$PROTECTION_AUDIT_WEIGHTS/timm/vit_base_patch32_clip_224.openai/<file>`` and in the Hugging
Face hub cache (``HF_HOME``), for ``<file>`` ``open_clip_model.safetensors`` or
``open_clip_pytorch_model.bin`` (the hub's names). Missing → ``unavailable`` at once, decided
from file checks only, unless downloads are allowed (``--allow-download``).

Every metric takes a stand-in network (``ClipNetwork``) in its constructor; it goes through
the same code path (tests/test_paper_metrics.py, the logic tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit.data.images import to_uint8
from audit.parts.metrics.base import Metric, MetricResult, package_version
from audit.parts.metrics.weights import (
    downloads_allowed,
    find_weights,
    looked_in,
    missing_weights,
    weights_dir,
    weights_label,
)

CLIP_ARCH = "ViT-B-32"
CLIP_TAG = "openai"
CLIP_BUILD = "ViT-B-32-quickgelu"  # OpenAI's ViT-B/32 was trained with QuickGELU
CLIP_REPO = "timm/vit_base_patch32_clip_224.openai"
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

IQS_PROMPTS = ("A high-quality photo", "A low-quality photo")  # PID App. A.2
IQS_SCALE = 1e3  # PID App. A.2: "a 10^3 scale of the average differences"
# DiffShortcut App. A.2 via MetaCloak
IQAC_PROMPTS = ("a good photo of face", "a bad photo of face")
IQAC_LOGIT_SCALE = 100.0  # CLIP's logit scale, as MetaCloak's evaluation multiplies the cosines
LIQE_RANGE = (1.0, 5.0)  # LIQE's quality scale (bad … perfect)

LIQE_UNAVAILABLE = (
    "Q needs LIQE (Zhang et al., CVPR 2023), whose maintained implementation is pyiqa; pyiqa is "
    "not a dependency here: pyiqa 0.1.16 pulls 33 more distributions (bitsandbytes, datasets with "
    "pyarrow, tensorboard, numba with llvmlite, pandas, pre-commit, facexlib, openai-clip, ...) "
    "and opencv-python, which overwrites the opencv-python-headless cv2 module this toolkit uses; "
    "its weights (liqe_mix.pt and OpenAI's CLIP ViT-B/32) download at run time. Q's other half is "
    "reported as clip_iqac."
)


@dataclass
class ClipNetwork:
    """What the metrics need of CLIP: embeddings of preprocessed images and of tokenised text."""

    model: Any  # encode_image(B×3×224×224) -> B×D, encode_text(tokens) -> P×D
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> 3×224×224 tensor
    tokenize: Callable[[Sequence[str]], torch.Tensor]
    label: str


def clip_weights() -> Path | None:
    """The CLIP checkpoint file on this machine: the local weights folder, then the hub cache."""
    for name in CLIP_FILES:
        path = find_weights(name=f"{CLIP_REPO}/{name}")
        if path is not None:
            return path
    from huggingface_hub import try_to_load_from_cache

    for name in CLIP_FILES:
        cached = try_to_load_from_cache(CLIP_REPO, name)
        if isinstance(cached, str):
            return Path(cached)
    return None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(Path(constants.HF_HUB_CACHE) / f"models--{CLIP_REPO.replace('/', '--')}")


def clip_missing() -> str | None:
    """Why CLIP cannot be loaded (file checks only, well under a second), or None."""
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        return "open_clip is not installed (pip install open-clip-torch)"
    if clip_weights() is None and not downloads_allowed():
        local = weights_dir()
        places = looked_in(*(local / CLIP_REPO / n for n in CLIP_FILES) if local else (),
                           _hub_cache())
        return missing_weights(
            f"CLIP {CLIP_ARCH} '{CLIP_TAG}' weights ({' or '.join(CLIP_FILES)} of {CLIP_REPO})",
            places,
            f"Download one from https://huggingface.co/{CLIP_REPO} into {CLIP_REPO}/ under the "
            "local weights folder.",
        )
    return None


@functools.cache
def load_clip(path: str | None) -> ClipNetwork:
    """open_clip's ViT-B-32 (QuickGELU) with the checkpoint at ``path``; None: open_clip's own
    download of the ``openai`` tag into the hub cache (only with downloads allowed)."""
    import open_clip

    if path is None:
        model, _, preprocess = open_clip.create_model_and_transforms(CLIP_ARCH, pretrained=CLIP_TAG)
    else:
        model, _, preprocess = open_clip.create_model_and_transforms(CLIP_BUILD, pretrained=path)
    return ClipNetwork(model.eval(), preprocess, open_clip.get_tokenizer(CLIP_ARCH), clip_label())


def clip_label() -> str:
    path = clip_weights()
    return (f"open_clip {package_version('open-clip-torch')} {CLIP_ARCH} '{CLIP_TAG}' (QuickGELU) "
            f"[{weights_label(path, CLIP_FILES[0])}]")


def prompt_cosines(
        network: ClipNetwork, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """(N, P) cosine similarities between CLIP's embeddings of each image and each prompt."""
    from PIL import Image

    pixels = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in to_uint8(images.detach().cpu())]
    with torch.no_grad():
        batch = torch.stack([network.preprocess(p) for p in pixels])
        image = network.model.encode_image(batch).float()
        text = network.model.encode_text(network.tokenize(list(prompts))).float()
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return image @ text.T


def iqs_values(cosines: torch.Tensor) -> list[float]:
    """PID App. A.2 IQS per image from its (N, 2) cosines to (high-, low-quality prompt)."""
    return [float(v) for v in IQS_SCALE * (cosines[:, 0] - cosines[:, 1])]


def iqac_values(cosines: torch.Tensor) -> list[float]:
    """CLIP-IQAC per image: softmax(100 · cosines) over (good, bad), good − bad, in [−1, 1]."""
    p = torch.softmax(IQAC_LOGIT_SCALE * cosines.double(), dim=-1)
    return [float(v) for v in p[:, 0] - p[:, 1]]


def q_values(liqe: Sequence[float], iqac: Sequence[float]) -> list[float]:
    """DiffShortcut §5 Q per image: the mean of LIQE re-normalised to [−1, 1] and CLIP-IQAC."""
    lo, hi = LIQE_RANGE
    if len(liqe) != len(iqac):
        raise ValueError(f"Q pairs LIQE and CLIP-IQAC image by image: {len(liqe)} vs {len(iqac)} "
                         "values")
    return [0.5 * ((2 * (float(s) - lo) / (hi - lo) - 1) + float(c)) for s,
            c in zip(liqe, iqac, strict=True)]


class _ClipMetric(Metric):
    """A CLIP metric; ``network`` replaces the real CLIP (a stand-in for the logic tests)."""

    direction = "down"

    def __init__(self, network: ClipNetwork | None = None) -> None:
        self._network, self._stand_in = network, network

    def missing_why(self) -> str | None:
        return None if self._stand_in is not None else clip_missing()

    def network(self) -> ClipNetwork:
        if self._network is None:
            path = clip_weights()
            self._network = load_clip(str(path) if path else None)
        return self._network

    def clip_implementation(self) -> str:
        return (f"stand-in network: {self._stand_in.label}" if self._stand_in is not None
                else clip_label())


class ImageQualityScore(_ClipMetric):
    name = "iqs"
    description = ("PID's IQS: 10³ · (CLIP cosine to 'A high-quality photo' − to 'A low-quality "
                   "photo')")

    def implementation_name(self) -> str:
        return f"{self.clip_implementation()}; prompts {IQS_PROMPTS}, ×{IQS_SCALE:g}"

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        values = iqs_values(prompt_cosines(self.network(), generated, IQS_PROMPTS))
        return MetricResult(self.name, self.direction, values, self.implementation_name())


class ClipIqac(_ClipMetric):
    name = "clip_iqac"
    description = ("CLIP-IQAC: softmax over CLIP logits for 'a good/bad photo of face', good − "
                   "bad, in [−1, 1]")

    def implementation_name(self) -> str:
        return (f"{self.clip_implementation()}; prompts {IQAC_PROMPTS}, softmax of "
                f"{IQAC_LOGIT_SCALE:g}·cosine")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        values = iqac_values(prompt_cosines(self.network(), generated, IQAC_PROMPTS))
        return MetricResult(self.name, self.direction, values, self.implementation_name())


class QualityQ(_ClipMetric):
    """DiffShortcut's Q. ``liqe`` scores a batch of images (N×3×H×W in [0, 1]) on LIQE's [1, 5]
    scale; there is no real one here (``LIQE_UNAVAILABLE``), so Q is unavailable without it."""

    name = "q"
    description = "DiffShortcut's Q: mean of LIQE re-normalised to [−1, 1] and CLIP-IQAC"

    def __init__(self, network: ClipNetwork | None = None,
                 liqe: Callable[[torch.Tensor], Sequence[float]] | None = None,
                 liqe_label: str = "") -> None:
        super().__init__(network)
        self._liqe, self._liqe_label = liqe, liqe_label

    def implementation_name(self) -> str:
        liqe = (f"LIQE: {self._liqe_label or 'given scorer'}" if self._liqe is not None
                else "LIQE: none (unavailable)")
        return (f"{liqe}; CLIP-IQAC: {self.clip_implementation()}, prompts {IQAC_PROMPTS}; (LIQE − "
                "3)/2 averaged with CLIP-IQAC")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if self._liqe is None:
            return self.unavailable(LIQE_UNAVAILABLE)
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        iqac = iqac_values(prompt_cosines(self.network(), generated, IQAC_PROMPTS))
        liqe = [float(v) for v in self._liqe(generated)]
        return MetricResult(self.name, self.direction, q_values(liqe, iqac),
                            self.implementation_name())
