"""Similarity between edits (PhotoGuard §5, Table 6): SSIM, PSNR, VIFp and FSIM between the
edit of each protected image and the edit of the same clean image, with the same prompt and
seed. PhotoGuard's footnote 8 takes them from piq; so do we, with piq's defaults (data range
1; SSIM's 11-px Gaussian window and its downsampling of images above 256 px; VIFp on
luminance, σ_n² = 2; FSIM on colour). Weight-free.

These are *pair* metrics: ``generated`` are the edits of the protected (or attacked) images,
``reference`` the edits of the clean images, slot by slot — not the clean subject images the
DreamBooth metrics receive. They are registered for the editing exploits to come and are not
computed on DreamBooth's generations. Direction ↓: PhotoGuard's goal is edits of immunized
images as different as possible from the clean edits, so a lower similarity is a stronger
protection (its Table 6's arrows mark similarity, not protection).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit.parts.metrics.base import Metric, MetricResult, package_version

VIF_MIN_SIDE = 41  # piq's vif_p refuses smaller images (4 scales of its Gaussian windows)


def _ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return piq.ssim(x, y, data_range=1.0, reduction="none")


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return piq.psnr(x, y, data_range=1.0, reduction="none")


def _vifp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return piq.vif_p(x, y, data_range=1.0, reduction="none")


def _fsim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    import piq

    return piq.fsim(x, y, data_range=1.0, reduction="none")


class EditSimilarity(Metric):
    """One of PhotoGuard Table 6's similarities, per slot: (edit of protected i, edit of clean
    i)."""

    direction = "down"
    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    label: str
    min_side = 1

    def implementation_name(self) -> str:
        return (f"piq {package_version('piq')} {self.label} (defaults, data range 1), edit of "
                "protected vs edit of clean")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if generated.shape != reference.shape:
            raise ValueError(
                f"{self.name} compares the edit of each protected image with the edit of the same "
                f"clean image, slot by slot: got {tuple(generated.shape)} and "
                f"{tuple(reference.shape)}; pass the clean edits as the reference"
            )
        side = min(generated.shape[-2:])
        if side < self.min_side:
            return self.unavailable(f"{self.label} needs images of at least {self.min_side} px "
                                    f"(piq); these are {side} px")
        x, y = generated.float().cpu().clamp(0, 1), reference.float().cpu().clamp(0, 1)
        values = type(self).function(x, y)
        return MetricResult(self.name, self.direction, [float(v) for v in values],
                            self.implementation_name())


class EditSSIM(EditSimilarity):
    name = "edit_ssim"
    label = "ssim"
    function = staticmethod(_ssim)
    description = "SSIM between the edit of a protected image and the edit of the clean one"


class EditPSNR(EditSimilarity):
    name = "edit_psnr"
    label = "psnr"
    function = staticmethod(_psnr)
    description = "PSNR (dB) between the edit of a protected image and the edit of the clean one"


class EditVIFp(EditSimilarity):
    name = "edit_vifp"
    label = "vif_p"
    min_side = VIF_MIN_SIDE
    function = staticmethod(_vifp)
    description = "VIFp between the edit of a protected image and the edit of the clean one"


class EditFSIM(EditSimilarity):
    name = "edit_fsim"
    label = "fsim"
    function = staticmethod(_fsim)
    description = ("FSIM (colour) between the edit of a protected image and the edit of the clean "
                   "one")


EDIT_METRICS: tuple[type[EditSimilarity], ...] = (EditSSIM, EditPSNR, EditVIFp, EditFSIM)


def edit_similarity(
        clean_edits: torch.Tensor, protected_edits: torch.Tensor) -> dict[str, MetricResult]:
    """PhotoGuard Table 6: every edit similarity, per slot, of the protected edits to the clean
    edits."""
    return {cls.name: cls().compute(protected_edits, clean_edits) for cls in EDIT_METRICS}
