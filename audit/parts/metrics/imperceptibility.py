"""How visible the protection itself is: clean vs protected images (PID Table 14; IMPRESS).

PSNR and SSIM from piq (data range 1), the measured ℓ∞ in 8-bit levels, and LPIPS (Zhang et
al., CVPR 2018). These describe the protection's cost, they are not verdict metrics: lower
PSNR/SSIM and higher LPIPS mean a more visible perturbation.

LPIPS: the ``lpips`` package (the authors' implementation, v0.1 linear heads, which ship inside
the package) on the VGG16 backbone — PID's footnote 6 takes LPIPS from piq, whose LPIPS is the
VGG16 variant, and IMPRESS uses LPIPS-VGG. The backbone is torchvision's ImageNet VGG16,
``vgg16-397923af.pth``, which torchvision downloads at run time: it is looked for as
``$PROTECTION_AUDIT_WEIGHTS/vgg16-397923af.pth`` and in ``$TORCH_HOME/hub/checkpoints/``;
missing → LPIPS is ``unavailable`` at once (the other three are still computed). Inputs in
[0, 1] are mapped to the [−1, 1] LPIPS expects (``normalize=True``); one value per image,
spatially averaged.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import piq
import torch

from audit.data.images import to_uint8
from audit.parts.metrics.base import Metric, MetricResult, package_version
from audit.parts.metrics.weights import (
    find_weights,
    hub_checkpoints,
    hub_file_missing,
    weights_label,
)

LPIPS_NET = "vgg"
LPIPS_VERSION = "0.1"
VGG_FILE = "vgg16-397923af.pth"
VGG_URL = f"https://download.pytorch.org/models/{VGG_FILE}"


def vgg_weights() -> Path | None:
    return find_weights(hub_checkpoints() / VGG_FILE, name=VGG_FILE)


def lpips_missing() -> str | None:
    """Why LPIPS cannot be computed (file checks only, well under a second), or None."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return "the lpips package is not installed (pip install lpips==0.1.4)"
    return hub_file_missing(f"LPIPS's VGG16 backbone ({VGG_FILE}, torchvision's ImageNet weights)",
                            VGG_FILE, VGG_URL)


def lpips_network(backbone: Path | None, net: str = LPIPS_NET) -> torch.nn.Module:
    """lpips's LPIPS with its bundled linear heads; the backbone's ImageNet weights read from
    the torchvision checkpoint ``backbone`` (None: random backbone, for the logic tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation, inside lpips
        import lpips

        model = lpips.LPIPS(net=net, version=LPIPS_VERSION, pretrained=True, pnet_rand=True,
                            verbose=False)
    if backbone is not None:
        state = torch.load(backbone, map_location="cpu", weights_only=True)
        used: set[str] = set()
        # slice1…5 hold torchvision's features[i] under the name "i"
        for slice_ in model.net.children():
            for index, layer in slice_.named_children():
                prefix = f"features.{index}."
                layer.load_state_dict({k[len(prefix):]: v for k,
                                       v in state.items() if k.startswith(prefix)})
                used.update(k for k in state if k.startswith(prefix))
        unused = [k for k in state if k.startswith("features.") and k not in used]
        if unused:
            raise RuntimeError(f"{backbone}: backbone weights LPIPS does not use: {unused[:4]}; is "
                               f"it torchvision's {net}?")
    return model.eval()


@functools.cache
def _lpips() -> torch.nn.Module:
    path = vgg_weights()
    if path is None:  # downloads allowed: torchvision's own download into torch hub's cache
        import torchvision

        path = hub_checkpoints() / VGG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
                                       str(path), progress=False)
    return lpips_network(path)


def lpips_result(
        clean: torch.Tensor, protected: torch.Tensor, network: Any = None,
        label: str = "") -> MetricResult:
    """LPIPS(clean_i, protected_i) per image; ``network`` replaces the real one (logic tests)."""
    if network is None:
        why = lpips_missing()
        if why:
            return MetricResult("lpips", "up", [], f"lpips {package_version('lpips')} {LPIPS_NET}",
                                unavailable=why)
        network, label = _lpips(), (f"lpips {package_version('lpips')} v{LPIPS_VERSION} "
                                    f"{LPIPS_NET} [{weights_label(vgg_weights(), VGG_FILE)}]")
    with torch.no_grad():
        values = network(protected.float(), clean.float(), normalize=True).flatten()
    return MetricResult("lpips", "up", [float(v) for v in values],
                        f"{label or 'stand-in network'}, inputs [0, 1] → [−1, 1]")


def imperceptibility(
        clean: torch.Tensor, protected: torch.Tensor,
        lpips_net: Any = None) -> dict[str, MetricResult]:
    clean, protected = clean.float().cpu().clamp(0, 1), protected.float().cpu().clamp(0, 1)
    version = getattr(piq, "__version__", "?")
    psnr = piq.psnr(protected, clean, data_range=1.0, reduction="none")
    kernel = min(11, clean.shape[-1] - (1 - clean.shape[-1] % 2))
    ssim = piq.ssim(protected, clean, data_range=1.0, reduction="none", kernel_size=kernel)
    linf = (to_uint8(protected).int() - to_uint8(clean).int()).abs().flatten(1).amax(1)
    return {
        "psnr": MetricResult("psnr", "down", [float(v) for v in psnr], f"piq {version} psnr, data "
                "range 1"),
        "ssim": MetricResult("ssim", "down", [float(v) for v in ssim], f"piq {version} ssim, "
                f"kernel {kernel}, data range 1"),
        "linf_255": MetricResult("linf_255", "down", [float(v) for v in linf], "max |protected − "
                "clean| in 8-bit levels"),
        "lpips": lpips_result(clean, protected, lpips_net),
    }


class ProtectionLpips(Metric):
    """LPIPS of protected images against their clean originals (slot by slot) as a registered
    metric; the engine reports it with every protection run through ``imperceptibility``."""

    name = "lpips"
    # as in ``imperceptibility``: the way the value means a more visible perturbation
    direction = "up"
    description = ("LPIPS (VGG) between each protected image and its clean original (the "
                   "protection's visibility)")

    def __init__(self, network: Any = None, label: str = "") -> None:
        self._network, self._label = network, label

    def implementation_name(self) -> str:
        if self._network is not None:
            return f"stand-in network: {self._label}"
        return (f"lpips {package_version('lpips')} v{LPIPS_VERSION} {LPIPS_NET} "
                f"[{weights_label(vgg_weights(), VGG_FILE)}]")

    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        if generated.shape != reference.shape:
            raise ValueError("lpips compares each protected image with its clean original, slot "
                             f"by slot: got {tuple(generated.shape)} and {tuple(reference.shape)}")
        return lpips_result(reference.float().cpu().clamp(0, 1),
                            generated.float().cpu().clamp(0, 1), self._network, self._label)
