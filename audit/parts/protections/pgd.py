"""ℓ∞ projected gradient ascent on an objective of the perturbed images (Madry et al., ICLR 2018),
as PID runs it (PID §5.1, eq. 10):

    δ ← clip_ε(δ + α · sign ∇_δ L(x + δ)),   x + δ ∈ [0, 1]

A protection crafted this way subclasses ``LinfPGD`` and gives ``ascend`` its objective (a
batch of perturbed images → one loss per image); an EoT or BPDA wrapper wraps that objective.
A protection that minimises a distance (PhotoGuard) ascends its negative; one with a step
schedule overrides ``step_at``; one with another start passes its own δ₀.
Being a base class, this file is part of every such protection's code fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from audit.parts.protections.base import Protection

if TYPE_CHECKING:
    from audit.run.progress import Progress

ImageObjective = Callable[[torch.Tensor], torch.Tensor]  # perturbed batch → per-image loss


class LinfPGD(Protection):
    """A protection crafted by ℓ∞ PGD: budget ``epsilon``, step ``step_size``, ``steps``
    iterations from a uniform start in [−ε, ε]."""

    #: A wrapper of the objective ``ascend`` is given (the adaptive protector's EoT,
    #: ``audit/parts/protections/eot.py``); None: the objective as the protection wrote it.
    eot: Callable[[ImageObjective], ImageObjective] | None = None

    def __init__(self, epsilon: float = 0.05, step_size: float = 1 / 255,
                 steps: int = 1000) -> None:
        super().__init__(epsilon)
        if step_size <= 0:
            raise ValueError(f"{self.name}: step_size must be positive, got {step_size}")
        self.step_size = float(step_size)
        self.steps = steps

    def step_at(self, i: int) -> float:
        """α at iteration ``i``: ``step_size`` throughout (a subclass may schedule it)."""
        return self.step_size

    def uniform_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """δ drawn uniformly in [−ε, ε] on the CPU generator, then kept inside [0, 1]."""
        delta = ((2 * torch.rand(x.shape, generator=generator) - 1) * self.epsilon).to(x.device)
        return (x + delta).clamp(0, 1) - x

    def ascend(self, objective: ImageObjective, x: torch.Tensor, delta: torch.Tensor,
               progress: Progress, label: str, hint: str,
               steps: int | None = None) -> tuple[torch.Tensor, list[float]]:
        """``steps`` (default ``self.steps``) signed-gradient steps on the sum of the per-image
        objective; returns the last δ and the mean objective at each iterate (of the EoT
        objective when ``eot`` wraps it). ``hint`` completes the error raised on a non-finite
        gradient (what produced it and the fix)."""
        history: list[float] = []
        if self.eot is not None:
            objective = self.eot(objective)
        steps = self.steps if steps is None else steps
        with progress.stage(label, total=steps) as stage:
            for i in range(steps):
                delta.requires_grad_(True)
                loss = objective(x + delta)
                (grad,) = torch.autograd.grad(loss.sum(), delta)
                if not torch.isfinite(grad).all():
                    raise FloatingPointError(
                        f"{self.name.upper()}: non-finite gradient at iteration "
                        f"{i + 1}/{steps}; {hint}"
                    )
                with torch.no_grad():
                    delta = delta + self.step_at(i) * grad.sign()
                    delta = delta.clamp(-self.epsilon, self.epsilon)
                    delta = (x + delta).clamp(0, 1) - x
                value = float(loss.detach().mean())
                history.append(value)
                stage.advance(1, f"L={value:.4g}")
        return delta, history
