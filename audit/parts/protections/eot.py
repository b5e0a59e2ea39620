"""The adaptive protector: Expectation over Transformation (EoT) and BPDA around a protection's
objective.

A protector who knows the exploiter's transform T crafts through it (Athalye, Engstrom, Ilyas
and Kwok, "Synthesizing robust adversarial examples", ICML 2018, eq. 2): instead of the
protection's own objective L(x + δ) it ascends

    L_EoT(x + δ) = E_{t ~ T} L(t(x + δ)) ≈ (1/n) Σ_{k=1..n} L(t_k(x + δ)),

each t_k a distinct random draw of the transform (seeded: the same seed gives the same draws;
every PGD iteration draws new ones). As in ART's EoT (its ``EoTPyTorch`` preprocessors), EoT
wraps the objective: no protection knows about it. ``LinfPGD.ascend`` applies the wrapper it
is given (``LinfPGD.eot``), so every protection crafted by ℓ∞ PGD (PID, PhotoGuard, AdvDM, an
external ``LinfPGD`` subclass) can be adapted, and one that crafts otherwise (a folder of files,
uniform noise) cannot: ``objective_missing`` says why.

Each transform step is crafted through in one of two ways (``gradient``):

- its differentiable form, where one exists (``TRANSFORMS.get(name).load().differentiable``):
  kornia's differentiable JPEG, kornia's Gaussian blur, torchvision's resized crop, additive
  noise reparametrised as x + σ·ε with ε drawn from the EoT generator, IMPRESS approximated by
  the purifier model's reconstruction D(E(x + s·ε)) (its fixed point);
- BPDA, Backward Pass Differentiable Approximation (Athalye, Carlini and Wagner, ICML 2018,
  §4.1): the forward pass is the real, non-differentiable transform f, the backward pass that
  of an approximation g with g(x) ≈ f(x) — the identity (their choice for the purifiers they
  break), or the step's differentiable form (``bpda-surrogate``): y = g(x) + (f(x) − g(x)) with
  the bracket detached, so y = f(x) and ∂y/∂x = ∂g/∂x.

``auto`` (the default) takes the differentiable form where a step has one and BPDA with the
identity where it has none (denoisers, TVM, diffusion purification, restoration).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from audit.parts.protections.base import Protection
    from audit.parts.protections.pgd import ImageObjective
    from audit.parts.registry import PartSpec

Gradient = Literal["auto", "bpda", "bpda-surrogate"]
GRADIENTS: tuple[str, ...] = ("auto", "bpda", "bpda-surrogate")
Sample = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # one draw of the transform
# The EoT generator's seed from the protection's: a stream apart from the protection's own start.
EOT_SEED_SALT = 0x5EED_E07


def code_version() -> str:
    """SHA-256 (16 hex) of this file: part of an adaptive protection's cache key, so an edited
    EoT never serves images crafted by the old one (the protection's code fingerprint covers
    the protection, not this wrapper)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def eot_seed(seed: int) -> int:
    """The EoT generator's seed for a protection seeded with ``seed``."""
    return (int(seed) * 1_000_003 + EOT_SEED_SALT) % (2**63 - 1)


def bpda(forward: Callable[[torch.Tensor], torch.Tensor],
         approximation: Callable[[torch.Tensor], torch.Tensor] | None = None,
         ) -> Callable[[torch.Tensor], torch.Tensor]:
    """BPDA (Athalye et al. 2018, §4.1): the value of ``forward`` (run without a graph), the
    gradient of ``approximation`` (the identity when None)."""

    def step(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = forward(x.detach()).to(device=x.device, dtype=x.dtype)
        surrogate = x if approximation is None else approximation(x)
        return surrogate + (real - surrogate).detach()

    return step


def _call(function: Callable[..., torch.Tensor], x: torch.Tensor, params: Any,
          generator: torch.Generator, context: Any) -> torch.Tensor:
    """A transform function called the way the engine calls it (``context`` where it takes one)."""
    if "context" in inspect.signature(function).parameters:
        return function(x, params, generator, context=context)
    return function(x, params, generator)


def transform_sample(spec: PartSpec, gradient: Gradient, context: Any) -> tuple[Sample, str]:
    """One step of the adapted chain as a (x, generator) → t(x) function, and how it is crafted
    through (for the record): ``differentiable``, ``bpda-identity`` or ``bpda-surrogate``."""
    from audit.parts import TRANSFORMS

    part = TRANSFORMS.get(spec.name)
    params = part.validate(spec.params)
    real = part.load()
    surrogate = getattr(real, "differentiable", None) if part.differentiable else None
    if gradient == "auto" and surrogate is not None:
        def through(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            return _call(surrogate, x, params, generator, context)

        return through, "differentiable"
    approximation = surrogate if gradient == "bpda-surrogate" else None

    def approximated(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # The surrogate replays the real step's draw (the generator's state before it): for a
        # random step, forward and backward are the same draw of the transform.
        state = generator.get_state()

        def forward(y: torch.Tensor) -> torch.Tensor:
            return _call(real, y, params, generator, context)

        def backward(y: torch.Tensor) -> torch.Tensor:
            generator.set_state(state)
            assert approximation is not None
            return _call(approximation, y, params, generator, context)

        return bpda(forward, backward if approximation is not None else None)(x)

    return approximated, "bpda-surrogate" if approximation is not None else "bpda-identity"


class EoT:
    """The EoT wrapper of an objective: the mean over ``samples`` draws of the chain, each draw
    from ``generator`` (which advances, so every call and every sample draws anew)."""

    def __init__(self, chain: Sequence[Sample], samples: int, generator: torch.Generator) -> None:
        if samples < 1:
            raise ValueError(f"EoT needs at least one sample, got {samples}")
        self.chain = list(chain)
        self.samples = int(samples)
        self.generator = generator
        self.calls = 0

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """One draw t(x) of the whole chain."""
        for step in self.chain:
            x = step(x, self.generator)
        return x

    def __call__(self, objective: ImageObjective) -> ImageObjective:
        def expected(x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            values = [objective(self.transform(x)) for _ in range(self.samples)]
            return torch.stack(values).mean(0)

        return expected


def objective_missing(protection: Protection) -> str | None:
    """Why EoT cannot wrap this protection's objective, or None when it can (it crafts through
    ``LinfPGD.ascend`` and declares ``has_objective``)."""
    from audit.parts.protections.pgd import LinfPGD

    if not protection.has_objective:
        return getattr(protection, "no_objective", "") or (
            "it declares no objective (has_objective = False)")
    if not isinstance(protection, LinfPGD):
        return (f"{type(protection).__name__} does not craft through "
                "audit.parts.protections.pgd.LinfPGD.ascend, the objective EoT wraps: subclass "
                "LinfPGD and pass the objective to ascend to expose it")
    return None


@contextmanager
def adapted(protection: Protection, eot: EoT) -> Iterator[Protection]:
    """A shallow copy of ``protection`` whose PGD ascends the EoT objective (the shared object
    is left as it is)."""
    import copy

    reason = objective_missing(protection)
    if reason is not None:
        raise TypeError(f"protection '{protection.name}' cannot be adapted: {reason}")
    clone = copy.copy(protection)
    clone.eot = eot  # type: ignore[attr-defined]  # LinfPGD.eot (checked above)
    yield clone


def build_eot(steps: Sequence[PartSpec], samples: int, gradient: Gradient, seed: int,
              context: Any) -> tuple[EoT, list[str]]:
    """The EoT over the chain ``steps`` (resolved specs), seeded from the protection's seed, and
    how each step is crafted through."""
    if gradient not in GRADIENTS:
        raise ValueError(f"adaptive gradient must be one of {', '.join(GRADIENTS)}, got "
                         f"{gradient!r}")
    pairs = [transform_sample(s, gradient, context) for s in steps]
    generator = torch.Generator().manual_seed(eot_seed(seed))
    return EoT([p[0] for p in pairs], samples, generator), [p[1] for p in pairs]
