"""Transforms keep shape and [0,1] range for any input, are reproducible per seed, and do what
they say: JPEG is Pillow's codec, blur attenuates a grating by the Gaussian's transfer
function, crops keep their scale range, noise has its stated spread, denoisers and TVM lower
the error of a degraded image.

Transforms are looked up in the one parts registry (``audit.parts.TRANSFORMS``): a Part whose
``load()`` is the function and whose ``validate`` / ``params_model`` give its parameters.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from audit.data.images import to_uint8
from audit.parts import TRANSFORMS
from audit.parts.registry import InvalidParams
from audit.parts.transforms.context import TransformContext

PARAMS = {
    "jpeg": {"quality": 75},
    "gaussian_blur": {"sigma_px": 1.5},
    "random_gaussian_blur": {"kernel_size": 7, "sigma_px": [0.1, 2.0]},
    "gaussian_noise": {"std": 0.1},
    "uniform_noise": {"amplitude": 0.05},
    "resize": {"factor": 0.5},
    "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
    "level_jitter": {"levels": 1},
    "denoise_gaussian": {"max_sigma_px": 2.0, "steps": 11},
    "denoise_wavelet": {},
    "denoise_nl_means": {},
    "tvm": {"iterations": 100},
    "impress": {"iterations": 2, "perceptual": "1-ssim"},
    "noisy_upscale": {"std": 0.05},
    "restoration": {"noise_std": 0.05},
    "latent_diffpure": {"t": 4},
    "ddspure": {"sigma": 0.05},
    "gridpure": {"t": 2, "iterations": 1},
}
# Purifiers that run a network (the model's VAE, Real-ESRGAN): once per test at fixed sizes, not
# across hypothesis' examples; their own tests: test_impress, test_restoration, test_diffpure.
NETWORK = {"impress", "noisy_upscale", "restoration", "latent_diffpure", "ddspure",
           "gridpure"}
# The transforms whose output depends on the generator (replicates re-draw them).
RANDOM = {"gaussian_noise", "uniform_noise", "random_resized_crop", "level_jitter",
          "random_gaussian_blur", "tvm", "impress", "noisy_upscale", "restoration",
          "latent_diffpure", "ddspure", "gridpure"}
# The transforms with a torch-differentiable form (``load().differentiable``).
DIFFERENTIABLE = {"jpeg", "gaussian_blur", "random_gaussian_blur", "gaussian_noise",
                  "uniform_noise", "resize",
                  "random_resized_crop", "impress"}


@functools.cache
def purifier_model() -> Any:
    """The purifiers' model: the built-in tiny model."""
    from audit.diffusion.loading import load_model

    return load_model("tiny")


def apply(name: str, images: torch.Tensor, seed: int = 0, **params) -> torch.Tensor:
    part = TRANSFORMS.get(name)
    generator = torch.Generator().manual_seed(seed)
    extra = ({"context": TransformContext(purifier_model(), torch.device("cpu"), generator)}
             if part.uses_model else {})
    return part.load()(images, part.validate(params or PARAMS[name]), generator, **extra)


def grating(
        frequency: float, width: int = 128, height: int = 16,
        amplitude: float = 0.25) -> torch.Tensor:
    """0.5 + amplitude·cos(2π f x) along x, constant along y: one 1×3×H×W image. The phase puts a
    maximum on pixel 0, so reflect padding continues the cosine exactly."""
    x = torch.arange(width, dtype=torch.float64)
    row = 0.5 + amplitude * torch.cos(2 * math.pi * frequency * x)
    return row.expand(1, 3, height, width).float().contiguous()


def grating_amplitude(images: torch.Tensor, frequency: float, margin: int = 24) -> torch.Tensor:
    """Amplitude of the cos(2π f x) component of each image's mean row, fitted away from the
    borders."""
    rows = images.double().mean(dim=(1, 2))[:, margin:-margin]
    x = torch.arange(margin, images.shape[-1] - margin, dtype=torch.float64)
    basis = torch.stack([torch.ones_like(x), torch.cos(2 * math.pi * frequency * x),
                         torch.sin(2 * math.pi * frequency * x)], 1)
    coef = torch.linalg.lstsq(basis.expand(len(rows), -1, -1), rows.unsqueeze(-1)).solution[..., 0]
    return coef[:, 1:].norm(dim=1)


# -- every transform ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(set(TRANSFORMS.names()) - NETWORK)),
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
        # What the plan records re-validates to the same parameters (stages re-validate it).
        assert part.validate(
            part.validate(PARAMS[part.name]).model_dump(mode="json")) == part.validate(
                PARAMS[part.name])
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


def test_differentiable_forms_are_reachable_from_the_part_and_pass_gradients() -> None:
    assert {p.name for p in TRANSFORMS if p.differentiable} == DIFFERENTIABLE
    images = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    for part in TRANSFORMS:
        fn = part.load()
        assert hasattr(fn, "differentiable") == part.differentiable, part.name
        if not part.differentiable or part.name in NETWORK:  # IMPRESS's: tests/test_eot.py
            continue
        x = (0.25 + 0.5 * images).requires_grad_(True)  # away from the clamp
        out = fn.differentiable(x, part.validate(PARAMS[part.name]),
                                torch.Generator().manual_seed(3))
        assert out.shape == x.shape
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        assert (x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum())
                > 0), part.name


def test_unknown_transform_and_bad_params_are_named() -> None:
    from audit.parts.registry import UnknownPart

    with pytest.raises(UnknownPart, match="did you mean 'jpeg'"):
        TRANSFORMS.get("jpg")
    with pytest.raises(InvalidParams, match=r"unknown field 'qualty'.*did you mean 'quality'"):
        TRANSFORMS.get("jpeg").validate({"qualty": 75})
    with pytest.raises(InvalidParams, match=r"field 'quality'.*less than or equal to 100"):
        TRANSFORMS.get("jpeg").validate({"quality": 175})
    with pytest.raises(InvalidParams, match="field 'levels'"):
        TRANSFORMS.get("level_jitter").validate({"levels": 0})
    with pytest.raises(InvalidParams, match="kernel_size must be odd"):
        TRANSFORMS.get("random_gaussian_blur").validate({"kernel_size": 6})
    with pytest.raises(InvalidParams, match=r"sigma_px must be \[min, max\]"):
        TRANSFORMS.get("random_gaussian_blur").validate({"sigma_px": [2.0, 0.1]})
    with pytest.raises(InvalidParams, match=r"scale must be \[min, max\] area fractions"):
        TRANSFORMS.get("random_resized_crop").validate({"scale": [0.9, 0.5]})
    with pytest.raises(InvalidParams, match=r"scale must be .*got \[0.5, 1.5\]"):
        TRANSFORMS.get("random_resized_crop").validate({"scale": [0.5, 1.5]})


# -- JPEG --------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", [15, 75, 95])
def test_jpeg_is_a_pillow_encode_decode_at_that_quality(images: torch.Tensor, quality: int) -> None:
    expected = []
    for image in to_uint8(images):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
        expected.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    out = apply("jpeg", images, quality=quality)
    assert torch.equal(to_uint8(out), torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2))
    assert torch.equal(out, to_uint8(out).float() / 255)  # exactly the decoded 8-bit file


def test_jpeg_removes_high_frequency_noise_and_quality_orders_error() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand((1, 3, 8, 8), generator=g), size=64,
                                             mode="bilinear")
    noisy = (smooth + 0.05 * (2 * torch.rand(smooth.shape, generator=g) - 1)).clamp(0, 1)
    q15 = apply("jpeg", noisy, quality=15)
    q95 = apply("jpeg", noisy, quality=95)
    # Low quality strips high-frequency content: far less pixel-to-pixel variation remains.
    tv = lambda x: (x[..., :, 1:] - x[..., :, :-1]).abs().mean()  # noqa: E731
    assert tv(q15) < 0.8 * tv(noisy)
    assert (q95 - noisy).abs().mean() < (q15 - noisy).abs().mean()


@pytest.mark.parametrize("quality", [15, 75])
def test_differentiable_jpeg_approximates_libjpeg(images: torch.Tensor, quality: int) -> None:
    """kornia's codec is a surrogate of libjpeg: far closer to Pillow's output than the
    compression error itself (what an adaptive protector needs from it)."""
    part = TRANSFORMS.get("jpeg")
    params = part.validate({"quality": quality})
    pil = part.load()(images, params, torch.Generator())
    diff = part.load().differentiable(images, params)
    assert float((diff - pil).abs().mean()) < 0.35 * float((pil - images).abs().mean())


# -- Gaussian blur -----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(1.0, 4.0), frequency=st.floats(0.01, 0.12))
def test_blur_attenuates_a_grating_by_the_gaussian_transfer_function(
        sigma: float, frequency: float) -> None:
    """A cosine grating of f cycles/pixel comes out scaled by exp(−2π²σ²f²)."""
    image = grating(frequency)
    out = apply("gaussian_blur", image, sigma_px=sigma)
    measured = float(grating_amplitude(out, frequency)[0] / grating_amplitude(image, frequency)[0])
    assert measured == pytest.approx(math.exp(-2 * math.pi**2 * sigma**2 * frequency**2), abs=2e-3)


def test_blur_sigma5_removes_pixel_scale_detail_and_keeps_coarse_structure() -> None:
    fine, coarse = grating(0.25), grating(1 / 64)
    # < 1/4 of an 8-bit level
    assert float(grating_amplitude(apply("gaussian_blur", fine, sigma_px=5), 0.25)[0]) < 1e-3
    kept = float(grating_amplitude(apply("gaussian_blur", coarse, sigma_px=5), 1 / 64)[0] / 0.25)
    assert kept == pytest.approx(math.exp(-2 * math.pi**2 * 25 / 64**2), abs=3e-3)


def _truncated_transfer(sigma: float, kernel_size: int, frequency: float) -> float:
    """DTFT at ``frequency`` of the sampled, truncated, normalised Gaussian kernel."""
    n = np.arange(kernel_size) - kernel_size // 2
    k = np.exp(-(n**2) / (2 * sigma**2))
    k /= k.sum()
    return float((k * np.cos(2 * np.pi * frequency * n)).sum())


def test_random_blur_draws_each_image_its_own_sigma_within_the_range() -> None:
    """MetaCloak's blur (kernel 7, σ ∈ [0.1, 2]): every image's attenuation lies between those of
    σ = 0.1 and σ = 2 for that kernel, and the draws spread over the range."""
    f = 0.1
    image = grating(f).repeat(64, 1, 1, 1)
    out = apply("random_gaussian_blur", image, 5, kernel_size=7, sigma_px=[0.1, 2.0])
    ratio = (grating_amplitude(out, f) / grating_amplitude(image, f)).numpy()
    lo, hi = _truncated_transfer(2.0, 7, f), _truncated_transfer(0.1, 7, f)
    assert ((ratio >= lo - 1e-4) & (ratio <= hi + 1e-4)).all()
    assert ratio.min() < lo + 0.1 * (hi - lo) and ratio.max() > hi - 0.1 * (hi - lo)
    assert len(np.unique(ratio.round(6))) > 60  # one σ per image


# -- additive noise ----------------------------------------------------------------------------


@pytest.mark.parametrize("given_params", [{"std": 0.05}, {"variance": 0.0025}])
def test_gaussian_noise_has_the_stated_spread(given_params: dict) -> None:
    gray = torch.full((1, 3, 256, 256), 0.5)
    out = apply("gaussian_noise", gray, 4, **given_params)
    noise = (out - gray).double()
    assert float(noise.std()) == pytest.approx(0.05, rel=0.01)
    assert float(noise.var()) == pytest.approx(0.0025, rel=0.02)
    assert abs(float(noise.mean())) < 1e-3


def test_gaussian_noise_variance_and_std_resolve_consistently() -> None:
    part = TRANSFORMS.get("gaussian_noise")
    impress = part.validate({"variance": 0.15})
    assert (impress.std == pytest.approx(math.sqrt(0.15)) and impress.std
            == pytest.approx(0.387, abs=5e-4))
    assert impress.std**2 == pytest.approx(impress.variance)
    recorded = impress.model_dump(mode="json")
    assert recorded == {"std": math.sqrt(0.15), "variance": 0.15}  # the std used is recorded
    assert part.validate(recorded) == impress
    assert part.validate({"std": 0.1}).model_dump(mode="json") == {"std": 0.1}
    # Same noise whichever way the spread is given.
    x = torch.full((1, 3, 16, 16), 0.5)
    assert torch.equal(apply("gaussian_noise", x, 1, variance=0.04),
                       apply("gaussian_noise", x, 1, std=0.2))
    with pytest.raises(InvalidParams, match="exactly one of std or variance"):
        part.validate({})
    with pytest.raises(InvalidParams, match="std 0.15 and variance 0.15 disagree"):
        part.validate({"std": 0.15, "variance": 0.15})
    with pytest.raises(InvalidParams, match="field 'variance'"):
        part.validate({"variance": -0.1})


def test_uniform_noise_stays_within_its_amplitude_with_the_uniform_spread() -> None:
    gray = torch.full((1, 3, 256, 256), 0.5)
    noise = (apply("uniform_noise", gray, 2, amplitude=0.05) - gray).double()
    assert float(noise.abs().max()) <= 0.05 + 1e-7
    assert float(noise.std()) == pytest.approx(0.05 / math.sqrt(3), rel=0.01)


# -- resizing and cropping ---------------------------------------------------------------------


def test_resize_half_keeps_coarse_structure_and_removes_the_finest() -> None:
    """Down by ½ then up: the Nyquist-rate grating is gone, a slow one passes nearly intact."""
    nyquist = grating(0.5)
    assert float(grating_amplitude(apply("resize", nyquist, factor=0.5), 0.5)[0]) < 0.02 * 0.25
    slow = grating(1 / 32)
    assert float(grating_amplitude(apply("resize", slow, factor=0.5), 1
                                   / 32)[0]) == pytest.approx(0.25, rel=0.03)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.5, 1.0), (0.6, 0.9)])
def test_crop_keeps_its_stated_scale_and_ratio_range(scale: tuple[float, float]) -> None:
    from audit.parts.transforms.corruptions import crop_box

    part = TRANSFORMS.get("random_resized_crop")
    params = part.validate({"scale": list(scale), "ratio": [0.75, 4 / 3]})
    image = torch.zeros(3, 128, 128)
    g = torch.Generator().manual_seed(0)
    boxes = np.array([crop_box(image, params, g) for _ in range(500)])
    top, left, h, w = boxes.T
    area = h * w / 128**2
    rounding = (128 + 128 + 1) / 128**2  # w and h are rounded to whole pixels
    assert area.min() >= scale[0] - rounding and area.max() <= scale[1] + rounding
    assert area.min() < scale[0] + 0.05 * (scale[1] - scale[0]) + rounding  # the range is used
    assert area.max() > scale[1] - 0.05 * (scale[1] - scale[0]) - rounding
    aspect = w / h
    assert aspect.min() >= 0.75 * (1 - 0.03) and aspect.max() <= 4 / 3 * (1 + 0.03)
    assert (top >= 0).all() and (left >= 0).all() and (top + h
                                                       <= 128).all() and (left + w <= 128).all()


def test_crop_output_is_torchvision_resized_crop_of_the_drawn_box() -> None:
    from torchvision.transforms.v2.functional import resized_crop

    from audit.parts.transforms.corruptions import crop_box

    images = torch.rand((3, 3, 48, 48), generator=torch.Generator().manual_seed(1))
    part = TRANSFORMS.get("random_resized_crop")
    params = part.validate(PARAMS["random_resized_crop"])
    g = torch.Generator().manual_seed(9)
    boxes = [crop_box(image, params, g) for image in images]
    expected = torch.stack([resized_crop(im, *box, size=[48, 48], antialias=True) for im,
                            box in zip(images, boxes, strict=True)])
    assert torch.allclose(apply("random_resized_crop", images, 9, **PARAMS["random_resized_crop"]),
                          expected.clamp(0, 1))


# -- denoisers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["denoise_gaussian", "denoise_wavelet", "denoise_nl_means"])
@pytest.mark.parametrize("std", [0.05, 0.1])
def test_denoisers_lower_the_error_of_a_noised_image(
        images: torch.Tensor, name: str, std: float) -> None:
    noisy = (images + std
             * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    part = TRANSFORMS.get(name)
    denoised = part.load()(noisy, part.validate({}), torch.Generator())  # the part's defaults
    mse = lambda x: float(((x - images) ** 2).mean())  # noqa: E731
    assert mse(denoised) < 0.8 * mse(noisy)


def test_gaussian_denoiser_calibrates_more_smoothing_for_more_noise(images: torch.Tensor) -> None:
    """J-invariant calibration (Aydin's Gaussian denoiser): σ* grows with the noise level."""
    from audit.parts.transforms.denoise import GaussianDenoiseParams, calibrated_sigma

    params = GaussianDenoiseParams()
    sigmas = []
    for std in (0.0, 0.05, 0.15, 0.3):
        noisy = (images + std
                 * torch.randn(
                     images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
        sigmas.append(np.mean([calibrated_sigma(im.permute(1, 2, 0).double().numpy(), params)
                               for im in noisy]))
    assert sigmas == sorted(sigmas) and len(set(sigmas)) == 4 and sigmas[-1] <= params.max_sigma_px


# -- TVM ---------------------------------------------------------------------------------------


def _dropped(images: torch.Tensor, rate: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the image with ``rate`` of its values replaced by random values, the keep mask)."""
    g = torch.Generator().manual_seed(seed)
    keep = (torch.rand(images.shape, generator=g) >= rate).float()
    garbage = torch.rand(images.shape, generator=g)
    return keep * images + (1 - keep) * garbage, keep


def test_tvm_reconstructs_dropped_values_closer_than_the_dropped_image(
        images: torch.Tensor) -> None:
    from audit.parts.transforms.tvm import tvm_solve

    x = images[0].double()
    corrupted, keep = _dropped(images[0], 0.02, 0)
    z = tvm_solve(corrupted, keep, 0.01, 1000)
    mse = lambda a: float(((a.double() - x) ** 2).mean())  # noqa: E731
    assert mse(z) < 0.1 * mse(corrupted)
    # The solver never reads the dropped values: other garbage there, same reconstruction.
    other, _ = _dropped(images[0], 0.02, 0)
    other = keep * images[0] + (1 - keep) * torch.zeros_like(other)
    assert torch.allclose(tvm_solve(other, keep, 0.01, 1000), z, atol=1e-9)


def test_tvm_solver_converges_and_lowers_the_objective(images: torch.Tensor) -> None:
    """Chambolle-Pock on ‖keep ⊙ (z − x)‖₂ + λ TV₂(z): below the objective at x, and 1000
    iterations are within far less than one 8-bit level of 3000 (the cvxpy/Clarabel optimum
    was within 1.5e-4 at 64 px when checked; see audit/parts/transforms/tvm.py)."""
    from audit.parts.transforms.tvm import tvm_objective, tvm_solve

    x = images[0].double()
    _, keep = _dropped(images[0], 0.02, 1)
    keep = keep.double()
    z1000, z3000 = tvm_solve(x, keep, 0.01, 1000), tvm_solve(x, keep, 0.01, 3000)
    assert tvm_objective(z3000, x, keep, 0.01) <= tvm_objective(z1000, x, keep, 0.01) + 1e-6
    assert tvm_objective(z1000, x, keep, 0.01) < tvm_objective(x, x, keep, 0.01)
    assert float((z1000 - z3000).abs().max()) < 0.5 / 255
    # A stronger TV weight smooths more: less total variation left.
    def tv(z: torch.Tensor) -> float:
        return float((z[:, 1:] - z[:, :-1]).abs().sum() + (z[:, :, 1:] - z[:, :, :-1]).abs().sum())

    assert tv(tvm_solve(x, keep, 0.1, 1000)) < tv(z1000) < tv(x)


def test_tvm_works_at_its_size_and_returns_the_input_size(images: torch.Tensor) -> None:
    big = torch.nn.functional.interpolate(
        images[:1], size=128, mode="bilinear", align_corners=False)
    out = apply("tvm", big, 0, work_size=32, iterations=300)
    assert out.shape == big.shape
    # Worked at 32 px: no detail finer than 32 px survives, coarse content does.
    down_up = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(big, size=32, mode="bicubic", antialias=True), size=128,
        mode="bicubic")
    assert float((out - down_up.clamp(0, 1)).abs().mean()) < 0.02
    assert float((out - big).abs().mean()) < 0.1


# -- the noise-floor control -------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(levels=st.integers(1, 8), seed=st.integers(0, 2**16), side=st.integers(4, 24))
def test_level_jitter_moves_each_pixel_by_at_most_k_levels(
        levels: int, seed: int, side: int) -> None:
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
