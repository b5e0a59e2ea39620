"""The photographs the embedded tiny model is trained on: images that ship inside Python packages.

Every source is named with the package that ships it, its licence and the captions the
text-conditioned UNet is trained with. The audit's default subject (scikit-image's
``astronaut``) is deliberately *not* a training source: the VAE, the UNet and the text encoder
have never seen it, so what DreamBooth learns of it, it learns from the 4 subject images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Source:
    name: str
    package: str
    licence: str
    captions: tuple[str, ...]

    def load(self) -> torch.Tensor:
        """(3, H, W) float in [0, 1]; grey images repeated to RGB, longer side at most 640 px."""
        array = _load_array(self)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        image = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255.0
        longer = max(image.shape[-2:])
        if longer > 640:
            size = [round(s * 640 / longer) for s in image.shape[-2:]]
            image = torch.nn.functional.interpolate(image[None], size=size, mode="area")[0]
        return image.clamp(0, 1)


def _load_array(source: Source) -> np.ndarray:
    if source.package == "scikit-image":
        from skimage import data

        loader = {"motorcycle": lambda: data.stereo_motorcycle()[0]}.get(source.name)
        return loader() if loader else getattr(data, source.name)()
    if source.package == "scikit-learn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{source.name}.jpg")
    if source.package == "matplotlib":
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / f"{source.name}.jpg"
        return np.asarray(Image.open(path).convert("RGB"))
    raise ValueError(f"unknown package {source.package!r}")


_CC0 = "CC0 1.0"
_PD = "public domain"
_CCBY2 = "CC BY 2.0"

SOURCES: tuple[Source, ...] = (
    Source("grace_hopper", "matplotlib", _PD + " (U.S. Navy photograph)",
           ("a photo of person", "a photo of a woman", "a portrait of a woman in uniform")),
    Source("camera", "scikit-image", _CC0 + " (Lav Varshney)",
           ("a photo of person", "a photo of a man", "a black and white photo of a man with a camera")),
    Source("chelsea", "scikit-image", _CC0 + " (Stefan van der Walt)", ("a photo of a cat", "a photo of chelsea")),
    Source("coffee", "scikit-image", _CC0 + " (Rachel Michetti)", ("a photo of coffee", "a photo of a cup")),
    Source("rocket", "scikit-image", _PD + " (SpaceX)", ("a photo of a rocket", "a photo of a launch pad")),
    Source("hubble_deep_field", "scikit-image", _PD + " (NASA)", ("a photo of galaxies", "a photo of space")),
    Source("immunohistochemistry", "scikit-image", _PD, ("a microscope photo of tissue",)),
    Source("retina", "scikit-image", _CC0 + " (Mikael Häggström)", ("a photo of a retina",)),
    Source("coins", "scikit-image", "no known copyright restrictions (Brooklyn Museum)",
           ("a black and white photo of coins",)),
    Source("brick", "scikit-image", _CC0 + " (CC0Textures)", ("a photo of a brick wall",)),
    Source("grass", "scikit-image", _CC0, ("a black and white photo of grass",)),
    Source("gravel", "scikit-image", _CC0 + " (CC0Textures)", ("a black and white photo of gravel",)),
    Source("china", "scikit-learn", _CCBY2 + " (danielbuechele, Flickr)", ("a photo of a temple", "a photo of a building")),
    Source("flower", "scikit-learn", _CCBY2 + " (vultilion, Flickr)", ("a photo of a flower", "a photo of flowers")),
)

HELD_OUT_FRACTION = 0.15  # the right-most 15 % of every source's columns: evaluation crops only
