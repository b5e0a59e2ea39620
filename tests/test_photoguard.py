"""PhotoGuard's encoder attack (Salman et al. 2023, Alg. 1) really pulls E(x+δ) to its target,
within its budget, and the shared ℓ∞ PGD does what its docstring says."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config.tiers import get_tier
from audit.data.images import from_uint8, to_uint8
from audit.errors import BudgetExceeded
from audit.parts import PROTECTIONS
from audit.parts.protections.base import (
    ProtectionContext,
    ProtectionOutput,
    check_budget,
    quantize_within_budget,
)
from audit.parts.protections.build import build_protection
from audit.parts.protections.pgd import LinfPGD
from audit.parts.protections.photoguard import (
    PhotoGuardEncoder,
    PhotoGuardEncoderCode,
    distance,
    target_latent,
)
from audit.parts.protections.pid import posterior
from audit.parts.protections.simple import RandomNoise
from audit.run.progress import Progress


def ctx(model, seed: int = 0) -> ProtectionContext:
    return ProtectionContext(model, torch.device("cpu"), seed, get_tier("smoke"), Progress())


class Plain(LinfPGD):
    """The bare ℓ∞ PGD with a zero start, for properties of the loop itself."""

    name = "plain"

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        raise NotImplementedError

    def run(self, x: torch.Tensor, objective, start: torch.Tensor | None = None):
        start = torch.zeros_like(x) if start is None else start
        return self.ascend(objective, x, start, Progress(), "plain", "no hint")


def test_encoder_attack_pulls_the_latent_to_the_gray_target_far_beyond_noise(tiny, images) -> None:
    """On the tiny VAE the attack closes 27 % of the squared distance to the gray latent by 40
    iterations (a plateau: 0.274 at 200) and uniform noise of the same budget 1 %."""
    x = images[:2]
    guard = PhotoGuardEncoder(steps=20)
    out = guard.protect(x, ctx(tiny))
    assert check_budget(x, out.images, 16 / 255, "photoguard-encoder") <= 16 / 255
    assert out.info["distance_last_iterate"] < 0.85 * out.info["distance_first"]
    noise = RandomNoise(16 / 255).protect(x, ctx(tiny)).images
    closed = guard.objective_value(tiny.vae, x, from_uint8(out.images))
    closed_by_noise = guard.objective_value(tiny.vae, x, from_uint8(noise))
    assert float(closed.mean()) > 0.15
    assert float(closed.min()) > 5 * max(float(closed_by_noise.abs().max()), 0.01)
    assert out.info["objective_final_8bit"] == pytest.approx(float(closed.mean()), abs=1e-6)


def test_paper_setting_is_deterministic_the_code_setting_seeded(tiny, images) -> None:
    x = images[:1]
    paper = [PhotoGuardEncoder(steps=3).protect(x, ctx(tiny, seed=s)).images for s in (1, 2)]
    assert torch.equal(paper[0], paper[1])  # δ₀ = 0: nothing random
    assert not PhotoGuardEncoder().random and PhotoGuardEncoderCode().random
    code = [PhotoGuardEncoderCode(steps=3).protect(x, ctx(tiny, seed=s)).images for s in (1, 1, 2)]
    assert torch.equal(code[0], code[1]) and not torch.equal(code[0], code[2])


def test_registered_settings_are_the_paper_and_the_notebook(tiny) -> None:
    paper, spec = build_protection("photoguard-encoder")
    assert isinstance(paper, PhotoGuardEncoder) and spec.params == {
        "epsilon": 16 / 255, "step_size": 2 / 255, "steps": 200, "target": "gray", "init": "zero",
        "schedule": "constant", "loss": "squared"}
    code, spec = build_protection("photoguard-encoder-code")
    assert isinstance(code, PhotoGuardEncoderCode)
    assert spec.params["epsilon"] == pytest.approx(7.65 / 255) and spec.params["target"] == "zero"
    assert PROTECTIONS.get("photoguard-encoder").uses_model


def test_the_notebooks_truncating_save_exceeds_its_budget_rounding_does_not(tiny, images) -> None:
    """ε 0.06 in [−1, 1] is 7.65/255: an iterate at −ε truncated to 8 bits lands 8 levels away."""
    x = from_uint8(to_uint8(images[:2]))
    z = torch.zeros_like(posterior(tiny.vae, x)[0])
    code = PhotoGuardEncoderCode(steps=6)
    start = code.uniform_start(x, torch.Generator().manual_seed(0))
    delta, _ = code.ascend(lambda xa: -distance(posterior(tiny.vae, xa)[0], z, "norm"), x, start,
                           Progress(), "photoguard", "no hint")
    truncated = torch.floor((x + delta) * 255).clamp(0, 255).to(torch.uint8)
    with pytest.raises(BudgetExceeded, match="8/255"):
        check_budget(x, truncated, 0.03, "photoguard-encoder-code")
    rounded = quantize_within_budget(x, x + delta, 0.03)
    assert check_budget(x, rounded, 0.03, "photoguard-encoder-code") <= 7 / 255


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.1), step=st.floats(0.001, 0.05), seed=st.integers(0, 100),
       init=st.sampled_from(["zero", "uniform"]),
       schedule=st.sampled_from(["constant", "linear"]))
def test_output_within_budget_after_rounding_for_any_setting(tiny, eps, step, seed, init,
                                                             schedule) -> None:
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    guard = PhotoGuardEncoder(epsilon=eps, step_size=step, steps=2, init=init, schedule=schedule)
    out = guard.protect(image, ctx(tiny, seed=seed)).images
    assert check_budget(image, out, eps, "photoguard-encoder") <= eps


def test_linear_schedule_decays_to_a_hundredth() -> None:
    guard = PhotoGuardEncoder(step_size=0.02, steps=100, schedule="linear")
    assert guard.step_at(0) == pytest.approx(0.02)
    assert guard.step_at(50) == pytest.approx(0.02 - 0.0198 / 2)
    assert guard.step_at(100) == pytest.approx(0.0002)
    assert PhotoGuardEncoder(step_size=0.02, steps=100).step_at(99) == 0.02


@pytest.mark.parametrize("ascend", [True, False])
def test_pgd_moves_a_linear_loss_to_the_budget_corner(ascend: bool) -> None:
    """L(x) = Σ w·x: the optimum over the ℓ∞ ball is δ = ±ε·sign(w), reached in ⌈ε/α⌉ steps."""
    x = torch.full((1, 3, 4, 4), 0.5)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    sign = 1 if ascend else -1
    pgd = Plain(0.05, 0.02, math.ceil(0.05 / 0.02))
    delta, history = pgd.run(x, lambda xa: sign * (w * xa).flatten(1).sum(1))
    history = [sign * v for v in history]
    expected = 0.05 * w.sign() * (1 if ascend else -1)
    assert torch.allclose(delta, expected, atol=1e-6)
    assert (history[-1] > history[0]) == ascend


def test_pgd_stays_in_the_pixel_range() -> None:
    x = torch.tensor([[[[0.0, 1.0], [0.01, 0.99]]]]).expand(1, 3, 2, 2).contiguous()
    pgd = Plain(0.1, 0.05, 4)
    start = pgd.uniform_start(x, torch.Generator().manual_seed(1))
    delta, _ = pgd.run(x, lambda xa: (xa - 0.5).abs().flatten(1).sum(1), start)
    assert float((x + delta).min()) >= 0 and float((x + delta).max()) <= 1
    assert float(delta.abs().max()) <= 0.1 + 1e-7


def test_batched_pgd_equals_one_image_at_a_time(tiny, images) -> None:
    """Only each image's own gradient sign enters its step (GroupNorm is per sample)."""
    x = images[:2]
    z = target_latent(tiny.vae, x, "gray")
    pgd = Plain(16 / 255, 2 / 255, 3)
    together, _ = pgd.run(x, lambda xa: -distance(posterior(tiny.vae, xa)[0], z))

    def one(i: int) -> torch.Tensor:
        target = z[i : i + 1]
        return pgd.run(x[i : i + 1], lambda xa: -distance(posterior(tiny.vae, xa)[0], target))[0]

    alone = torch.cat([one(0), one(1)])
    assert float((together - alone).abs().gt(1e-6).float().mean()) < 0.001
