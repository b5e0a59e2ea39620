"""Classical denoisers an exploiter runs on protected images (PID §6.5 Table 7 "Denoising").

PID's footnote 5 names Aydin's "Gaussian image denoiser": a Gaussian filter whose σ Aydin
calibrates on the image itself by J-invariance (Noise2Self, Batson & Royer, ICML 2019),
σ ∈ [0, 2] px. ``denoise_gaussian`` is that denoiser built from scikit-image: the same
self-supervised calibration (``skimage.restoration.calibrate_denoiser``) over the same σ
range, then the plain Gaussian filter at the calibrated σ (Aydin also applies the plain filter
after calibrating). ``denoise_wavelet`` is scikit-image's BayesShrink wavelet denoiser (Chang,
Yu & Vetterli, IEEE TIP 2000; PyWavelets) and ``denoise_nl_means`` its non-local means
(Buades et al., CVPR 2005), both with the noise level estimated from the image. All run per
image on the CPU in float64 and are deterministic; none is differentiable.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from audit.parts.registry import Params


def _per_image(images: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` (H×W×3 float64 → H×W×3) to each image, back to an N×3×H×W float32 batch."""
    out = []
    for image in images.detach().cpu().double():
        array = image.permute(1, 2, 0).numpy()
        out.append(torch.from_numpy(np.ascontiguousarray(fn(array))).permute(2, 0, 1))
    return torch.stack(out).float().clamp(0, 1).to(images.device)


class GaussianDenoiseParams(Params):
    """σ grid searched by the J-invariant calibration: ``steps`` values evenly spaced in
    [0, ``max_sigma_px``] (Aydin's Gaussian denoiser: σ ∈ [0, 2])."""

    max_sigma_px: float = Field(2.0, gt=0, le=20, description="largest σ tried, pixels")
    steps: int = Field(21, ge=2, le=200, description="number of σ values tried")


def calibrated_sigma(image: np.ndarray, params: GaussianDenoiseParams) -> float:
    """The σ (pixels) that minimises the J-invariant self-supervised loss of a Gaussian filter
    on ``image`` (H×W×3), as ``skimage.restoration.calibrate_denoiser`` computes it."""
    from skimage.filters import gaussian
    from skimage.restoration import calibrate_denoiser

    grid = np.linspace(0.0, params.max_sigma_px, params.steps)
    _, (tested, losses) = calibrate_denoiser(
        image,
        gaussian,
        denoise_parameters={"sigma": list(grid), "channel_axis": [-1], "preserve_range": [True]},
        extra_output=True,
    )
    return float(tested[int(np.argmin(losses))]["sigma"])


def denoise_gaussian(images: torch.Tensor, params: GaussianDenoiseParams,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image: σ* by J-invariant calibration, then ``skimage.filters.gaussian`` at σ*
    (reflect border, truncated at 4σ); σ* = 0 leaves the image as it is."""
    from skimage.filters import gaussian

    def one(array: np.ndarray) -> np.ndarray:
        sigma = calibrated_sigma(array, params)
        return array if sigma == 0 else gaussian(array, sigma=sigma, channel_axis=-1,
                                                 preserve_range=True)

    return _per_image(images, one)


class NlMeansParams(Params):
    """scikit-image ``denoise_nl_means`` (fast mode). ``h`` = ``h_factor`` × σ̂ where σ̂ is
    ``estimate_sigma``'s wavelet estimate of the noise std (scikit-image's documented recipe:
    h = 0.8 σ̂, 5×5 patches searched within 6 px)."""

    h_factor: float = Field(0.8, gt=0, le=10, description="filter strength h in units of the "
                                                          "estimated noise σ")
    patch_size: int = Field(5, ge=3, le=15)
    patch_distance: int = Field(6, ge=1, le=30)


def denoise_nl_means(images: torch.Tensor, params: NlMeansParams,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Non-local means per image (RGB patches, scikit-image), its noise σ estimated per image."""
    from skimage.restoration import denoise_nl_means as nl_means
    from skimage.restoration import estimate_sigma

    def one(array: np.ndarray) -> np.ndarray:
        sigma = float(np.mean(estimate_sigma(array, channel_axis=-1)))
        if sigma == 0:
            return array
        return nl_means(
            array, h=params.h_factor * sigma, sigma=sigma, fast_mode=True,
            patch_size=params.patch_size, patch_distance=params.patch_distance, channel_axis=-1,
        )

    return _per_image(images, one)


class WaveletDenoiseParams(Params):
    """scikit-image ``denoise_wavelet``: BayesShrink soft thresholding of a ``wavelet``
    decomposition (``levels`` None: scikit-image's default depth), in YCbCr, the noise σ
    estimated from the finest sub-band and ``rescale_sigma`` on (scikit-image's documented
    colour recipe)."""

    wavelet: str = Field("db1", pattern=r"^(haar|db\d{1,2}|sym\d{1,2}|coif\d)$")
    levels: int | None = Field(None, ge=1, le=8)


def denoise_wavelet(images: torch.Tensor, params: WaveletDenoiseParams,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """BayesShrink wavelet denoising per image (scikit-image with PyWavelets)."""
    from skimage.restoration import denoise_wavelet as wavelet

    def one(array: np.ndarray) -> np.ndarray:
        return wavelet(
            array, wavelet=params.wavelet, wavelet_levels=params.levels, method="BayesShrink",
            mode="soft",
            convert2ycbcr=True, rescale_sigma=True, channel_axis=-1,
        )

    return _per_image(images, one)
