"""Image transforms an exploiter applies before fine-tuning (the corruption scenarios).

Each transform maps an image batch (N×3×H×W, [0,1]) to an image batch of the same shape and
range, with a seeded generator for the random ones. Parameters are in the units the papers
use, named explicitly (σ in pixels, quality 1-100, ...), see REFERENCE.md "Purifications and
transforms".
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from audit.images import from_pil, to_pil, to_uint8
from audit.registry import Params


class TransformParams(Params):
    """Base of every transform's parameters: unknown keys are errors (typos are caught)."""


class JpegParams(TransformParams):
    """JPEG re-encoding. DiffShortcut App. C.1 uses q=75; IMPRESS §5.1 uses q=15."""

    quality: int = Field(75, ge=1, le=100, description="libjpeg quality (PIL), 1-100")


class GaussianBlurParams(TransformParams):
    """Gaussian smoothing with σ in pixels (DiffShortcut: PIL radius 5 = σ 5 px at 512 px)."""

    sigma_px: float = Field(..., gt=0, le=50, description="standard deviation in pixels")


class GaussianNoiseParams(TransformParams):
    """Additive Gaussian noise in [0,1] units, then clamped (IMPRESS baseline: variance 0.15)."""

    std: float = Field(..., gt=0, le=1)


class UniformNoiseParams(TransformParams):
    """Additive uniform noise in [-amplitude, amplitude] ([0,1] units), then clamped (PID §6.5)."""

    amplitude: float = Field(..., gt=0, le=1)


class ResizeParams(TransformParams):
    """Down-then-up resizing (IMPRESS baseline: 512 -> 256 -> 512, i.e. factor 0.5)."""

    factor: float = Field(0.5, gt=0.05, lt=1)


class RandomResizedCropParams(TransformParams):
    """Random crop of a fraction of the area, resized back (PID §6.5 'randomly resizing and cropping')."""

    min_scale: float = Field(0.6, gt=0.05, le=1)
    max_scale: float = Field(0.9, gt=0.05, le=1)


def jpeg(images: torch.Tensor, params: JpegParams, generator: torch.Generator) -> torch.Tensor:
    """Re-encode each image as a baseline JPEG with PIL/libjpeg at the given quality."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        to_pil(image).save(buffer, format="JPEG", quality=params.quality)
        buffer.seek(0)
        out.append(from_pil(Image.open(buffer)))
    return torch.stack(out).to(images.device)


def gaussian_blur(images: torch.Tensor, params: GaussianBlurParams, generator: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur, kernel radius ceil(3σ), reflect padding."""
    sigma = params.sigma_px
    radius = max(1, int(torch.ceil(torch.tensor(3 * sigma)).item()))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(horizontal, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c).clamp(0, 1)


def gaussian_noise(images: torch.Tensor, params: GaussianNoiseParams, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + params.std * noise).clamp(0, 1)


def uniform_noise(images: torch.Tensor, params: UniformNoiseParams, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (images + params.amplitude * (2 * noise - 1)).clamp(0, 1)


def resize_down_up(images: torch.Tensor, params: ResizeParams, generator: torch.Generator) -> torch.Tensor:
    """Bicubic antialiased downscale by ``factor`` then back to the original size."""
    h, w = images.shape[-2:]
    small = (max(1, round(h * params.factor)), max(1, round(w * params.factor)))
    down = F.interpolate(images, size=small, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(down, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def random_resized_crop(
    images: torch.Tensor, params: RandomResizedCropParams, generator: torch.Generator
) -> torch.Tensor:
    """Crop a random square of area fraction in [min_scale, max_scale], resize back (bicubic)."""
    if params.min_scale > params.max_scale:
        raise ValueError("random_resized_crop: min_scale must not exceed max_scale")
    h, w = images.shape[-2:]
    out = []
    for image in images:
        scale = params.min_scale + (params.max_scale - params.min_scale) * torch.rand(1, generator=generator).item()
        ch, cw = max(1, round(h * scale**0.5)), max(1, round(w * scale**0.5))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=generator).item())
        left = int(torch.randint(0, w - cw + 1, (1,), generator=generator).item())
        crop = image[:, top : top + ch, left : left + cw].unsqueeze(0)
        out.append(F.interpolate(crop, size=(h, w), mode="bicubic", align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


class LevelJitterParams(TransformParams):
    """Each pixel moved by a whole number of 8-bit levels drawn uniformly from [−levels, levels]."""

    levels: int = Field(1, ge=1, le=8)


def level_jitter(images: torch.Tensor, params: LevelJitterParams, generator: torch.Generator) -> torch.Tensor:
    """An imperceptible change of the images with no protective intent: the exploit's noise floor.

    How far the exploit's outcome moves under it says how sensitive the exploit is to any
    change of its training data (the noise-floor control; at ±1/255 no protection is intended).
    """
    k = params.levels
    shift = torch.randint(-k, k + 1, images.shape, generator=generator).to(torch.int16)
    return ((to_uint8(images).to(torch.int16) + shift).clamp(0, 255).to(torch.float32) / 255).to(images.device)


TransformFn = Callable[[torch.Tensor, Any, torch.Generator], torch.Tensor]
