"""Transforms keep shape and [0,1] range for any input, and do what they say."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.transforms.corruptions import TRANSFORMS

PARAMS = {
    "jpeg": {"quality": 75},
    "gaussian_blur": {"sigma_px": 1.5},
    "gaussian_noise": {"std": 0.1},
    "uniform_noise": {"amplitude": 0.05},
    "resize": {"factor": 0.5},
    "random_resized_crop": {"min_scale": 0.6, "max_scale": 0.9},
}


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(TRANSFORMS)),
    n=st.integers(1, 3),
    h=st.integers(8, 40),
    w=st.integers(8, 40),
    seed=st.integers(0, 2**16),
)
def test_shape_and_range_kept(name: str, n: int, h: int, w: int, seed: int) -> None:
    images = torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(seed))
    params_model, fn = TRANSFORMS[name]
    out = fn(images, params_model(**PARAMS[name]), torch.Generator().manual_seed(seed))
    assert out.shape == images.shape
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.isfinite(out).all()


def test_all_transforms_have_test_params() -> None:
    assert set(PARAMS) == set(TRANSFORMS)


def test_jpeg_removes_high_frequency_noise_and_quality_orders_error() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand((1, 3, 8, 8), generator=g), size=64, mode="bilinear")
    noisy = (smooth + 0.05 * (2 * torch.rand(smooth.shape, generator=g) - 1)).clamp(0, 1)
    params_model, fn = TRANSFORMS["jpeg"]
    q15 = fn(noisy, params_model(quality=15), g)
    q95 = fn(noisy, params_model(quality=95), g)
    # Low quality strips high-frequency content: far less pixel-to-pixel variation remains.
    tv = lambda x: (x[..., :, 1:] - x[..., :, :-1]).abs().mean()  # noqa: E731
    assert tv(q15) < 0.8 * tv(noisy)
    assert (q95 - noisy).abs().mean() < (q15 - noisy).abs().mean()


def test_blur_lowers_variation_and_noise_is_seeded() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand((2, 3, 32, 32), generator=g)
    pm, blur = TRANSFORMS["gaussian_blur"]
    out = blur(images, pm(sigma_px=2.0), g)
    tv = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(out) < 0.5 * tv(images)
    pm, noise = TRANSFORMS["gaussian_noise"]
    a = noise(images, pm(std=0.1), torch.Generator().manual_seed(3))
    b = noise(images, pm(std=0.1), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
