"""What a protection is, and the budget every protection is held to.

A protection turns clean images x into protected images x_p with ‖x_p − x‖∞ ≤ ε *after*
8-bit quantisation (what a user actually publishes). The toolkit checks that on every output
and never trusts it (DESIGN.md "Flow of one case", step 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from audit.errors import BudgetExceeded
from audit.images import to_uint8

if TYPE_CHECKING:
    from audit.data import Subject
    from audit.models import LatentDiffusionModel
    from audit.progress import Progress
    from audit.tiers import TierSettings


@dataclass
class ProtectionContext:
    """Everything a protection may use: the surrogate model, device, seed, tier, progress."""

    model: LatentDiffusionModel
    device: torch.device
    seed: int
    tier: TierSettings
    progress: Progress
    #: The subject being protected (name, file names, images): protections that read
    #: already-protected files pair them with the clean ones by this.
    subject: Subject | None = None


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

    def __init__(self, epsilon: float = 0.05) -> None:
        if not (0 <= epsilon <= 1) or math.isnan(epsilon):
            raise ValueError(f"{self.name}: epsilon must lie in [0, 1] ([0,1] pixel units), got {epsilon}")
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


def quantize_within_budget(clean: torch.Tensor, protected: torch.Tensor, epsilon: float) -> torch.Tensor:
    """8-bit form of ``protected``, projected so that it differs from 8-bit ``clean`` by ≤ ε."""
    clean_u8 = to_uint8(clean).to(torch.int16)
    prot_u8 = to_uint8(protected).to(torch.int16)
    k = budget_levels(epsilon)
    return torch.clamp(prot_u8, clean_u8 - k, clean_u8 + k).clamp(0, 255).to(torch.uint8)


def linf_levels(clean: torch.Tensor, protected_u8: torch.Tensor) -> int:
    """Measured ℓ∞ distance in 8-bit levels between clean (float) and protected (uint8)."""
    diff = to_uint8(clean).to(torch.int16) - protected_u8.to(torch.int16)
    return int(diff.abs().max()) if diff.numel() else 0


def check_budget(clean: torch.Tensor, protected_u8: torch.Tensor, epsilon: float, name: str) -> float:
    """Return the measured ℓ∞ in [0,1] units; raise BudgetExceeded with the excess if over ε.

    Measured against the 8-bit form of the clean images, since that is what the protection
    received and what its user publishes.
    """
    if protected_u8.dtype != torch.uint8:
        protected_u8 = to_uint8(protected_u8)
    if protected_u8.shape != clean.shape:
        raise BudgetExceeded(
            f"protection '{name}' returned images of shape {tuple(protected_u8.shape)} for inputs of "
            f"shape {tuple(clean.shape)}; a protection must keep the image size."
        )
    levels = linf_levels(clean, protected_u8)
    measured = levels / 255
    if measured > epsilon + 1e-9:
        raise BudgetExceeded(
            f"protection '{name}' exceeds its budget: measured ℓ∞ = {levels}/255 = {measured:.4f} > "
            f"ε = {epsilon:.4f} ({epsilon * 255:.2f}/255), excess {measured - epsilon:.4f} "
            f"({(measured - epsilon) * 255:.2f}/255) after 8-bit quantisation. Fix the protection's "
            f"projection step or declare the budget it really uses."
        )
    return measured

