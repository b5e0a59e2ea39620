"""Transforms keep shape and [0,1] range for any input, and do what they say.

Transforms are looked up in the one parts registry (``audit.parts.TRANSFORMS``): a Part whose
``load()`` is the function and whose ``validate`` / ``params_model`` give its parameters.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.images import to_uint8
from audit.parts import TRANSFORMS
from audit.registry import InvalidParams

PARAMS = {
    "jpeg": {"quality": 75},
    "gaussian_blur": {"sigma_px": 1.5},
    "gaussian_noise": {"std": 0.1},
    "uniform_noise": {"amplitude": 0.05},
    "resize": {"factor": 0.5},
    "random_resized_crop": {"min_scale": 0.6, "max_scale": 0.9},
    "level_jitter": {"levels": 1},
}
# The transforms whose output depends on the generator (replicates re-draw them).
RANDOM = {"gaussian_noise", "uniform_noise", "random_resized_crop", "level_jitter"}


def apply(name: str, images: torch.Tensor, seed: int = 0, **params) -> torch.Tensor:
    part = TRANSFORMS.get(name)
    return part.load()(images, part.validate(params or PARAMS[name]), torch.Generator().manual_seed(seed))


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(TRANSFORMS.names()),
    n=st.integers(1, 3),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    seed=st.integers(0, 2**16),
)
def test_shape_and_range_kept(name: str, n: int, h: int, w: int, seed: int) -> None:
    images = torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(seed))
    out = apply(name, images, seed)
    assert out.shape == images.shape
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.isfinite(out).all()


def test_every_registered_transform_has_test_params_and_a_params_model() -> None:
    assert set(PARAMS) == set(TRANSFORMS.names())
    for part in TRANSFORMS:
        assert part.kind == "transform"
        model = part.params_model()
        assert model(**PARAMS[part.name]) == part.validate(PARAMS[part.name])
        assert callable(part.load())
        assert part.description and part.source


def test_random_flag_matches_what_the_transform_does() -> None:
    """The registry's ``random`` flag decides whether a seed enters the cache key and whether
    replicates re-draw the step: it must say the truth about the function."""
    images = torch.rand((2, 3, 24, 24), generator=torch.Generator().manual_seed(0))
    for part in TRANSFORMS:
        a, b = apply(part.name, images, 1), apply(part.name, images, 2)
        assert torch.equal(a, apply(part.name, images, 1)), part.name  # seeded: reproducible
        assert part.random == (not torch.equal(a, b)), part.name
    assert {p.name for p in TRANSFORMS if p.random} == RANDOM


def test_unknown_transform_and_bad_params_are_named() -> None:
    from audit.registry import UnknownPart

    with pytest.raises(UnknownPart, match="did you mean 'jpeg'"):
        TRANSFORMS.get("jpg")
    with pytest.raises(InvalidParams, match=r"unknown field 'qualty'.*did you mean 'quality'"):
        TRANSFORMS.get("jpeg").validate({"qualty": 75})
    with pytest.raises(InvalidParams, match=r"field 'quality'.*less than or equal to 100"):
        TRANSFORMS.get("jpeg").validate({"quality": 175})
    with pytest.raises(InvalidParams, match="field 'levels'"):
        TRANSFORMS.get("level_jitter").validate({"levels": 0})


def test_jpeg_removes_high_frequency_noise_and_quality_orders_error() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand((1, 3, 8, 8), generator=g), size=64, mode="bilinear")
    noisy = (smooth + 0.05 * (2 * torch.rand(smooth.shape, generator=g) - 1)).clamp(0, 1)
    q15 = apply("jpeg", noisy, quality=15)
    q95 = apply("jpeg", noisy, quality=95)
    # Low quality strips high-frequency content: far less pixel-to-pixel variation remains.
    tv = lambda x: (x[..., :, 1:] - x[..., :, :-1]).abs().mean()  # noqa: E731
    assert tv(q15) < 0.8 * tv(noisy)
    assert (q95 - noisy).abs().mean() < (q15 - noisy).abs().mean()


def test_blur_lowers_variation_and_noise_is_seeded() -> None:
    images = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    out = apply("gaussian_blur", images, sigma_px=2.0)
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(out) < 0.5 * tv(images)
    a = apply("gaussian_noise", images, 3, std=0.1)
    b = apply("gaussian_noise", images, 3, std=0.1)
    assert torch.equal(a, b)
    assert not torch.equal(a, apply("gaussian_noise", images, 4, std=0.1))
    assert 0.05 < float((a - images).std()) < 0.15


@settings(max_examples=30, deadline=None)
@given(levels=st.integers(1, 8), seed=st.integers(0, 2**16), side=st.integers(4, 24))
def test_level_jitter_moves_each_pixel_by_at_most_k_levels(levels: int, seed: int, side: int) -> None:
    images = torch.rand((2, 3, side, side), generator=torch.Generator().manual_seed(seed))
    out = apply("level_jitter", images, seed, levels=levels)
    diff = to_uint8(out).to(torch.int16) - to_uint8(images).to(torch.int16)
    assert int(diff.abs().max()) <= levels
    # Output is exactly on the 8-bit grid: what an exploiter's saved file holds.
    assert torch.equal(to_uint8(out).to(torch.float32) / 255, out)


def test_level_jitter_is_the_imperceptible_noise_floor_change(images: torch.Tensor) -> None:
    """±1/255 on the bundled subject: every pixel moves by at most one level, most move at
    all, the draw is seeded, and another seed draws another change (the noise-floor control)."""
    a, b = apply("level_jitter", images, 7919), apply("level_jitter", images, 7919)
    diff = to_uint8(a).to(torch.int16) - to_uint8(images).to(torch.int16)
    assert torch.equal(a, b)
    assert int(diff.abs().max()) == 1 and float((diff != 0).float().mean()) > 0.5
    assert not torch.equal(a, apply("level_jitter", images, 7920))
