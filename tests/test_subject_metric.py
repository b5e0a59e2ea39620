"""subject_similarity: SSIM to the nearest clean subject image (the smoke-tier verdict metric)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.parts.metrics.build import get_metric
from audit.parts.metrics.subject import nearest_subject_ssim


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), m=st.integers(1, 4), side=st.sampled_from([16, 32, 64]),
       seed=st.integers(0, 2**16))
def test_one_value_per_generation_in_ssim_range_and_exact_copies_score_one(
        n: int, m: int, side: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    reference = torch.rand(m, 3, side, side, generator=g)
    generated = torch.rand(n, 3, side, side, generator=g)
    values = nearest_subject_ssim(generated, reference)
    assert values.shape == (n,) and bool(((values >= -1) & (values <= 1 + 1e-5)).all())
    # A copy of any reference view is at similarity 1, whichever view it copies.
    copies = nearest_subject_ssim(reference.flip(0), reference)
    assert torch.allclose(copies, torch.ones(m), atol=1e-4)
    # The nearest view decides: adding a reference can only raise the value.
    more = nearest_subject_ssim(generated, torch.cat([reference, generated[:1]]))
    assert bool((more >= values - 1e-6).all()) and abs(float(more[0]) - 1) < 1e-4


def test_degrades_with_noise_and_orders_by_closeness(images: torch.Tensor) -> None:
    metric = get_metric("subject_similarity")
    g = torch.Generator().manual_seed(0)
    levels = [0.0, 0.05, 0.2, 0.5]
    noisy = torch.cat([(images[:1] + s * torch.randn(images[:1].shape, generator=g)).clamp(0, 1)
                       for s in levels])
    result = metric.compute(noisy, images)
    assert result.direction == "down" and "piq" in result.implementation
    assert result.values == sorted(result.values, reverse=True) and result.values[0] > 0.999
    assert metric.compute(noisy, images[:0]).unavailable


def test_other_resolutions_are_compared_at_a_common_size(images: torch.Tensor) -> None:
    big = torch.nn.functional.interpolate(images, size=(320, 320), mode="bilinear",
                                          align_corners=False)
    values = nearest_subject_ssim(big, images)
    assert values.shape == (len(images),) and float(values.min()) > 0.8


def test_face_metric_substitute_override_parses_into_the_verdict_section() -> None:
    from audit.config.tiers import get_tier, parse_overrides, validate_overrides

    assert parse_overrides(
        ["face_metric_substitute=brisque"]) == {"verdict": {"face_metric_substitute": "brisque"}}
    assert parse_overrides(
        ["verdict.face_metric_substitute=null", "noise_floor_control=false"]) == {
        "verdict": {"face_metric_substitute": None}, "controls": {"noise_floor": False}}
    tier = get_tier("smoke", parse_overrides(["face_metric_substitute=brisque"]))
    validate_overrides(tier)
    resolved = tier.resolve_section("verdict")
    assert resolved.params.face_metric_substitute == "brisque"
    assert resolved.origin["face_metric_substitute"] == "--audit-set"
    off = get_tier("smoke", parse_overrides(["verdict.face_metric_substitute=null"]))
    validate_overrides(off)
    assert (off.verdict.face_metric_substitute is None
            and get_tier("smoke").verdict.face_metric_substitute == "subject_similarity")


def test_face_metric_substitute_override_is_validated() -> None:
    from audit.config.tiers import get_tier, parse_overrides, validate_overrides
    from audit.parts.registry import InvalidParams

    with pytest.raises(InvalidParams, match=r"unknown metric "
                                            r"'subject_similarty'.*subject_similarity"):
        validate_overrides(get_tier("smoke",
                                    parse_overrides(["face_metric_substitute=subject_similarty"])))


def test_face_metric_substitute_none_turns_the_substitute_off() -> None:
    from audit.config.tiers import get_tier, parse_overrides, validate_overrides

    tier = get_tier("smoke", parse_overrides(["face_metric_substitute=none"]))
    validate_overrides(tier)
    assert tier.verdict.face_metric_substitute is None
