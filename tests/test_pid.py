"""PID really optimises its objective (paper eq. 10, reference form) within its budget."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config.tiers import get_tier
from audit.data.images import from_uint8
from audit.parts.protections.base import ProtectionContext, check_budget
from audit.parts.protections.pid import PID, pid_objective, posterior
from audit.parts.protections.simple import RandomNoise
from audit.parts.registry import InvalidParams
from audit.run.progress import Progress


def ctx(model, seed: int = 0) -> ProtectionContext:
    """PID reads its iterations from its own ``steps`` parameter; the tier is not consulted."""
    return ProtectionContext(model, torch.device("cpu"), seed, get_tier("smoke"), Progress())


def test_pid_increases_its_objective_within_budget(tiny, images) -> None:
    out = PID(epsilon=0.05, steps=20).protect(images, ctx(tiny))
    assert check_budget(images, out.images, 0.05, "pid") <= 12 / 255
    trace = out.info["objective_trace"]
    assert out.info["objective_last_iterate"] > 2 * out.info["objective_first"]
    assert trace[-1] >= trace[0]
    # Quantisation keeps most of the effect.
    assert out.info["objective_final_8bit"] > 0.5 * out.info["objective_last_iterate"]


def test_pid_beats_random_noise_of_the_same_budget_on_its_objective(tiny, images) -> None:
    pid = PID(epsilon=0.05, steps=20)
    pid_out = pid.protect(images, ctx(tiny)).images
    random_out = RandomNoise(0.05).protect(images, ctx(tiny)).images
    pid_value = pid.objective_value(tiny.vae, images, from_uint8(pid_out)).mean()
    random_value = pid.objective_value(tiny.vae, images, from_uint8(random_out)).mean()
    assert pid_value > 3 * random_value


def test_pid_is_deterministic_for_a_seed(tiny, images) -> None:
    a = PID(steps=3).protect(images[:1], ctx(tiny, seed=1)).images
    b = PID(steps=3).protect(images[:1], ctx(tiny, seed=1)).images
    c = PID(steps=3).protect(images[:1], ctx(tiny, seed=2)).images
    assert torch.equal(a, b) and not torch.equal(a, c)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(eps=st.floats(0.0, 0.1), step=st.floats(0.001, 0.05), seed=st.integers(0, 100))
def test_pid_output_within_budget_for_any_epsilon_and_step(
        tiny, eps: float, step: float, seed: int) -> None:
    image = torch.rand((1, 3, 64, 64), generator=torch.Generator().manual_seed(seed))
    out = PID(epsilon=eps, step_size=step, steps=2).protect(image, ctx(tiny, seed=seed)).images
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


def test_steps_come_from_pid_params_not_from_the_tier(tiny, images) -> None:
    """PID runs exactly its own ``steps`` whatever tier the context carries (or none), and the
    tier sets them through the one precedence (part default < tier < --audit-set)."""
    from audit.config.tiers import parse_overrides
    from audit.parts import PROTECTIONS
    from audit.parts.protections.build import build_protection
    from audit.parts.protections.pid import PIDParams

    for tier in (get_tier("smoke"), get_tier("paper"), None):
        context = ProtectionContext(tiny, torch.device("cpu"), 0, tier, Progress())
        out = PID(steps=2).protect(images[:1], context)
        assert out.info["steps"] == 2 and len(out.info["objective_trace"]) == 2
    assert PIDParams().steps == 1000 and PID().steps == 1000  # the paper's PGD-1000
    assert build_protection("pid")[0].steps == 1000
    assert {t: build_protection("pid", get_tier(t))[0].steps
            for t in ("smoke", "standard", "paper")} == {
        "smoke": 100, "standard": 200, "paper": 1000}
    pid, spec = build_protection("pid", get_tier("smoke",
                                                 parse_overrides(
                                                     ["pid.steps=7", "pid.objective=mean"])))
    assert (pid.steps, pid.objective) == (7, "mean") and spec.params["steps"] == 7
    assert PROTECTIONS.get("pid").validate({"steps": 5}).steps == 5
    with pytest.raises(InvalidParams, match="steps"):
        PROTECTIONS.get("pid").validate({"steps": 0})
