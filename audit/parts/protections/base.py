"""What a protection is, and the budget every protection is held to.

A protection turns clean images x into protected images x_p with ‖x_p − x‖∞ ≤ ε *after*
8-bit quantisation (what a user actually publishes). The toolkit checks that on every output
and never trusts it (README, "What one case does", step 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from audit.data.images import to_uint8
from audit.errors import BudgetExceeded, ProtectionError

if TYPE_CHECKING:
    from audit.config.tiers import TierSettings
    from audit.data.subjects import Subject
    from audit.diffusion import LatentDiffusionModel
    from audit.run.progress import Progress


@dataclass
class ProtectionContext:
    """Everything a protection may use: the surrogate model, device, seed, tier, progress."""

    model: LatentDiffusionModel | None  # None for a protection that does not use it
    device: torch.device
    seed: int
    tier: TierSettings
    progress: Progress
    #: The subject being protected (name, file names, images): protections that read
    #: already-protected files pair them with the clean ones by this.
    subject: Subject | None = None


def model_of(ctx: ProtectionContext, name: str) -> LatentDiffusionModel:
    """The audited model of a protection that ``uses_model`` (the stage always gives it then)."""
    if ctx.model is None:
        raise ProtectionError(f"protection '{name}' uses the model, but none was given to it: "
                              "declare uses_model = True on its class")
    return ctx.model


@dataclass
class ProtectionOutput:
    images: torch.Tensor  # uint8 N×3×H×W
    info: dict[str, Any] = field(default_factory=dict)  # e.g. objective values, for the report


class Protection(ABC):
    """A protection: a name, an ℓ∞ budget ε in [0,1] pixel units, and ``protect``."""

    name: str = "protection"
    #: True when the output depends on the model (cache keys then include its fingerprint).
    uses_model: bool = False
    #: True when the output depends on the seed: each replicate then crafts it anew.
    random: bool = True
    #: False for protections whose objective the toolkit cannot see (a folder of protected
    #: files): scenarios that re-craft through the objective are skipped for them.
    has_objective: bool = True
    #: Why there is none, where ``has_objective`` is False (the skip reason of an adaptive case).
    no_objective: str = ""
    #: True when one output serves every replicate (a folder of files): the planner then
    #: shares the protected run across replicates instead of crafting it anew.
    shared_across_replicates: bool = False
    #: True when the protection judges its own budget where it can (a folder: at the files'
    #: own resolution, before resizing); the engine then only measures ℓ∞ on what it returns.
    judges_own_budget: bool = False
    #: Part of the cache key: bump it when the code changes in a way the code fingerprint
    #: cannot see (a helper module it imports).
    version: int = 1

    def __init__(self, epsilon: float = 0.05) -> None:
        if not (0 <= epsilon <= 1) or math.isnan(epsilon):
            raise ValueError(f"{self.name}: epsilon must lie in [0, 1] ([0,1] pixel units), got "
                             f"{epsilon}")
        self.epsilon = float(epsilon)

    def params(self, tier: TierSettings | None = None) -> dict[str, Any]:
        """Every parameter that determines the output at this tier (cache key and report)."""
        return {"epsilon": self.epsilon}

    @abstractmethod
    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        """Protect an image batch (float N×3×H×W in [0,1]); return its 8-bit protected form."""


def budget_levels(epsilon: float) -> int:
    """The largest whole number of 8-bit levels within ε: floor(255·ε).

    ε = 0.05 (PID) allows 12.75 levels, so a published 8-bit image may differ by at most 12.
    Rounding to nearest alone could reach 13 levels (0.051 > 0.05), hence this projection.
    """
    return int(math.floor(255 * epsilon + 1e-6))


def quantize_within_budget(
        clean: torch.Tensor, protected: torch.Tensor, epsilon: float) -> torch.Tensor:
    """8-bit form of ``protected``, projected so that it differs from 8-bit ``clean`` by ≤ ε."""
    clean_u8 = to_uint8(clean).to(torch.int16)
    prot_u8 = to_uint8(protected).to(torch.int16)
    k = budget_levels(epsilon)
    return torch.clamp(prot_u8, clean_u8 - k, clean_u8 + k).clamp(0, 255).to(torch.uint8)


def linf_levels(clean: torch.Tensor, protected_u8: torch.Tensor) -> int:
    """Measured ℓ∞ distance in 8-bit levels between clean (float) and protected (uint8)."""
    diff = to_uint8(clean).to(torch.int16) - protected_u8.to(torch.int16)
    return int(diff.abs().max()) if diff.numel() else 0


def check_output(output: Any, images: torch.Tensor, name: str) -> torch.Tensor:
    """The images of a protection's ``protect`` result, checked against the interface before
    anything downstream (8-bit rounding, the budget, the cache) sees them.

    ``protect`` returns a ``ProtectionOutput`` whose ``images`` hold one image per input, of the
    input's channels and size: uint8 in 0…255, or float in [0, 1]. Non-finite values (NaN,
    ±inf) are refused with their count — rounded to 8 bits they would become real-looking
    pixels and a made-up ℓ∞."""
    interface = ("protect(images, ctx) must return "
                 "audit.parts.protections.ProtectionOutput(images=..., info={...}), images a uint8 "
                 "(0…255) or float ([0, 1]) tensor of the input's shape N×3×H×W")
    if not isinstance(output, ProtectionOutput) and not hasattr(output, "images"):
        what = (f"a bare {type(output).__name__}" if isinstance(output, torch.Tensor)
                else f"{type(output).__name__}")
        hint = (" (wrap it: return ProtectionOutput(images))" if isinstance(output, torch.Tensor)
                else "")
        raise ProtectionError(f"protection '{name}': protect returned {what}{hint}; {interface}.")
    out = output.images
    if not isinstance(out, torch.Tensor):
        raise ProtectionError(f"protection '{name}': the images protect returned are a "
                              f"{type(out).__name__}, not a tensor; {interface}.")
    if out.dtype != torch.uint8 and not out.is_floating_point():
        raise ProtectionError(f"protection '{name}': returned images of dtype {out.dtype}; "
                              f"{interface}.")
    if out.is_floating_point():
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            nan = int(torch.isnan(out).sum())
            raise ProtectionError(
                f"protection '{name}' returned {bad} non-finite value(s) ({nan} NaN, {bad - nan} "
                f"±inf) among {out.numel()} in its images of shape {tuple(out.shape)}; nothing was "
                "rounded, cached or judged. Fix the protection (a division by zero, a log of 0, "
                "an exploding step): its output must be finite.")
    check_shape(out, images, name)
    return out


def check_shape(protected: torch.Tensor, clean: torch.Tensor, name: str) -> None:
    """``ProtectionError`` naming what differs — the number of images, the channels, the size —
    when a protection's output does not match its input's N×C×H×W."""
    if protected.shape == clean.shape:
        return
    got, want = tuple(protected.shape), tuple(clean.shape)
    if len(got) != 4:
        what = f"a {len(got)}-dimensional tensor {got}; images are N×3×H×W"
    elif got[0] != want[0]:
        what = (f"{got[0]} image(s) for {want[0]} input image(s); return one protected image per "
                "input, in order")
    elif got[1] != want[1]:
        what = (f"{got[1]} channel(s) where the inputs have {want[1]} (RGB); keep the input's "
                "channels")
    else:
        what = (f"images of {got[2]}×{got[3]} px for inputs of {want[2]}×{want[3]} px; a "
                "protection must keep the image size")
    raise ProtectionError(f"protection '{name}' returned shape {got} for inputs of shape {want}: "
                          f"{what}.")


def check_budget(clean: torch.Tensor, protected_u8: torch.Tensor, epsilon: float, name: str, *,
                 source: str | None = None) -> float:
    """Return the measured ℓ∞ in [0,1] units; raise BudgetExceeded with the excess if over ε.

    Measured against the 8-bit form of the clean images, since that is what the protection
    received and what its user publishes. ``source`` says where ε came from (``--epsilon``,
    the tier, the protection's own declaration), for the message.
    """
    if protected_u8.dtype != torch.uint8:
        protected_u8 = to_uint8(protected_u8)
    check_shape(protected_u8, clean, name)
    levels = linf_levels(clean, protected_u8)
    measured = levels / 255
    if measured > epsilon + 1e-9:
        whose = (f"the budget ε = {epsilon:.4f} ({epsilon * 255:.2f}/255, from {source})" if source
                 else f"ε = {epsilon:.4f} ({epsilon * 255:.2f}/255)")
        raise BudgetExceeded(
            f"protection '{name}' exceeds its budget: measured ℓ∞ = {levels}/255 = {measured:.4f} "
            f"> {whose}, excess {measured - epsilon:.4f} ({(measured - epsilon) * 255:.2f}/255) "
            "after 8-bit quantisation. Fix the protection's projection step or declare the budget "
            "it really uses."
        )
    return measured
