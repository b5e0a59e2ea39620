"""How visible the protection itself is: clean vs protected images (PID Table 14).

PSNR and SSIM from piq (data range 1), and the measured ℓ∞ in 8-bit levels. Direction "down":
lower PSNR/SSIM mean a more visible perturbation (these describe the protection's cost, they
are not verdict metrics).
"""

from __future__ import annotations

import piq
import torch

from audit.images import to_uint8
from audit.metrics.base import MetricResult


def imperceptibility(clean: torch.Tensor, protected: torch.Tensor) -> dict[str, MetricResult]:
    clean, protected = clean.float().cpu().clamp(0, 1), protected.float().cpu().clamp(0, 1)
    version = getattr(piq, "__version__", "?")
    psnr = piq.psnr(protected, clean, data_range=1.0, reduction="none")
    kernel = min(11, clean.shape[-1] - (1 - clean.shape[-1] % 2))
    ssim = piq.ssim(protected, clean, data_range=1.0, reduction="none", kernel_size=kernel)
    linf = (to_uint8(protected).int() - to_uint8(clean).int()).abs().flatten(1).amax(1)
    return {
        "psnr": MetricResult("psnr", "down", [float(v) for v in psnr], f"piq {version} psnr, data range 1"),
        "ssim": MetricResult("ssim", "down", [float(v) for v in ssim], f"piq {version} ssim, kernel {kernel}, data range 1"),
        "linf_255": MetricResult("linf_255", "down", [float(v) for v in linf], "max |protected − clean| in 8-bit levels"),
    }
