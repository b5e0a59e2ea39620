"""PID: Prompt-Independent Defense (Li et al., ICML 2024; paper §5.1, eq. 6-10).

PID perturbs only the VAE encoder's posterior N(μ_E(x), σ²_E(x)) — no text prompt, no UNet —
with ℓ∞ PGD (Madry et al. 2018) on the signed gradient:

    δ ← clip_ε(δ + α · sign ∇_δ L(x, δ)),   x + δ ∈ [0, 1]

Default objective ``add-log``. Eq. 10 as printed is L_mean + log(σ²(x+δ)/σ²(x)); the public
reference code released with the paper instead maximises MSE(log σ²(x+δ), log σ²(x)) + MSE(μ(x+δ),
μ(x))
over all latent elements, which pushes the log-variance away in either direction. We follow
the reference code, since the paper's reported numbers come from it; ``mean`` (eq. 6),
``var`` (eq. 7, on σ) and ``add`` (eq. 9) are available for ablations.

Settings (paper tier): ε = 0.05 in [0,1] units (12.75/255), step α = 1/255, 1000 iterations,
init uniform in [−ε, ε], images mapped to [−1, 1] for the encoder, fp32. Batching several
images is equivalent to the reference's batch of 1: the encoder has no cross-sample layers
(GroupNorm), each image's loss is its own mean, and the step uses only the gradient's sign.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from audit.parts.protections.base import ProtectionContext, ProtectionOutput, quantize_within_budget
from audit.parts.protections.pgd import LinfPGD
from audit.parts.registry import Params

Objective = Literal["add-log", "mean", "var", "add"]


def posterior(vae: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, log σ²) of the VAE posterior for a [0,1] batch (diffusers clamps log σ² to [−30, 20])."""
    dist = vae.encode(images * 2 - 1).latent_dist  # type: ignore[operator]
    return dist.mean, dist.logvar


def pid_objective(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    clean_mean: torch.Tensor,
    clean_logvar: torch.Tensor,
    objective: Objective = "add-log",
) -> torch.Tensor:
    """Per-image PID loss (to be maximised): a vector of length N."""

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(a, b, reduction="none").flatten(1).mean(1)

    if objective == "add-log":
        return mse(logvar, clean_logvar) + mse(mean, clean_mean)
    if objective == "mean":
        return mse(mean, clean_mean)
    if objective == "var":
        return mse(torch.exp(0.5 * logvar), torch.exp(0.5 * clean_logvar))
    if objective == "add":
        return mse(mean, clean_mean) + mse(torch.exp(0.5 * logvar), torch.exp(0.5 * clean_logvar))
    raise ValueError(f"unknown PID objective '{objective}'; choose add-log, mean, var or add")


class PIDParams(Params):
    """PID's settings; defaults are the paper's (§6.1, App. A): ε 0.05 ([0,1] units), step
    1/255, 1000 PGD iterations, objective add-log as in the reference code."""

    epsilon: float = Field(0.05, ge=0, le=1, description="ℓ∞ budget in [0,1] pixel units")
    step_size: float = Field(1 / 255, gt=0, le=1)
    steps: int = Field(1000, ge=1, le=100_000, description="PGD iterations")
    objective: Objective = "add-log"


class PID(LinfPGD):
    """PID with ℓ∞ signed-gradient PGD on the VAE encoder only (paper eq. 10)."""

    name = "pid"
    uses_model = True

    def __init__(
        self,
        epsilon: float = 0.05,
        step_size: float = 1 / 255,
        steps: int = 1000,
        objective: Objective = "add-log",
    ) -> None:
        super().__init__(epsilon, step_size, steps)
        self.objective: Objective = objective

    def params(self, tier: Any = None) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "step_size": self.step_size,
            "steps": self.steps,
            "objective": self.objective,
            "init": "uniform[-eps,eps]",
        }

    def objective_value(
            self, vae: torch.nn.Module, clean: torch.Tensor,
            protected: torch.Tensor) -> torch.Tensor:
        """Per-image objective of ``protected`` relative to ``clean`` (no gradient)."""
        with torch.no_grad():
            cm, clv = posterior(vae, clean)
            m, lv = posterior(vae, protected)
            return pid_objective(m, lv, cm, clv, self.objective)

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        vae = ctx.model.vae  # type: ignore[union-attr]  # PID uses the model: the stage gives it
        device = ctx.device
        steps = self.steps
        x = images.to(device=device, dtype=torch.float32)
        delta = self.uniform_start(x, torch.Generator().manual_seed(ctx.seed))
        with torch.no_grad():
            clean_mean, clean_logvar = posterior(vae, x)

        def objective(perturbed: torch.Tensor) -> torch.Tensor:
            mean, logvar = posterior(vae, perturbed)
            return pid_objective(mean, logvar, clean_mean, clean_logvar, self.objective)

        requires = [p.requires_grad for p in vae.parameters()]
        for p in vae.parameters():
            p.requires_grad_(False)
        try:
            delta, history = self.ascend(
                objective, x, delta, ctx.progress, f"PID PGD, objective {self.objective}",
                "the VAE produced NaN/Inf (check the model's dtype: PID needs an fp32 encoder).")
        finally:
            for p, r in zip(vae.parameters(), requires, strict=True):
                p.requires_grad_(r)
        protected_u8 = quantize_within_budget(x.cpu(), (x + delta).detach().cpu(), self.epsilon)
        final = self.objective_value(vae, x, protected_u8.to(device).float() / 255).cpu()
        info = {
            "objective": self.objective,
            "steps": steps,
            "objective_first": history[0] if history else None,
            "objective_last_iterate": history[-1] if history else None,
            "objective_final_8bit": float(final.mean()),
            "objective_final_8bit_per_image": [float(v) for v in final],
            "objective_trace": history[:: max(1, len(history) // 50)],
        }
        return ProtectionOutput(protected_u8, info)
