"""The papers' image-quality and distribution metrics: IQS, CLIP-IQAC, Q, FID, PRD, LPIPS, and
PhotoGuard's edit similarities.

Weight-needing metrics are tested as *logic tests*: a small stand-in network goes through the
metric's own code path (preprocessing, aggregation, units, direction), because the real weights
download at run time and are not reachable here. Without their weights each must say so at once
(< 1 s) and name what is missing and where it looked. Weight-free metrics are checked against
their reference library's values on fixed images to 1e-4.
"""

from __future__ import annotations

import functools
import importlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data as skdata

from audit.parts.metrics import clip_quality, distribution, edits
from audit.parts.metrics.clip_quality import ClipIqac, ClipNetwork, ImageQualityScore, QualityQ
from audit.parts.metrics.distribution import (
    FeatureNetwork,
    FrechetInceptionDistance,
    PRDPrecision,
    PRDRecall,
)

# The module (the package exports its function of the same name).
imperceptibility = importlib.import_module("audit.parts.metrics.imperceptibility")

# -- fixed images ------------------------------------------------------------------------------


def _photo(name: str, side: int = 64) -> torch.Tensor:
    image = torch.from_numpy(getattr(skdata, name)()).float()
    image = image[..., None].repeat(1, 1, 3) if image.ndim == 2 else image[..., :3]
    return F.interpolate(image.permute(2, 0, 1)[None]
                         / 255, size=(side, side), mode="area").clamp(0, 1)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Four fixed photographs (scikit-image's data), 64 px."""
    return torch.cat([_photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket")])


def _noisy(images: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images + std * torch.randn(images.shape, generator=g)).clamp(0, 1)


# -- a CLIP stand-in: "quality" is smoothness -------------------------------------------------
class _StandInClip(torch.nn.Module):
    """Image embedding (smoothness, roughness); the good/high-quality prompt embeds as (1, 0),
    the bad/low-quality one as (0, 1). So smooth images score as good, noisy ones as bad."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        rough = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)) * 10
        return torch.stack([torch.ones_like(rough), rough], dim=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.eye(2)[tokens]


def _tokenize(prompts) -> torch.Tensor:
    return torch.tensor([0 if ("high-quality" in p or "good" in p) else 1 for p in prompts])


def _preprocess(pil) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


STAND_IN_CLIP = ClipNetwork(_StandInClip(), _preprocess, _tokenize, "smoothness stand-in")


class _FixedEmbedding(torch.nn.Module):
    """Every image embeds as the same vector (to pin the units)."""

    def __init__(self, vector: list[float]) -> None:
        super().__init__()
        self.vector = torch.tensor(vector)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.vector.expand(len(x), -1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.eye(2)[tokens]


def _fixed(vector: list[float]) -> ClipNetwork:
    return ClipNetwork(_FixedEmbedding(vector), _preprocess, _tokenize, f"fixed {vector}")


# -- IQS and CLIP-IQAC -------------------------------------------------------------------------
def test_iqs_logic_units_are_10e3_cosine_differences(photos) -> None:
    aligned = ImageQualityScore(_fixed([1.0, 0.0])).compute(photos, photos)
    assert aligned.values == pytest.approx([1000.0] * 4)  # cos 1 − cos 0, × 10³
    between = ImageQualityScore(_fixed([1.0, 1.0])).compute(photos, photos)
    assert between.values == pytest.approx([0.0] * 4, abs=1e-4)
    low = ImageQualityScore(_fixed([0.0, 2.0])).compute(photos, photos)
    assert low.values == pytest.approx([-1000.0] * 4) and low.mean == pytest.approx(-1000.0)
    assert (aligned.direction == "down" and "stand-in" in aligned.implementation and aligned.level
            == "image")


def test_iqs_logic_direction_noisier_generations_score_lower(photos) -> None:
    metric = ImageQualityScore(STAND_IN_CLIP)
    clean, noisy = metric.compute(photos, photos), metric.compute(_noisy(photos, 0.2), photos)
    assert len(clean.values) == len(noisy.values) == 4  # one value per image, in slot order
    assert all(n < c for n, c in zip(noisy.values, clean.values, strict=True))
    assert noisy.mean < clean.mean  # direction "down": the noisy set is the better-protected one


def test_clip_iqac_logic_softmax_of_100_cosines(photos) -> None:
    good = ClipIqac(_fixed([1.0, 0.0])).compute(photos, photos)
    # softmax(100·(1, 0)): p_good − p_bad = tanh 50
    assert good.values == pytest.approx([math.tanh(50.0)] * 4)
    even = ClipIqac(_fixed([1.0, 1.0])).compute(photos, photos)
    assert even.values == pytest.approx([0.0] * 4, abs=1e-9)
    slight = ClipIqac(_fixed([1.0, 0.99])).compute(photos, photos)
    c = 1 / math.sqrt(1 + 0.99**2)
    # float32 embeddings
    assert slight.values[0] == pytest.approx(math.tanh(50 * (c - 0.99 * c)), rel=1e-5)
    metric = ClipIqac(STAND_IN_CLIP)
    assert metric.compute(_noisy(photos, 0.2), photos).mean < metric.compute(photos, photos).mean


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=8))
def test_clip_iqac_lies_in_minus_one_one_and_is_antisymmetric(pairs) -> None:
    cosines = torch.tensor(pairs, dtype=torch.float64)
    values = clip_quality.iqac_values(cosines)
    swapped = clip_quality.iqac_values(cosines.flip(1))
    assert all(-1 <= v <= 1 for v in values)
    assert values == pytest.approx([-v for v in swapped], abs=1e-12)


# -- Q -----------------------------------------------------------------------------------------
def test_q_logic_renormalises_liqe_and_averages_with_clip_iqac(photos) -> None:
    assert clip_quality.q_values([5.0, 1.0, 3.0], [1.0,
                                                   -1.0, 0.0]) == pytest.approx([1.0, -1.0, 0.0])
    # (4 − 3)/2 = 0.5, averaged with 0
    assert clip_quality.q_values([4.0], [0.0]) == pytest.approx([0.25])
    with pytest.raises(ValueError, match="image by image"):
        clip_quality.q_values([3.0], [0.0, 0.0])
    liqe = QualityQ(_fixed([1.0, 1.0]), liqe=lambda x: [5.0] * len(x), liqe_label="constant 5")
    result = liqe.compute(photos, photos)
    assert result.values == pytest.approx([0.5] * 4)  # (1 + 0)/2: LIQE at its top, CLIP-IQAC even
    assert "constant 5" in result.implementation and result.direction == "down"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 5), st.floats(-1, 1)), min_size=1, max_size=8))
def test_q_lies_in_minus_one_one_and_grows_with_each_part(pairs) -> None:
    liqe, iqac = [p[0] for p in pairs], [p[1] for p in pairs]
    values = clip_quality.q_values(liqe, iqac)
    assert all(-1 - 1e-12 <= v <= 1 + 1e-12 for v in values)
    higher = clip_quality.q_values([min(5.0, s + 0.5) for s in liqe], iqac)
    assert all(h >= v - 1e-12 for h, v in zip(higher, values, strict=True))


def test_q_without_liqe_is_unavailable_and_says_why(photos) -> None:
    result = QualityQ(STAND_IN_CLIP).compute(photos, photos)
    assert (result.values == [] and "pyiqa" in result.unavailable
            and "clip_iqac" in result.unavailable)


# -- FID ---------------------------------------------------------------------------------------
def _pooled(images: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(images.float(), 4).flatten(1).double()


def _counting_network() -> tuple[FeatureNetwork, list[int]]:
    calls: list[int] = []

    def extract(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return _pooled(images)

    return FeatureNetwork(extract, "4×4 average pool"), calls


def test_frechet_distance_equals_piq_and_scipy() -> None:
    import piq
    import scipy.linalg

    g = torch.Generator().manual_seed(0)
    for n, m in ((30, 20), (12, 5)):
        x = torch.rand(n, 48, generator=g, dtype=torch.float64)
        y = 1.3 * torch.rand(m, 48, generator=g, dtype=torch.float64) + 0.1
        ours = distribution.frechet_distance(x, y)
        theirs = float(piq.FID()(x, y))
        assert ours == pytest.approx(theirs, rel=1e-4)
        sx, sy = np.cov(x.numpy(), rowvar=False), np.cov(y.numpy(), rowvar=False)
        root = scipy.linalg.sqrtm(sx @ sy).real
        exact = float(((x.mean(0)
                        - y.mean(0)) ** 2).sum()) + np.trace(sx) + np.trace(sy) - 2 * np.trace(root)
        assert ours == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        distribution.frechet_distance(torch.rand(1, 4), torch.rand(3, 4))


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**16), st.floats(0, 3))
def test_frechet_distance_is_symmetric_non_negative_and_zero_on_itself(
        n: int, m: int, seed: int, shift: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randn(m, 6, generator=g, dtype=torch.float64) + shift
    d = distribution.frechet_distance(x, y)
    assert d == pytest.approx(distribution.frechet_distance(y, x), rel=1e-9, abs=1e-9)
    assert d >= -1e-9 and abs(distribution.frechet_distance(x, x)) < 1e-9


def test_fid_logic_one_value_per_set_direction_and_caution(photos) -> None:
    network, calls = _counting_network()
    metric = FrechetInceptionDistance(network)
    generated = torch.cat([photos, photos.flip(-1)])
    near = metric.compute(generated, photos)
    far = metric.compute(_noisy(generated, 0.4), photos)
    assert near.level == far.level == "set" and len(near.values) == 1
    # further from the clean images: higher FID, better protection ("up")
    assert far.values[0] > near.values[0]
    assert (near.direction == "up" and near.values[0]
            == pytest.approx(distribution.frechet_distance(_pooled(generated), _pooled(photos))))
    assert ("8 generated vs 4 reference images" in near.caution
            and str(distribution.FID_MIN_IMAGES) in near.caution)
    assert near.caution in near.notes
    assert calls == [8, 4, 8]  # the reference's features are computed once and kept
    too_few = metric.compute(photos[:1], photos)
    assert (too_few.unavailable and "at least 2 images" in too_few.unavailable and too_few.level
            == "set")


def test_fid_without_caution_on_large_sets(monkeypatch) -> None:
    monkeypatch.setattr(distribution, "FID_MIN_IMAGES", 4)
    network, _ = _counting_network()
    g = torch.Generator().manual_seed(1)
    result = FrechetInceptionDistance(network).compute(torch.rand(6, 3, 8, 8, generator=g),
                                                       torch.rand(5, 3, 8, 8, generator=g))
    assert result.caution is None and len(result.notes) == 1


# -- PRD (Sajjadi et al. 2018) -------------------------------------------------------------------
def test_prd_curve_on_known_histograms() -> None:
    precision, recall = distribution.prd_curve(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    assert precision.max() == pytest.approx(1.0) and recall.max() == pytest.approx(0.5, abs=1e-6)
    precision, recall = distribution.prd_curve(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
    f8, f18 = distribution.f_beta(precision, recall, 8), distribution.f_beta(
        precision, recall, 1 / 8)
    assert f8 == pytest.approx(1.0, abs=1e-3) and f18 == pytest.approx(1.0, abs=1e-3)
    precision, recall = distribution.prd_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert precision.max() == 0 and recall.max() == 0


def test_prd_logic_mode_dropping_keeps_precision_and_loses_recall() -> None:
    """Sajjadi et al.'s example: the generations cover one of the reference's two modes. PRD:
    α(λ) = min(λ/2, 1), β(λ) = min(1/2, 1/λ), so F_1/8 = 1.015625·0.5/0.515625 ≈ 0.985 (at λ = 2)
    and F_8 = 65·0.5/64.5 ≈ 0.504."""
    a, b = torch.zeros(8), torch.ones(8) * 10
    generated = a.repeat(30, 1)
    reference = torch.cat([a.repeat(15, 1), b.repeat(15, 1)])
    precision, recall = distribution.prd_scores(generated, reference)
    assert precision == pytest.approx(1.015625 * 0.5 / 0.515625, abs=2e-3)
    assert recall == pytest.approx(65 * 0.5 / 64.5, abs=2e-3)
    same = distribution.prd_scores(reference, reference)
    assert same[0] == pytest.approx(1.0, abs=1e-3) and same[1] == pytest.approx(1.0, abs=1e-3)
    # fixed seeds: repeatable
    assert distribution.prd_scores(generated, reference) == (precision, recall)


def test_prd_metrics_logic(photos) -> None:
    network = FeatureNetwork(_pooled, "4×4 average pool")
    generated = torch.cat([photos] * 6)
    for cls, index in ((PRDPrecision, 0), (PRDRecall, 1)):
        result = cls(network).compute(generated, photos)
        assert result.level == "set" and result.direction == "down" and len(result.values) == 1
        assert result.values[0] == pytest.approx(distribution.prd_scores(
            _pooled(generated), _pooled(photos))[index])
        assert 0 <= result.values[0] <= 1 and "fewer than 20" in result.caution
        far = cls(network).compute(torch.zeros_like(generated), photos)
        # generations unlike the clean set: lower, better protection
        assert far.values[0] < result.values[0]


# -- LPIPS -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_in_lpips() -> torch.nn.Module:
    """lpips's own LPIPS (its bundled linear heads) on a randomly initialised AlexNet backbone."""
    torch.manual_seed(0)
    return imperceptibility.lpips_network(None, net="alex")


def test_lpips_logic_zero_on_itself_and_growing_with_the_perturbation(
        photos, stand_in_lpips) -> None:
    results = imperceptibility.imperceptibility(photos, photos, lpips_net=stand_in_lpips)
    assert results["lpips"].values == pytest.approx([0.0] * 4, abs=1e-6)
    small = imperceptibility.imperceptibility(
        photos, _noisy(photos, 0.02), lpips_net=stand_in_lpips)["lpips"]
    large = imperceptibility.imperceptibility(
        photos, _noisy(photos, 0.2), lpips_net=stand_in_lpips)["lpips"]
    assert len(small.values) == 4 and all(s < b for s, b in zip(small.values, large.values,
                                                                strict=True))
    assert small.direction == "up" and "stand-in" in small.implementation
    metric = imperceptibility.ProtectionLpips(stand_in_lpips, "random AlexNet")
    assert metric.compute(_noisy(photos, 0.02), photos).values == pytest.approx(
        small.values, rel=1e-5)
    with pytest.raises(ValueError, match="slot by slot"):
        metric.compute(photos[:2], photos)


def test_lpips_backbone_weights_are_read_from_a_torchvision_checkpoint(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(1)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    checkpoint = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, checkpoint)
    model = imperceptibility.lpips_network(checkpoint, net="alex")
    # slice<k>.<i>.weight -> <i>.weight
    loaded = {k.split(".", 1)[1]: v for k, v in model.net.state_dict().items()}
    assert loaded.keys() == features.keys()
    assert all(torch.equal(loaded[k], features[k]) for k in features)
    torch.save({"features.0.weight": features["0.weight"],
                "features.99.weight": features["0.weight"]}, checkpoint)
    with pytest.raises((RuntimeError, KeyError), match="features.99|0.bias|Missing"):
        imperceptibility.lpips_network(checkpoint, net="alex")


# -- unavailable without weights: at once, naming the file and where it looked --------------------
@pytest.fixture
def no_weights(monkeypatch, tmp_path: Path) -> Path:
    """Empty local weights folder, torch hub and Hugging Face caches; downloads not allowed."""
    import huggingface_hub.constants

    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("PROTECTION_AUDIT_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


@pytest.mark.parametrize(("metric", "file"), [
    (ImageQualityScore, "open_clip_model.safetensors"), (ClipIqac, "open_clip_model.safetensors"),
    (FrechetInceptionDistance, distribution.INCEPTION_FILE), (PRDPrecision,
                                                              distribution.INCEPTION_FILE),
    (PRDRecall, distribution.INCEPTION_FILE), (imperceptibility.ProtectionLpips,
                                               imperceptibility.VGG_FILE),
])
def test_weight_needing_metric_without_weights_is_unavailable_at_once(
        no_weights: Path, photos, metric, file) -> None:
    started = time.perf_counter()
    result = metric().compute(photos, photos)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{metric.__name__} took {elapsed:.2f} s to say it is unavailable"
    assert result.values == [] and result.unavailable
    # what, and where
    assert file in result.unavailable and str(no_weights / "weights") in result.unavailable
    assert str(no_weights) in result.unavailable.split("looked in:")[1]  # the caches it searched
    assert "--allow-download" in result.unavailable  # and how to provide it


def test_q_without_weights_is_unavailable_at_once(no_weights: Path, photos) -> None:
    started = time.perf_counter()
    result = QualityQ().compute(photos, photos)
    assert (time.perf_counter() - started < 1.0 and result.unavailable
            and "LIQE" in result.unavailable)


def test_imperceptibility_keeps_psnr_ssim_linf_when_lpips_is_unavailable(
        no_weights: Path, photos) -> None:
    started = time.perf_counter()
    lpips = imperceptibility.lpips_result(photos, _noisy(photos, 0.02))
    assert time.perf_counter() - started < 1.0 and lpips.unavailable and lpips.values == []
    results = imperceptibility.imperceptibility(photos, _noisy(photos, 0.02))
    assert (results["lpips"].unavailable
            and imperceptibility.VGG_FILE in results["lpips"].unavailable)
    assert all(len(results[k].values) == 4 for k in ("psnr", "ssim", "linf_255"))


def test_weights_in_the_local_folder_are_found_by_their_documented_names(no_weights: Path) -> None:
    local = no_weights / "weights"
    (local / clip_quality.CLIP_REPO).mkdir(parents=True)
    (local / clip_quality.CLIP_REPO / "open_clip_pytorch_model.bin").write_bytes(b"x")
    (local / distribution.INCEPTION_FILE).write_bytes(b"x")
    (local / imperceptibility.VGG_FILE).write_bytes(b"x")
    clip_file = local / clip_quality.CLIP_REPO / "open_clip_pytorch_model.bin"
    assert clip_quality.clip_weights() == clip_file
    assert distribution.inception_weights() == local / distribution.INCEPTION_FILE
    assert imperceptibility.vgg_weights() == local / imperceptibility.VGG_FILE
    assert clip_quality.clip_missing() is None and distribution.inception_missing() is None
    assert imperceptibility.lpips_missing() is None
    digest = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert f"sha256 {digest}" in clip_quality.clip_label()


def test_fid_inception_from_a_file_is_piqs_network(monkeypatch, tmp_path: Path) -> None:
    """The metrics' own path finds the FID Inception file in the local weights folder, names it,
    and builds piq's network from it: its features equal piq's own InceptionV3 with the same
    (random) weights, piq's download replaced by the same state dict."""
    from piq.feature_extractors import fid_inception as fi
    from torchvision.models import inception as tv

    torch.manual_seed(0)
    blocks = [tv.BasicConv2d, fi.FIDInceptionA, tv.InceptionB, fi.FIDInceptionC, tv.InceptionD,
              lambda c: fi.FIDInceptionE1(c) if c == 1280 else fi.FIDInceptionE2(c),
              tv.InceptionAux]
    state = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False,
                          inception_blocks=blocks).state_dict()
    torch.save(state, tmp_path / distribution.INCEPTION_FILE)
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path))
    g = torch.Generator().manual_seed(0)
    generated, reference = torch.rand(1, 3, 64, 64, generator=g), torch.rand(
        1, 3, 64, 64, generator=g)
    metric = PRDPrecision()
    result = metric.compute(generated, reference)
    assert result.unavailable is None and len(result.values) == 1 and 0 <= result.values[0] <= 1
    assert (f"{distribution.INCEPTION_FILE} sha256 " in result.implementation
            and "stand-in" not in result.implementation)
    monkeypatch.setattr(fi, "load_state_dict_from_url", lambda *a, **k: state)
    # piq builds torchvision's Inception with its slow truncated-normal init (scipy); the
    # weights are replaced by ``state`` anyway.
    monkeypatch.setattr(fi.models, "inception_v3",
                        functools.partial(tv.inception_v3, init_weights=False))
    with torch.no_grad():
        theirs = fi.InceptionV3().eval()(generated)[0].flatten(1).double()
    mine = metric.features(generated)  # kept from compute: no second forward
    assert mine.shape == (1, 2048) and torch.allclose(mine, theirs, atol=1e-5)


def test_clip_metrics_load_open_clip_weights_from_the_local_folder(
        monkeypatch, tmp_path: Path) -> None:
    """The real loading path (file lookup, open_clip build, its preprocessing and tokenizer) on a
    tiny open_clip architecture with random weights, registered for the test."""
    import json

    import open_clip
    from safetensors.torch import save_file

    config = {"embed_dim": 16, "quick_gelu": True,
              "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32,
                             "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                           "layers": 1}}
    (tmp_path / "tiny-test-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-test-clip.json")
    monkeypatch.setattr(clip_quality, "CLIP_BUILD", "tiny-test-clip")
    clip_quality.load_clip.cache_clear()
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    folder = tmp_path / "weights" / clip_quality.CLIP_REPO
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              folder / "open_clip_model.safetensors")
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path / "weights"))
    try:
        metric = ImageQualityScore()
        images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
        result = metric.compute(images, images)
        loaded = metric.network().model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
        assert result.unavailable is None and len(result.values) == 2
        assert ("open_clip_model.safetensors sha256 " in result.implementation
                and "stand-in" not in result.implementation)
        cos = clip_quality.prompt_cosines(metric.network(), images, clip_quality.IQS_PROMPTS)
        assert result.values == pytest.approx([1000 * float(c[0] - c[1]) for c in cos])
    finally:
        clip_quality.load_clip.cache_clear()


# -- PhotoGuard Table 6: similarities between edits (weight-free) ---------------------------------
@pytest.fixture(scope="module")
def edit_pair(photos) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-ins for the clean edits and the protected edits: fixed photos and a blurred, noisy
    copy."""
    protected = _noisy(F.avg_pool2d(photos, 3, stride=1, padding=1), 0.05, seed=3)
    return photos, protected


def test_edit_psnr_and_ssim_match_scikit_image(edit_pair) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clean, protected = edit_pair
    results = {m.name: m().compute(protected, clean) for m in (edits.EditPSNR, edits.EditSSIM)}
    for i in range(len(clean)):
        a, b = protected[i].double().numpy(), clean[i].double().numpy()
        assert results["edit_psnr"].values[i] == pytest.approx(peak_signal_noise_ratio(
            b, a, data_range=1.0), abs=1e-4)
        ssim = structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                     sigma=1.5,
                                     use_sample_covariance=False)
        assert results["edit_ssim"].values[i] == pytest.approx(ssim, abs=1e-4)


def test_edit_vifp_and_fsim_are_piqs(edit_pair) -> None:
    import piq

    clean, protected = edit_pair
    results = edits.edit_similarity(clean, protected)
    vif = piq.vif_p(protected, clean, data_range=1.0, reduction="none")
    fsim = piq.fsim(protected, clean, data_range=1.0, reduction="none")
    assert results["edit_vifp"].values == pytest.approx([float(v) for v in vif], abs=1e-4)
    assert results["edit_fsim"].values == pytest.approx([float(v) for v in fsim], abs=1e-4)
    assert set(results) == {"edit_ssim", "edit_psnr", "edit_vifp", "edit_fsim"}
    assert all(r.direction == "down" and len(r.values) == 4 for r in results.values())


def test_edit_similarities_rank_a_closer_edit_as_more_similar(edit_pair) -> None:
    clean, protected = edit_pair
    near = edits.edit_similarity(clean, _noisy(clean, 0.01))
    far = edits.edit_similarity(clean, protected)
    for name in near:
        assert near[name].mean > far[name].mean, name
    same = edits.edit_similarity(clean, clean)
    assert same["edit_ssim"].values == pytest.approx([1.0] * 4, abs=1e-5)
    assert same["edit_vifp"].values == pytest.approx([1.0] * 4, abs=1e-4)
    assert same["edit_fsim"].values == pytest.approx([1.0] * 4, abs=1e-4)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.005, 0.3))
def test_edit_psnr_and_ssim_are_symmetric_and_bounded(seed: int, std: float) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, 24, 24, generator=g)
    b = (a + std * torch.randn(a.shape, generator=g)).clamp(0, 1)
    metrics = (edits.EditPSNR(), edits.EditSSIM(), edits.EditVIFp())
    ab = {m.name: m.compute(b, a) for m in metrics}
    ba = {m.name: m.compute(a, b) for m in metrics}
    for name in ("edit_psnr", "edit_ssim"):
        assert ab[name].values == pytest.approx(ba[name].values, rel=1e-5, abs=1e-6)
    assert all(-1 <= v <= 1
               for v in ab["edit_ssim"].values) and all(v > 0 for v in ab["edit_psnr"].values)
    # piq's VIFp needs ≥ 41 px
    assert ab["edit_vifp"].unavailable and "41 px" in ab["edit_vifp"].unavailable


def test_edit_metrics_refuse_unpaired_sets(edit_pair) -> None:
    clean, protected = edit_pair
    with pytest.raises(ValueError, match="slot by slot"):
        edits.EditSSIM().compute(protected, clean[:2])


# -- BRISQUE: per-slot values, brisque's own score -------------------------------------------------
def test_brisque_keeps_an_undefined_slot_empty(photos) -> None:
    from audit.parts.metrics.quality import Brisque

    batch = photos.clone()
    batch[2] = 0.5  # a flat image: BRISQUE's generalised-Gaussian fit is undefined
    result = Brisque().compute(batch, photos)
    assert len(result.values) == 4 and result.values[2] is None and result.missing == 1
    assert all(isinstance(v, float) for i, v in enumerate(result.values) if i != 2)
    assert result.mean == pytest.approx(np.mean([v for v in result.values if v is not None]))
    assert "kept empty" in result.notes[0]


def test_brisque_equals_the_brisque_packages_own_score(photos) -> None:
    """brisque 0.2.0's ``score`` does what we do — grayscale, features at two scales, its libsvm
    model on the scaled features — but breaks on NumPy ≥ 2 at the last step (quality.py); its
    ``calculate_image_quality_score`` on its own features is that score."""
    import cv2
    import skimage.color

    from audit.data.images import to_uint8
    from audit.parts.metrics.quality import Brisque, _brisque

    model = _brisque()
    ours = Brisque().compute(photos, photos).values
    for i, image in enumerate(to_uint8(photos).permute(0, 2, 3, 1).numpy()):
        gray = skimage.color.rgb2gray(image)
        half = cv2.resize(gray, None, fx=1 / 2, fy=1 / 2, interpolation=cv2.INTER_CUBIC)
        features = np.concatenate((
            model.calculate_brisque_features(gray, kernel_size=7, sigma=7 / 6),
                                   model.calculate_brisque_features(
                                       half, kernel_size=7, sigma=7 / 6)))
        features = np.array([float(np.asarray(f).reshape(-1)[0]) for f in features])
        assert ours[i] == pytest.approx(float(model.calculate_image_quality_score(features)),
                                        abs=1e-4)


def test_imperceptibility_psnr_and_ssim_match_scikit_image(photos) -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    protected = _noisy(photos, 0.03, seed=5)
    results = imperceptibility.imperceptibility(photos, protected, lpips_net=lambda a, b,
                                                normalize: torch.zeros(len(a)))
    for i in range(len(photos)):
        a, b = protected[i].double().numpy(), photos[i].double().numpy()
        assert results["psnr"].values[i] == pytest.approx(peak_signal_noise_ratio(
            b, a, data_range=1.0), abs=1e-4)
        assert results["ssim"].values[i] == pytest.approx(structural_similarity(
            a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False), abs=1e-4)


def test_registered_directions_are_the_metrics_own() -> None:
    from audit.parts import METRICS

    for part in METRICS:
        assert part.load().direction == part.direction, part.name
