"""The ℓ∞ budget after 8-bit quantisation is never exceeded, and violations are caught."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.data.images import to_uint8
from audit.errors import BudgetExceeded, ProtectionError
from audit.parts.protections.base import (
    ProtectionOutput,
    budget_levels,
    check_budget,
    check_output,
    quantize_within_budget,
)
from audit.parts.protections.simple import NoProtection, RandomNoise


@settings(max_examples=60, deadline=None)
@given(
    eps=st.floats(0, 0.2, allow_nan=False),
    seed=st.integers(0, 2**16),
    h=st.integers(1, 12),
    scale=st.floats(0.0, 3.0),
)
def test_quantized_output_never_exceeds_budget(eps: float, seed: int, h: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand((2, 3, h, h), generator=g)
    # An attempted perturbation up to 3× the budget, as a buggy protection would produce.
    attempt = (clean + scale * eps * (2 * torch.rand(clean.shape, generator=g) - 1)).clamp(0, 1)
    out = quantize_within_budget(clean, attempt, eps)
    assert out.dtype == torch.uint8 and out.shape == clean.shape
    measured = check_budget(clean, out, eps, "test")
    assert measured <= eps + 1e-9
    assert measured * 255 <= budget_levels(eps)


def test_budget_levels_of_papers_budgets() -> None:
    assert budget_levels(0.05) == 12  # PID: 12.75/255 → at most 12 levels after rounding
    assert budget_levels(8 / 255) == 8
    assert budget_levels(16 / 255) == 16
    assert budget_levels(0.0) == 0


def test_violation_reports_measured_excess() -> None:
    clean = torch.full((1, 3, 4, 4), 0.5)
    bad = to_uint8(clean).clone()
    bad[0, 0, 0, 0] += 20
    with pytest.raises(BudgetExceeded) as info:
        check_budget(clean, bad, 0.05, "leaky")
    message = str(info.value)
    assert "leaky" in message and "20/255" in message and "excess" in message


def test_shape_change_is_a_contract_violation() -> None:
    """A changed shape breaks the interface (an error naming what changed), not the budget."""
    clean = torch.rand((1, 3, 8, 8))
    with pytest.raises(ProtectionError, match="keep the image size") as info:
        check_budget(clean, to_uint8(torch.rand((1, 3, 4, 4))), 0.05, "resizer")
    assert not isinstance(info.value, BudgetExceeded)


@pytest.mark.parametrize(
    ("shape", "fragments"),
    [
        ((1, 3, 8, 8), ["1 image(s) for 2 input image(s)", "one protected image per input"]),
        ((2, 1, 8, 8), ["1 channel(s) where the inputs have 3", "keep the input's channels"]),
        ((2, 3, 8), ["3-dimensional tensor", "N×3×H×W"]),
    ],
)
def test_fewer_images_or_other_channels_are_said_as_such(
        shape: tuple, fragments: list[str]) -> None:
    """Issue 20: fewer images or other channels were told "must keep the image size"."""
    clean = torch.rand((2, 3, 8, 8))
    with pytest.raises(ProtectionError) as info:
        check_budget(clean, torch.zeros(shape, dtype=torch.uint8), 0.05, "odd")
    message = str(info.value)
    assert "image size" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_non_finite_output_is_its_own_error_with_the_count() -> None:
    """Issue 20: a NaN became 0 on rounding, and ℓ∞ was then made up (204/255 for one NaN pixel)."""
    clean = torch.full((1, 3, 4, 4), 0.8)
    out = clean.clone()
    out[0, 0, 0, 0] = float("nan")
    out[0, 1, 2, 2] = float("inf")
    with pytest.raises(ProtectionError) as info:
        check_output(ProtectionOutput(out), clean, "nanny")
    message = str(info.value)
    assert "'nanny'" in message and "2 non-finite value(s) (1 NaN, 1 ±inf)" in message
    assert not isinstance(info.value, BudgetExceeded)
    # finite output passes unchanged
    assert torch.equal(check_output(ProtectionOutput(clean), clean, "fine"), clean)


def test_a_bare_tensor_is_told_the_interface() -> None:
    """Issue 20: protect returning a bare tensor died with "'Tensor' object has no attribute
    'images'"."""
    clean = torch.rand((1, 3, 4, 4))
    with pytest.raises(ProtectionError) as info:
        check_output(to_uint8(clean), clean, "bare")
    message = str(info.value)
    assert "bare Tensor" in message and "ProtectionOutput(images" in message
    with pytest.raises(ProtectionError, match="returned dict"):
        check_output({"images": clean}, clean, "dicty")


class _Ctx:
    seed = 3


def test_random_and_none_protections() -> None:
    clean = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    out = RandomNoise(0.05).protect(clean, _Ctx()).images
    assert check_budget(clean, out, 0.05, "random") == pytest.approx(12 / 255)
    again = RandomNoise(0.05).protect(clean, _Ctx()).images
    assert torch.equal(out, again)  # seeded
    assert torch.equal(NoProtection().protect(clean, _Ctx()).images, to_uint8(clean))
    with pytest.raises(ValueError, match="epsilon"):
        RandomNoise(1.5)
