"""The reference points every audit needs: no protection, and random noise of the same budget."""

from __future__ import annotations

import torch
from pydantic import Field

from audit.data.images import to_uint8
from audit.parts.protections.base import (
    Protection,
    ProtectionContext,
    ProtectionOutput,
    quantize_within_budget,
)
from audit.parts.registry import Params


class NoProtectionParams(Params):
    epsilon: float = Field(0.0, ge=0, le=1)


class RandomNoiseParams(Params):
    """PID Table 1 / PhotoGuard's null baseline: the same budget as the protection audited."""

    epsilon: float = Field(0.05, ge=0, le=1, description="ℓ∞ budget in [0,1] pixel units")


class NoProtection(Protection):
    """Publish the clean images as they are (the exploit's clean baseline)."""

    name = "none"
    random = False
    has_objective = False
    no_objective = "'none' publishes the clean images: nothing is optimised, nothing to adapt"

    def __init__(self, epsilon: float = 0.0) -> None:
        super().__init__(epsilon)

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        return ProtectionOutput(to_uint8(images))


class RandomNoise(Protection):
    """Uniform noise in [−ε, ε] per pixel (PID Table 1 'Random'; PhotoGuard's null baseline).

    Drawn from a generator seeded with the audit seed, then quantised within the budget.
    """

    name = "random"
    has_objective = False
    no_objective = "'random' draws uniform noise: nothing is optimised, nothing to adapt"

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        generator = torch.Generator().manual_seed(ctx.seed)
        noise = (2 * torch.rand(images.shape, generator=generator) - 1) * self.epsilon
        protected = (images.cpu() + noise).clamp(0, 1)
        return ProtectionOutput(quantize_within_budget(images.cpu(), protected, self.epsilon))
