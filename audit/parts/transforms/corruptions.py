"""Image transforms an exploiter applies before fine-tuning (the corruption scenarios).

Each transform maps an image batch (N×3×H×W, [0,1]) to an image batch of the same shape and
range, with a seeded generator for the random ones (the same generator state gives the same
output). Parameters are in the units the papers use, named explicitly (σ in pixels of the
images as audited, quality 1-100, noise std *or* variance in [0,1] units, crop scale as an area
fraction): DiffShortcut's blur radius 5 and MetaCloak's σ ∈ [0.1, 2] were set at 512 px, so at
another resolution scale σ with the image.

Where a torch-differentiable form exists it is the function's ``differentiable`` attribute
(``TRANSFORMS.get(name).load().differentiable``, same signature), for protectors that craft
through the transform (expectation over transformations); those parts are registered with
``differentiable=True``. For most transforms here it is the transform itself (kornia/torch
ops); for JPEG it is kornia's differentiable codec, which approximates libjpeg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field, model_serializer, model_validator

from audit.data.images import from_pil, to_pil, to_uint8
from audit.parts.registry import Params


class TransformParams(Params):
    """Base of every transform's parameters: unknown keys are errors (typos are caught)."""


# -- JPEG --------------------------------------------------------------------------------------


class JpegParams(TransformParams):
    """JPEG re-encoding. DiffShortcut App. C.1 uses q=75 (after MetaCloak); IMPRESS §5.1 q=15."""

    quality: int = Field(75, ge=1, le=100, description="libjpeg quality (Pillow), 1-100")


def jpeg_differentiable(images: torch.Tensor, params: JpegParams,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """kornia's differentiable JPEG (``kornia.enhance.jpeg_codec_differentiable``: the IJG
    tables scaled by quality, 4:2:0 chroma, rounding replaced by a differentiable surrogate).
    Close to, not equal to, libjpeg's output (tests bound the difference)."""
    import kornia

    quality = torch.full((images.shape[0],), float(params.quality), device=images.device,
                         dtype=images.dtype)
    return kornia.enhance.jpeg_codec_differentiable(images, quality).clamp(0, 1)


def jpeg(images: torch.Tensor, params: JpegParams, generator: torch.Generator) -> torch.Tensor:
    """Re-encode each image as a baseline JPEG with Pillow (libjpeg) at the given quality and
    decode it: Pillow's defaults, i.e. the IJG quantisation tables scaled by quality and 4:2:0
    chroma subsampling, what saving a downloaded image as JPEG does."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        to_pil(image).save(buffer, format="JPEG", quality=params.quality)
        buffer.seek(0)
        out.append(from_pil(Image.open(buffer)))
    return torch.stack(out).to(images.device)


jpeg.differentiable = jpeg_differentiable  # type: ignore[attr-defined]


# -- Gaussian blur -----------------------------------------------------------------------------


def _odd_kernel(sigma: float, kernel_size: int | None, height: int, width: int) -> int:
    """The kernel size used: the given one, else 2·ceil(4σ)+1 (scipy's and scikit-image's
    truncation at 4σ, so the kernel's transfer function is the Gaussian's to < 1e-3); shrunk to
    the largest odd size whose reflect padding fits the image."""
    size = kernel_size if kernel_size is not None else 2 * math.ceil(4 * sigma) + 1
    limit = 2 * (min(height, width) - 1) + 1
    return max(1, min(size, limit))


class GaussianBlurParams(TransformParams):
    """Gaussian smoothing with σ in pixels of the images as audited.

    DiffShortcut App. C.1 (code: ``PIL.ImageFilter.GaussianBlur(radius=5)``; Pillow's radius
    *is* σ) blurs 512-px images with σ = 5 px. The paper's text says "kernel size 5"; its code
    passes 5 as Pillow's radius, which is a standard deviation.
    """

    sigma_px: float = Field(..., gt=0, le=50, description="standard deviation in pixels")
    kernel_size: int | None = Field(
        None, ge=1, le=401, description="odd kernel size in pixels; default 2·ceil(4σ)+1"
    )

    @model_validator(mode="after")
    def _odd(self) -> GaussianBlurParams:
        if self.kernel_size is not None and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


def _blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int | None) -> torch.Tensor:
    """kornia.filters.gaussian_blur2d with one σ per image (reflect border, sampled and
    normalised Gaussian kernel)."""
    import kornia

    h, w = images.shape[-2:]
    k = _odd_kernel(float(sigmas.max()), kernel_size, h, w)
    if k == 1:
        return images.clamp(0, 1)
    sigma = sigmas.to(images.device, images.dtype).view(-1, 1).expand(-1, 2)
    return kornia.filters.gaussian_blur2d(images, (k, k), sigma, border_type="reflect").clamp(0, 1)


def gaussian_blur(images: torch.Tensor, params: GaussianBlurParams,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur of σ = ``sigma_px`` pixels (kornia; differentiable). The Gaussian's
    transfer function is exp(−2π²σ²f²) at f cycles per pixel."""
    sigmas = torch.full((images.shape[0],), params.sigma_px, dtype=torch.float64)
    return _blur(images, sigmas, params.kernel_size)


gaussian_blur.differentiable = gaussian_blur  # type: ignore[attr-defined]


class RandomGaussianBlurParams(TransformParams):
    """Gaussian blur with σ drawn uniformly per image from ``sigma_px`` = [min, max] and a fixed
    kernel, torchvision's ``GaussianBlur(kernel_size, sigma=(min, max))`` semantics. MetaCloak's
    transformation set (its released code's EoT over blur): kernel 7, σ ∈ [0.1, 2] px at 512 px."""

    kernel_size: int = Field(7, ge=3, le=401, description="odd kernel size in pixels")
    sigma_px: tuple[float, float] = Field((0.1, 2.0), description="[min, max] σ in pixels")

    @model_validator(mode="after")
    def _check(self) -> RandomGaussianBlurParams:
        lo, hi = self.sigma_px
        if not 0 < lo <= hi <= 50:
            raise ValueError("sigma_px must be [min, max] with 0 < min ≤ max ≤ 50, got "
                             f"{list(self.sigma_px)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


def random_gaussian_blur(
    images: torch.Tensor, params: RandomGaussianBlurParams, generator: torch.Generator
) -> torch.Tensor:
    """Each image blurred with its own σ ~ U[min, max] (drawn from ``generator``), kernel
    ``kernel_size`` (kornia; differentiable for a given generator state)."""
    lo, hi = params.sigma_px
    sigmas = lo + (hi - lo) * torch.rand(images.shape[0], generator=generator, dtype=torch.float64)
    return _blur(images, sigmas, params.kernel_size)


random_gaussian_blur.differentiable = random_gaussian_blur  # type: ignore[attr-defined]


# -- additive noise ----------------------------------------------------------------------------


class GaussianNoiseParams(TransformParams):
    """Additive Gaussian noise N(0, std²) in [0,1] units, then clamped. Give exactly one of
    ``std`` or ``variance`` (IMPRESS §5.1 states a *variance* of 0.15, i.e. std ≈ 0.387);
    ``std`` is always recorded, resolved from ``variance`` when that is what was given."""

    std: float | None = Field(None, gt=0, le=1, description="standard deviation, [0,1] units")
    variance: float | None = Field(None, gt=0, le=1, description="variance = std², [0,1] units")

    @model_validator(mode="before")
    @classmethod
    def _resolve_std(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        std, variance = data.get("std"), data.get("variance")
        if std is None and variance is None:
            raise ValueError("give exactly one of std or variance (e.g. variance: 0.15 as IMPRESS "
                             "§5.1)")
        if variance is None or not isinstance(variance, int | float):
            return data
        if std is not None:
            # A recorded (resolved) set of parameters: both present, and they must agree.
            if not isinstance(std, int | float) or not math.isclose(std**2, variance, rel_tol=1e-9):
                raise ValueError(
                    f"give exactly one of std or variance: std {std} and variance {variance} "
                    "disagree (std² ≠ variance)"
                )
            return data
        return {**data, "std": math.sqrt(variance)} if variance > 0 else data

    @model_serializer(mode="wrap")
    def _drop_unset_variance(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("variance") is None:
            data.pop("variance", None)
        return data


def gaussian_noise(
        images: torch.Tensor, params: GaussianNoiseParams,
        generator: torch.Generator) -> torch.Tensor:
    """x + std·ε, ε ~ N(0, I) drawn from ``generator``, clamped to [0, 1]."""
    assert params.std is not None  # resolved by the model
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + params.std * noise).clamp(0, 1)


gaussian_noise.differentiable = gaussian_noise  # type: ignore[attr-defined]


class UniformNoiseParams(TransformParams):
    """Additive uniform noise in [−amplitude, amplitude] ([0,1] units), then clamped: PID §6.5's
    "smoothing with uniform noise" (the paper states no amplitude)."""

    amplitude: float = Field(..., gt=0, le=1)


def uniform_noise(
        images: torch.Tensor, params: UniformNoiseParams,
        generator: torch.Generator) -> torch.Tensor:
    """x + u, u ~ U[−amplitude, amplitude] per value, drawn from ``generator``, clamped."""
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + params.amplitude * (2 * noise - 1)).clamp(0, 1)


uniform_noise.differentiable = uniform_noise  # type: ignore[attr-defined]


# -- resizing and cropping ---------------------------------------------------------------------


class ResizeParams(TransformParams):
    """Down-then-up resizing (IMPRESS §5.1 baseline: 512 → 256 → 512, i.e. factor 0.5)."""

    factor: float = Field(0.5, gt=0.05, lt=1)


def resize_down_up(images: torch.Tensor, params: ResizeParams,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Bicubic antialiased downscale by ``factor`` then bicubic back to the original size
    (IMPRESS does not name the filter; bicubic is Pillow's default for ``resize``)."""
    h, w = images.shape[-2:]
    small = (max(1, round(h * params.factor)), max(1, round(w * params.factor)))
    down = F.interpolate(images, size=small, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


resize_down_up.differentiable = resize_down_up  # type: ignore[attr-defined]


class RandomResizedCropParams(TransformParams):
    """torchvision's ``RandomResizedCrop`` semantics: a crop of area fraction ``scale`` =
    [min, max] of the image and aspect ratio (w/h) log-uniform in ``ratio`` = [min, max],
    resized back to the image size (bilinear, antialiased). Defaults are torchvision's
    (0.08-1, 3/4-4/3); PID §6.5 "randomly resizing and cropping" states no range."""

    scale: tuple[float, float] = Field((0.08, 1.0), description="[min, max] area fraction of the "
            "crop")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="[min, max] aspect ratio w/h of "
            "the crop")

    @model_validator(mode="after")
    def _check(self) -> RandomResizedCropParams:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("scale must be [min, max] area fractions with 0 < min ≤ max ≤ 1, got "
                             f"{list(self.scale)}")
        rlo, rhi = self.ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"ratio must be [min, max] with 0 < min ≤ max, got {list(self.ratio)}")
        return self


def crop_box(
        image: torch.Tensor, params: RandomResizedCropParams,
        generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of one crop, drawn by torchvision's own
    ``RandomResizedCrop.get_params`` (10 tries, then a central crop) under a torch seed taken
    from ``generator``, so that the draw is torchvision's and reproducible."""
    from torchvision.transforms import RandomResizedCrop

    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RandomResizedCrop.get_params(image, list(params.scale), list(params.ratio))


def random_resized_crop(
    images: torch.Tensor, params: RandomResizedCropParams, generator: torch.Generator
) -> torch.Tensor:
    """Each image cropped by its own ``crop_box`` and resized back with torchvision's
    ``resized_crop`` (bilinear, antialiased, as ``RandomResizedCrop``'s defaults);
    differentiable for a given generator state."""
    from torchvision.transforms.v2.functional import resized_crop

    h, w = images.shape[-2:]
    out = [resized_crop(image, *crop_box(image, params, generator), size=[h, w], antialias=True)
           for image in images]
    return torch.stack(out).clamp(0, 1)


random_resized_crop.differentiable = random_resized_crop  # type: ignore[attr-defined]


# -- the noise-floor control -------------------------------------------------------------------


class LevelJitterParams(TransformParams):
    """Each pixel moved by a whole number of 8-bit levels drawn uniformly from [−levels, levels]."""

    levels: int = Field(1, ge=1, le=8)


def level_jitter(
        images: torch.Tensor, params: LevelJitterParams,
        generator: torch.Generator) -> torch.Tensor:
    """An imperceptible change of the images with no protective intent: the exploit's noise floor.

    How far the exploit's outcome moves under it says how sensitive the exploit is to any
    change of its training data (the noise-floor control; at ±1/255 no protection is intended).
    """
    k = params.levels
    shift = torch.randint(-k, k + 1, images.shape, generator=generator).to(torch.int16)
    return ((to_uint8(images).to(torch.int16) + shift).clamp(0, 255).to(torch.float32)
            / 255).to(images.device)


TransformFn = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]
