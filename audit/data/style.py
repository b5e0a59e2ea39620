"""The bundled style subject, **stained-glass**: one synthetic "artist's" style applied to four
scikit-image photographs (cat, coffee cup, rocket, astronaut; public domain or CC0 per
scikit-image's data README).

No painting with a free licence ships inside an installed package, and a style subject needs a
few works that share a style but not a motif (Glaze, IMPRESS §5.2: works of one artist). So the
style is made here, deterministically: each photograph is centre-cropped, resized to 256 px,
flattened into ~120 SLIC superpixels (Achanta et al. 2012; ``skimage.segmentation.slic``,
compactness 12) filled with their mean colour, saturated ×1.6 in HSV, and outlined in dark "lead"
lines along the superpixel borders (thick boundaries, Gaussian σ 0.8 px, 85 % darkening). Flat
cells and dark outlines are a texture the exploit can learn and a style metric can see,
whatever the motif.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

STYLE_SUBJECT = "stained-glass"
PHOTOGRAPHS = ("chelsea", "coffee", "rocket", "astronaut")
WORK_SIDE = 256
SEGMENTS = 120
COMPACTNESS = 12
SATURATION = 1.6
LEAD_SIGMA = 0.8
LEAD_DARKENING = 0.85


def stained_glass(image: np.ndarray) -> np.ndarray:
    """One photograph (H×W×3 uint8) in the stained-glass style, WORK_SIDE² uint8."""
    from skimage import color, filters, segmentation, transform

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = transform.resize(image[top:top + side, left:left + side], (WORK_SIDE, WORK_SIDE),
                              anti_aliasing=True)
    cells = segmentation.slic(square, n_segments=SEGMENTS, compactness=COMPACTNESS, start_label=1)
    flat = color.label2rgb(cells, square, kind="avg", bg_label=0)
    hsv = color.rgb2hsv(flat)
    hsv[..., 1] = np.clip(hsv[..., 1] * SATURATION, 0, 1)
    flat = color.hsv2rgb(hsv)
    lead = filters.gaussian(segmentation.find_boundaries(cells, mode="thick").astype(float),
                            LEAD_SIGMA)
    out = flat * (1 - LEAD_DARKENING * lead[..., None])
    return np.asarray((out * 255).round().clip(0, 255), dtype=np.uint8)


def style_works(resolution: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The four works at ``resolution``² (N×3×R×R float in [0, 1]) and their file names."""
    from skimage import data as skdata

    from audit.data.images import from_pil

    images, files = [], []
    for i, name in enumerate(PHOTOGRAPHS):
        work = Image.fromarray(stained_glass(getattr(skdata, name)()))
        images.append(from_pil(work.resize((resolution, resolution), Image.Resampling.LANCZOS)))
        files.append(f"stained-glass-{i}-{name}.png")
    return torch.stack(images), tuple(files)
