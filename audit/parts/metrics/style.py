"""Style similarity of the generations to an artist's works (the style subject's verdict).

* **clip_style_similarity**: per generation, the cosine between its CLIP image embedding and the
  mean embedding of the style's clean works (embeddings L2-normalised, the mean renormalised).
  Glaze (Shan et al. 2023, §6) and IMPRESS (§5.2, Table 1) judge mimicry with a CLIP-based style
  classifier over artist or genre labels; a subject folder has no label set to classify
  against, so the one-class form — how close a generation sits to the artist's works in CLIP's
  space — is used, the same embedding the classifiers read. CLIP ViT-B/32 as in
  ``clip_quality.py``; its weights come from the local weights folder or the Hugging Face cache,
  else the metric is ``unavailable`` (the tier's substitute decides; the record says so).
* **gram_style_similarity** (weight-free; the smoke tier's substitute): per generation, the
  cosine between its style statistics and the mean statistics of the works, the statistics being
  Gatys et al.'s (CVPR 2016, eq. 3) Gram matrices of feature maps — here, as Ustyuzhaninov et
  al. (ICLR 2017) show suffices for texture, of one layer of 64 fixed random 5×5 filters
  (seeded, zero-mean, unit-norm; reflect padding, so a uniform brightness offset changes no
  feature) with ReLU, at 2 scales (the image and its 2× downsample), the
  features centred per channel so that the Gram matrix is a covariance (colour means alone do
  not make two images similar). Nothing learned, so no blind spot shared with the model under
  audit.

Both: higher = closer to the style; direction "down" (a lower value = better protection).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from audit.parts.metrics.base import Metric, MetricResult
from audit.parts.metrics.clip_quality import _ClipMetric

FILTERS = 64
KERNEL = 5
SCALES = 2
FILTER_SEED = 20170424  # fixed: the filter bank is part of the metric's definition
MAX_SIDE = 256


@functools.lru_cache(maxsize=1)
def filter_bank() -> torch.Tensor:
    """FILTERS×3×KERNEL×KERNEL random filters, each zero-mean and unit-norm (fixed seed)."""
    g = torch.Generator().manual_seed(FILTER_SEED)
    w = torch.randn(FILTERS, 3, KERNEL, KERNEL, generator=g)
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    return w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def gram_statistics(images: torch.Tensor) -> torch.Tensor:
    """(N, D) concatenated, flattened covariance Gram matrices of the random-filter features at
    every scale, each scale's block L2-normalised; images N×3×H×W in [0, 1]."""
    x = images.float()
    if x.shape[-1] > MAX_SIDE:
        x = F.interpolate(x, size=(MAX_SIDE, MAX_SIDE), mode="area")
    blocks = []
    for scale in range(SCALES):
        if scale:
            x = F.avg_pool2d(x, 2)
        padded = F.pad(x, [KERNEL // 2] * 4, mode="reflect")
        feats = F.relu(F.conv2d(padded, filter_bank())).flatten(2)
        feats = feats - feats.mean(dim=2, keepdim=True)
        gram = feats @ feats.transpose(1, 2) / feats.shape[-1]
        block = gram.flatten(1)
        blocks.append(block / block.norm(dim=1, keepdim=True).clamp_min(1e-12))
    return torch.cat(blocks, dim=1)


def similarity_to_mean(generated: torch.Tensor, works: torch.Tensor) -> torch.Tensor:
    """(N,) cosine between each row of ``generated`` and the mean row of ``works``."""
    centre = works.mean(dim=0)
    centre = centre / centre.norm().clamp_min(1e-12)
    rows = generated / generated.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return rows @ centre


class GramStyleSimilarity(Metric):
    name = "gram_style_similarity"
    direction = "down"
    description = ("cosine of each generation's Gram-matrix style statistics (random-filter "
                   "features) to the style's works (weight-free; smoke tier's style metric)")

    def implementation_name(self) -> str:
        return (f"Gram covariance of {FILTERS} random {KERNEL}×{KERNEL} ReLU filters (seed "
                f"{FILTER_SEED}) at {SCALES} scales; cosine to the works' mean")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if len(reference) == 0:
            return self.unavailable("no clean works of the style to compare with")
        if reference.shape[-2:] != generated.shape[-2:]:
            reference = F.interpolate(reference.float(), size=tuple(generated.shape[-2:]),
                                      mode="area")
        values = similarity_to_mean(gram_statistics(generated), gram_statistics(reference))
        return MetricResult(self.name, self.direction, [float(v) for v in values],
                            self.implementation_name())


class ClipStyleSimilarity(_ClipMetric):
    name = "clip_style_similarity"
    description = ("cosine of each generation's CLIP image embedding to the mean embedding of the "
                   "style's works")

    def implementation_name(self) -> str:
        return f"{self.clip_implementation()}; cosine to the works' mean embedding"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        from audit.data.images import to_uint8

        network = self.network()
        pixels = [Image.fromarray(a.permute(1, 2, 0).numpy())
                  for a in to_uint8(images.detach().cpu())]
        with torch.no_grad():
            out = network.model.encode_image(torch.stack([network.preprocess(p)
                                                          for p in pixels])).float()
        return out / out.norm(dim=-1, keepdim=True)

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        why = self.missing_why()
        if why:
            return self.unavailable(why)
        if len(reference) == 0:
            return self.unavailable("no clean works of the style to compare with")
        values = similarity_to_mean(self.embed(generated), self.embed(reference))
        return MetricResult(self.name, self.direction, [float(v) for v in values],
                            self.implementation_name())
