"""Noisy upscaling and restoration purification (audit/parts/transforms/restoration.py)."""

from __future__ import annotations

import pytest
import torch

import audit.parts.transforms.restoration as restoration_module
from audit.parts import TRANSFORMS
from audit.parts.transforms.context import TransformUnavailable, quantize
from audit.parts.transforms.restoration import (
    NoisyUpscaleParams,
    RestorationParams,
    noisy_upscale,
    restoration,
)


def images(n: int = 2, side: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return quantize(
        torch.nn.functional.interpolate(
            torch.rand(n, 3, 4, 4, generator=g), size=side, mode="bilinear"
        )
    )


@pytest.fixture
def nearest_x4(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """A stand-in ×4 upscaler (nearest neighbour) that records the shapes it was given."""
    calls: list[tuple[int, ...]] = []

    def up(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    monkeypatch.setitem(restoration_module.RESTORERS, "realesrgan-x4plus", up)
    return calls


def is_8_bit(x: torch.Tensor) -> bool:
    return bool(torch.equal(x, torch.round(x * 255) / 255)) and x.min() >= 0 and x.max() <= 1


def test_rounding_is_to_the_nearest_level() -> None:
    x = torch.tensor([0.4, 0.6, 1.49, 1.51, 254.6, 300.0, -3.0]) / 255
    assert torch.equal(quantize(x) * 255, torch.tensor([0.0, 1.0, 1.0, 2.0, 255.0, 255.0, 0.0]))


def test_noisy_upscale_shape_range_seed_and_the_upscaler_sees_the_full_size(nearest_x4) -> None:
    x = images()
    params = NoisyUpscaleParams(std=0.1)
    a = noisy_upscale(x, params, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and is_8_bit(a)
    assert nearest_x4 == [(2, 3, 32, 32)]
    assert torch.equal(
        a, noisy_upscale(x, params, torch.Generator().manual_seed(1))
    )  # same seed, same output
    assert not torch.equal(a, noisy_upscale(x, params, torch.Generator().manual_seed(2)))
    # σ is the noise's std in [0,1] units: the noisy images (before upscaling) differ by ≈ σ.
    noisy = restoration_module.seeded_noise(
        torch.full((1, 3, 64, 64), 0.5), 0.1, torch.Generator().manual_seed(0)
    )
    assert abs(float((noisy - 0.5).std()) - 0.1) < 0.005 and is_8_bit(noisy)


def test_restoration_goes_through_a_quarter_and_back(nearest_x4) -> None:
    x = images(side=32)
    out = restoration(x, RestorationParams(), torch.Generator().manual_seed(0))
    assert nearest_x4 == [(2, 3, 8, 8)] and out.shape == x.shape and is_8_bit(out)
    # Without noise it is deterministic whatever the seed; gau-sr's noise follows the seed.
    assert torch.equal(out, restoration(x, RestorationParams(), torch.Generator().manual_seed(5)))
    gau = RestorationParams(noise_std=0.05)
    assert torch.equal(
        restoration(x, gau, torch.Generator().manual_seed(3)),
        restoration(x, gau, torch.Generator().manual_seed(3)),
    )
    assert not torch.equal(
        restoration(x, gau, torch.Generator().manual_seed(3)),
        restoration(x, gau, torch.Generator().manual_seed(4)),
    )


@pytest.mark.parametrize("restorer", ["codeformer", "gfpgan"])
def test_a_missing_face_restorer_is_unavailable_saying_how_to_provide_it(
    restorer: str, nearest_x4, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path))
    with pytest.raises(
        TransformUnavailable,
        match=rf"^unavailable: {restorer} weights not found — .*looked in: {tmp_path}.*Download",
    ):
        restoration(images(), RestorationParams(face_restorer=restorer), torch.Generator())


def test_a_missing_sd_upscaler_is_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(
        TransformUnavailable,
        match=r"^unavailable: sd-x4-upscaler weights not found — .*huggingface-cli",
    ):
        noisy_upscale(images(), NoisyUpscaleParams(upscaler="sd-x4-upscaler"), torch.Generator())


def test_the_parts_are_registered_as_random_and_model_free() -> None:
    for name in ("noisy_upscale", "restoration"):
        part = TRANSFORMS.get(name)
        assert part.random and not part.uses_model


def test_real_esrgan_x4plus_runs_here() -> None:
    """The wheel's own network on this machine's CPU (needs libvulkan1 and libomp5)."""
    try:
        restoration_module._realesrgan()
    except TransformUnavailable as exc:
        pytest.skip(str(exc))
    x = images(n=1, side=16)
    up = restoration_module.realesrgan_x4plus(x)
    assert up.shape == (1, 3, 64, 64) and is_8_bit(up)
    # A flat colour stays that colour: channel order and range as ours (RGB, [0,1]).
    flat = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    assert torch.allclose(
        restoration_module.realesrgan_x4plus(flat).mean((0, 2, 3)), flat[0, :, 0, 0], atol=0.02
    )
    assert torch.equal(up, restoration_module.realesrgan_x4plus(x))  # deterministic
    # 8 px and less: the ncnn network alone returns black; padded, the colour survives.
    small = restoration_module.realesrgan_x4plus(flat[..., :6, :6])
    assert small.shape == (1, 3, 24, 24)
    assert torch.allclose(small.mean((0, 2, 3)), flat[0, :, 0, 0], atol=0.02)
