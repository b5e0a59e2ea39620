"""Subject similarity: how close each generation is to the nearest clean subject image.

The smoke tier's verdict metric (model card: ``audit/models/weights/tiny/MODEL_CARD.md``). At
64 px the face metrics work only through their fallbacks (no face is detected below ~80 px,
so identity is read off the whole frame), while few-shot DreamBooth on a small model does what
personalisation does at that scale: it reproduces its training views. What PID attacks is
exactly that reproduction — it distorts the VAE posterior so the UNet learns the wrong latents
(PID §4, eq. 5) — so the protective effect shows as generations that are further from every
subject view.

Per generated image: max over the clean subject images of SSIM (Wang et al. 2004; piq, data
range 1, Gaussian window 11, σ 1.5) — the similarity to the view it is closest to. SSIM is a
fixed feature space: local luminance, contrast and structure statistics, nothing learned, so
it cannot share a blind spot with the model under audit (the VAE encoder, which PID attacks,
would). Higher = closer to the subject; direction "down" (lower = better protection). At
full resolution the same number is a coarse memorisation measure, reported next to the face
metrics, not instead of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from audit.parts.metrics.base import Metric, MetricResult, package_version

KERNEL = 11
MAX_SIDE = 256  # larger images are compared at 256 px (structure, not texture, is the question)


def nearest_subject_ssim(generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(N,) max over reference images of SSIM(generated_i, reference_j); images in [0, 1]."""
    import piq

    side = generated.shape[-1]
    if side > MAX_SIDE:
        generated = F.interpolate(generated, size=(MAX_SIDE, MAX_SIDE), mode="area")
    if reference.shape[-2:] != generated.shape[-2:]:
        reference = F.interpolate(reference, size=tuple(generated.shape[-2:]), mode="area")
    n, m = len(generated), len(reference)
    pairs_g = generated.float().repeat_interleave(m, 0)
    pairs_r = reference.float().to(generated.device).repeat(n, 1, 1, 1)
    ssim = piq.ssim(pairs_g.clamp(0, 1), pairs_r.clamp(0, 1), data_range=1.0, reduction="none",
                    kernel_size=KERNEL)
    return ssim.view(n, m).max(dim=1).values


class SubjectSimilarity(Metric):
    name = "subject_similarity"
    direction = "down"
    description = ("SSIM of each generation to its nearest clean subject image (smoke-tier verdict "
                   "metric)")

    def implementation_name(self) -> str:
        return (f"piq {package_version('piq')} ssim (window {KERNEL}, data range 1), max over "
                "subject images")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if len(reference) == 0:
            return self.unavailable("no clean subject images to compare with")
        values = nearest_subject_ssim(generated, reference)
        return MetricResult(self.name, self.direction, [float(v) for v in values],
                            self.implementation_name())
