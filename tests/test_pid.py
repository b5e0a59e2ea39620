"""PID really optimises its objective (paper eq. 10, reference form) within its budget."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.images import from_uint8
from audit.progress import Progress
from audit.protections import ProtectionContext, check_budget
from audit.protections.pid import PID, pid_objective, posterior
from audit.protections.simple import RandomNoise
from audit.tiers import get_tier


def ctx(model, steps: int = 20, seed: int = 0) -> ProtectionContext:
    return ProtectionContext(model, torch.device("cpu"), seed, get_tier("smoke", pgd_steps=steps), Progress())


def test_pid_increases_its_objective_within_budget(tiny, images) -> None:
    out = PID(epsilon=0.05).protect(images, ctx(tiny, steps=20))
    assert check_budget(images, out.images, 0.05, "pid") <= 12 / 255
    trace = out.info["objective_trace"]
    assert out.info["objective_last_iterate"] > 2 * out.info["objective_first"]
    assert trace[-1] >= trace[0]
    # Quantisation keeps most of the effect.
    assert out.info["objective_final_8bit"] > 0.5 * out.info["objective_last_iterate"]


def test_pid_beats_random_noise_of_the_same_budget_on_its_objective(tiny, images) -> None:
    pid = PID(epsilon=0.05)
    pid_out = pid.protect(images, ctx(tiny, steps=20)).images
    random_out = RandomNoise(0.05).protect(images, ctx(tiny)).images
    pid_value = pid.objective_value(tiny.vae, images, from_uint8(pid_out)).mean()
    random_value = pid.objective_value(tiny.vae, images, from_uint8(random_out)).mean()
    assert pid_value > 3 * random_value


def test_pid_is_deterministic_for_a_seed(tiny, images) -> None:
    a = PID().protect(images[:1], ctx(tiny, steps=3, seed=1)).images
    b = PID().protect(images[:1], ctx(tiny, steps=3, seed=1)).images
    c = PID().protect(images[:1], ctx(tiny, steps=3, seed=2)).images
    assert torch.equal(a, b) and not torch.equal(a, c)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.1), step=st.floats(0.001, 0.05), seed=st.integers(0, 100))
def test_pid_output_within_budget_for_any_epsilon_and_step(tiny, eps: float, step: float, seed: int) -> None:
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    out = PID(epsilon=eps, step_size=step).protect(image, ctx(tiny, steps=2, seed=seed)).images
    assert check_budget(image, out, eps, "pid") <= eps


def test_objective_forms(tiny, images) -> None:
    mean, logvar = posterior(tiny.vae, images[:2])
    for objective in ("add-log", "mean", "var", "add"):
        zero = pid_objective(mean, logvar, mean, logvar, objective)
        assert zero.shape == (2,) and torch.allclose(zero, torch.zeros(2))
    shifted = pid_objective(mean + 1, logvar, mean, logvar, "add-log")
    assert torch.allclose(shifted, torch.ones(2))
    with pytest.raises(ValueError, match="unknown PID objective"):
        pid_objective(mean, logvar, mean, logvar, "bogus")  # type: ignore[arg-type]
