"""Image batches and their 8-bit form.

Convention used everywhere in the toolkit: an *image batch* is a float32 tensor of shape
N×3×H×W with values in [0, 1] (the [0,1] pixel units in which PID states ε = 0.05; PhotoGuard's and
Anti-DreamBooth's
budgets in 8-bit levels are k/255 here);
its *8-bit form* is a uint8 tensor of the same shape. Protections, transforms and purifiers
exchange image batches; the cache and the report store the 8-bit form.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Round a [0,1] float batch to its 8-bit form (round half to even, as torch.round)."""
    return torch.round(images.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """The float [0,1] batch of an 8-bit batch."""
    return images.float() / 255.0


def to_pil(image: torch.Tensor) -> Image.Image:
    """One 3×H×W [0,1] float (or uint8) image as an RGB PIL image."""
    if image.dtype != torch.uint8:
        image = to_uint8(image.unsqueeze(0))[0]
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def from_pil(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a 3×H×W float tensor in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def png_bytes(image: torch.Tensor) -> bytes:
    """Lossless PNG encoding of one image (used by the cache and the report)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()
