"""AdvDM (Liang et al. 2023) really raises the denoising loss of its own objective within its
budget, far above uniform noise of the same budget."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config.tiers import get_tier
from audit.data.images import from_uint8
from audit.parts.protections.advdm import AdvDM
from audit.parts.protections.base import ProtectionContext, check_budget
from audit.parts.protections.build import build_protection
from audit.parts.protections.simple import RandomNoise
from audit.run.progress import Progress


def ctx(model, seed: int = 0) -> ProtectionContext:
    return ProtectionContext(model, torch.device("cpu"), seed, get_tier("smoke"), Progress())


def test_advdm_raises_its_objective_far_above_random_noise(tiny, images) -> None:
    """Measured on the tiny model, 2 images, 10 iterations: +0.019 per image; noise +4e-5."""
    x = images[:2]
    advdm = AdvDM(steps=10)
    out = advdm.protect(x, ctx(tiny))
    assert check_budget(x, out.images, 0.05, "advdm") <= 12 / 255
    gain = advdm.objective_value(tiny, x, from_uint8(out.images))
    noisy = RandomNoise(0.05).protect(x, ctx(tiny)).images
    noise = advdm.objective_value(tiny, x, from_uint8(noisy))
    assert float(gain.min()) > 0.005
    assert float(gain.min()) > 50 * float(noise.abs().max())
    assert out.info["objective_final_8bit"] == float(gain.mean())


def test_advdm_draws_from_the_seed(tiny, images) -> None:
    a, b, c = (AdvDM(steps=2).protect(images[:1], ctx(tiny, seed=s)).images for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_advdm_registered_with_pids_comparison_setting() -> None:
    protection, spec = build_protection("advdm")
    assert isinstance(protection, AdvDM)
    assert spec.params == {"epsilon": 0.05, "step_size": 0.005, "steps": 100,
                           "prompt": "a photo of sks person", "textural_weight": 0.05}


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.1), step=st.floats(0.001, 0.05), seed=st.integers(0, 100))
def test_advdm_within_budget_after_rounding(tiny, eps: float, step: float, seed: int) -> None:
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    out = AdvDM(epsilon=eps, step_size=step, steps=1).protect(image, ctx(tiny, seed=seed)).images
    assert check_budget(image, out, eps, "advdm") <= eps
