"""Metrics compute what they claim on real photographs, and say when they cannot."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from audit.metrics import UnknownMetric, get_metric, imperceptibility
from audit.metrics import identity as identity_module


@pytest.fixture(scope="module")
def faces(images: torch.Tensor) -> torch.Tensor:
    return images


@pytest.fixture(scope="module")
def cat() -> torch.Tensor:
    image = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(image, size=(64, 64), mode="bilinear", antialias=True).clamp(0, 1)


def test_identity_similarity_prefers_the_same_person(faces, cat) -> None:
    metric = get_metric("identity_similarity")
    same = metric.compute(faces, faces)
    other = metric.compute(cat, faces)
    noise = metric.compute(torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(0)), faces)
    assert same.missing == 0 and min(same.values) > 0.95
    assert max(other.values) < min(same.values) - 0.05
    assert max(noise.values) < min(same.values) - 0.05 and noise.missing == 2
    assert "whole frame" in noise.notes[0]
    assert same.direction == "down" and "dlib" in same.implementation


def test_face_detection_failure_rate(faces) -> None:
    metric = get_metric("face_detection_failure_rate")
    assert metric.compute(faces, faces).values == [0.0] * 4
    flat = torch.full((2, 3, 64, 64), 0.5)
    assert metric.compute(flat, faces).values == [1.0, 1.0]


def test_brisque_ranks_noise_as_worse(faces) -> None:
    metric = get_metric("brisque")
    clean = metric.compute(faces, faces)
    noisy = metric.compute((faces + 0.15 * torch.randn(faces.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), faces)
    assert len(clean.values) == 4 and all(math.isfinite(v) for v in clean.values)
    assert min(noisy.values) > max(clean.values)
    assert "brisque 0.2.0" in clean.implementation


def test_imperceptibility(faces) -> None:
    same = imperceptibility(faces, faces)
    assert all(v >= 80 for v in same["psnr"].values)  # piq caps identical images at 80 dB
    assert same["ssim"].values == pytest.approx([1.0] * 4, abs=1e-4)
    assert same["linf_255"].values == [0.0] * 4
    shifted = imperceptibility(faces, (faces + 4 / 255).clamp(0, 1))
    assert max(shifted["linf_255"].values) == 4.0
    assert all(20 < v < 60 for v in shifted["psnr"].values)


def test_unknown_metric_lists_known_names() -> None:
    with pytest.raises(UnknownMetric) as info:
        get_metric("identity_similarty")
    assert "did you mean 'identity_similarity'" in str(info.value) and "brisque" in str(info.value)


def test_missing_weights_are_reported_unavailable(faces, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(identity_module, "models_folder", lambda: tmp_path)
    result = identity_module.IdentitySimilarity().compute(faces, faces)
    assert result.values == [] and result.unavailable and "missing" in result.unavailable
