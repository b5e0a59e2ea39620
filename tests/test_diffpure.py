"""Diffusion purification (audit/parts/transforms/diffpure.py): GrIDPure's windows and merge,
DDSPure's timestep, and the three purifiers on the tiny model."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from audit.parts.transforms.context import TransformContext, quantize
from audit.parts.transforms.diffpure import (
    DdsPureParams,
    GridPureParams,
    LatentDiffPureParams,
    dds_timestep,
    ddspure,
    grid_merge,
    gridpure,
    gridpure_iterate,
    latent_diffpure,
    window_starts,
)


@pytest.mark.parametrize(
    ("side", "window", "starts"),
    [
        (512, 256, [0, 128, 256]),
        (64, 32, [0, 16, 32]),
        (100, 50, [0, 25, 50]),
        (90, 40, [0, 20, 40, 50]),
    ],
)
def test_window_starts_step_half_a_window_and_end_flush_with_the_border(
    side, window, starts
) -> None:
    assert window_starts(side, window) == starts


def coverage(height: int, width: int, window: tuple[int, int]) -> torch.Tensor:
    """How many purified values each pixel averages: a purifier that returns ones, summed."""
    merged = grid_merge(torch.zeros(1, 3, height, width), torch.ones_like, window)
    assert torch.equal(merged, torch.ones_like(merged, dtype=torch.float64))
    # The count itself: windows + the corner window, each adding 1 where it lies.
    total = torch.zeros(height, width)
    for y in window_starts(height, window[0]):
        for x in window_starts(width, window[1]):
            total[y : y + window[0], x : x + window[1]] += 1
    qh, qw = window[0] // 2, window[1] // 2
    for ys in (slice(0, qh), slice(height - qh, height)):
        for xs in (slice(0, qw), slice(width - qw, width)):
            total[ys, xs] += 1
    return total


@pytest.mark.parametrize(
    ("height", "width", "window"), [(512, 512, (256, 256)), (64, 64, (32, 32)), (72, 56, (32, 24))]
)
def test_windows_cover_every_pixel(height: int, width: int, window: tuple[int, int]) -> None:
    total = coverage(height, width, window)
    assert total.min() >= 1
    if (height, width) == (
        512,
        512,
    ):  # the authors' layout: corners and edges 2, inside 4 (plus corner tiles)
        assert total[200, 200] == 4 and total[0, 200] == 2 and total[0, 0] == 2


def test_overlap_averaging_is_exact_on_a_constant_and_on_a_per_pixel_purifier() -> None:
    g = torch.Generator().manual_seed(0)
    constant = torch.full((2, 3, 64, 64), 0.3)
    assert torch.equal(grid_merge(constant, lambda x: x, (32, 32)).float(), constant)
    images = torch.rand(2, 3, 64, 48, generator=g)

    def per_pixel(x: torch.Tensor) -> torch.Tensor:
        return x.double() ** 2 * 0.5 + 0.1

    merged = grid_merge(images, per_pixel, (32, 24))
    torch.testing.assert_close(merged, per_pixel(images), atol=1e-12, rtol=0)
    # The blend with the iteration's input, γ 0.1, rounded to the nearest level each iteration.
    out = gridpure_iterate(images, per_pixel, (32, 24), iterations=1, gamma=0.1)
    assert torch.equal(out, quantize((0.9 * per_pixel(images) + 0.1 * images.double()).float()))


def test_rounding_each_iteration_does_not_drift_like_truncation() -> None:
    """An identity purifier over 20 iterations leaves 8-bit images unchanged (truncation would
    lose up to a level per iteration)."""
    images = quantize(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(
        gridpure_iterate(images, lambda x: x, (16, 16), iterations=20, gamma=0.1), images
    )


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1, 0.5, 1.0, 3.0])
def test_dds_timestep_solves_the_equation(sigma: float) -> None:
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).alphas_cumprod
    t = dds_timestep(alphas, sigma)
    ratio = (1 - alphas.double()) / alphas.double()
    assert abs(float(ratio[t]) - sigma**2) == float((ratio - sigma**2).abs().min())
    assert (
        float(ratio[max(t - 1, 0)]) <= sigma**2 + 1e-12 or t == 0
    )  # the ratio grows with t: t brackets σ²
    assert float(ratio[min(t + 1, len(alphas) - 1)]) >= sigma**2 - 1e-12 or t == len(alphas) - 1


@functools.cache
def tiny() -> Any:
    from audit.diffusion.loading import load_model

    return load_model("tiny")


def context(seed: int) -> TransformContext:
    return TransformContext(tiny(), torch.device("cpu"), torch.Generator().manual_seed(seed))


def faces() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return quantize(
        torch.nn.functional.interpolate(
            torch.rand(2, 3, 4, 4, generator=g), size=32, mode="bilinear"
        )
    )


@pytest.mark.parametrize(
    ("name", "function", "params"),
    [
        ("latent_diffpure", latent_diffpure, LatentDiffPureParams(t=20)),
        ("latent_diffpure-empty", latent_diffpure, LatentDiffPureParams(t=20, prompt="empty")),
        ("ddspure", ddspure, DdsPureParams(sigma=0.1)),
        ("gridpure", gridpure, GridPureParams(t=3, iterations=2)),
    ],
)
def test_the_purifiers_run_on_the_tiny_model_seeded(name: str, function, params) -> None:
    x = faces()
    a = function(x, params, context(1).generator, context=context(1))
    assert a.shape == x.shape and torch.equal(a, quantize(a))
    assert torch.equal(a, function(x, params, context(1).generator, context=context(1)))
    assert (a - x).abs().mean() > 0  # it changed the images
