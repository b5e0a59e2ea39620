"""An artist's style as a subject: its kind, prompts, bundled works, metrics and glaze-like."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier
from audit.data.kinds import PERSON, STYLE, read_kind
from audit.data.subjects import discover_subjects, load_subject, subject_kind
from audit.errors import DataError
from audit.judge.case import metric_choice
from audit.parts.metrics.style import GramStyleSimilarity, gram_statistics
from audit.parts.protections.base import ProtectionContext, check_budget
from audit.parts.protections.build import build_protection
from audit.parts.protections.glaze import GlazeLike, glaze_loss
from audit.parts.protections.pid import posterior
from audit.parts.protections.simple import RandomNoise
from audit.parts.registry import PartSpec
from audit.parts.transforms.impress import one_minus_ssim
from audit.run.planner import ProtectionInfo, plan_case
from audit.run.progress import Progress


@pytest.fixture(scope="module")
def works() -> torch.Tensor:
    return load_subject("stained-glass", None, 64).images


def write_subject(root: Path, name: str, kind: str | None, images: torch.Tensor) -> None:
    from PIL import Image

    folder = root / name
    folder.mkdir(parents=True)
    for i, image in enumerate(images[:3]):
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(
            folder / f"{i}.png")
    if kind:
        (folder / "subject.yaml").write_text(f"kind: {kind}\n")


def test_kind_comes_from_subject_yaml_and_the_option_overrides_it(tmp_path, works) -> None:
    write_subject(tmp_path, "monet", "style", works)
    write_subject(tmp_path, "alice", None, works)
    assert discover_subjects(tmp_path) == ["alice", "monet"]
    assert load_subject("monet", tmp_path, 64).kind is STYLE  # subject.yaml is not an image
    assert load_subject("alice", tmp_path, 64).kind is PERSON
    assert subject_kind("alice", tmp_path, "style") is STYLE
    assert discover_subjects(None, "style") == ["stained-glass"]


def test_a_bad_kind_file_names_the_file_and_the_fix(tmp_path) -> None:
    (tmp_path / "subject.yaml").write_text("kind: sculpture\n")
    with pytest.raises(DataError, match=r"subject\.yaml.*unknown subject kind 'sculpture'.*style"):
        read_kind(tmp_path)
    (tmp_path / "subject.yaml").write_text("kind: style\nartist: x\n")
    with pytest.raises(DataError, match="expected one key 'kind'"):
        read_kind(tmp_path)


def test_the_style_kind_sets_the_exploits_prompts_above_the_tier_and_below_the_scenario() -> None:
    tier = get_tier("smoke")
    info = ProtectionInfo(PartSpec("protection", "pid", {"epsilon": 0.05}))
    person = plan_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), info, tier, 0)
    style = plan_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), info, tier, 0, kind=STYLE)
    assert person.standard_exploit.params["instance_prompt"] == "a photo of sks person"
    assert style.standard_exploit.params["instance_prompt"] == "a painting in the style of sks"
    assert style.standard_exploit.params["class_prompt"] == "a painting"
    assert style.standard_origin["instance_prompt"] == "subject kind 'style'"
    # a scenario that writes its own prompt keeps it
    mismatch = plan_case(load_scenario(CATALOGUE_DIR / "prompt-mismatch.yaml"), info, tier, 0,
                         kind=STYLE)
    prompts = {v.exploit.params["instance_prompt"] for v in mismatch.variants}
    assert "a dslr portrait of sks person" in prompts
    assert STYLE.eval_prompts_for(PERSON.eval_prompts) == STYLE.eval_prompts
    assert STYLE.eval_prompts_for(("my own prompt",)) == ("my own prompt",)


def test_a_style_subject_decides_on_the_style_metric_not_a_face_metric() -> None:
    scenario = load_scenario(CATALOGUE_DIR / "no-attack.yaml")
    names, metric, note = metric_choice(get_tier("smoke"), 64, scenario, STYLE)
    assert metric == "gram_style_similarity" and "fds" not in names
    assert {"gram_style_similarity", "clip_style_similarity"} <= set(names)
    assert note is not None and "subject kind 'style'" in note
    names, metric, _ = metric_choice(get_tier("standard"), 512, scenario, STYLE)
    assert metric == "clip_style_similarity"
    _, metric, _ = metric_choice(get_tier("smoke"), 64, scenario, PERSON)
    assert metric == "subject_similarity"


def test_gram_style_similarity_ranks_the_same_style_above_another(works, images) -> None:
    metric = GramStyleSimilarity()
    same = metric.compute(works[:2], works[2:]).values
    other = metric.compute(images[:2], works[2:]).values
    assert min(same) > max(other)
    assert metric.compute(works, works).values[0] <= 1 + 1e-6


@settings(max_examples=10, deadline=None)
@given(st.floats(-0.3, 0.3), st.integers(0, 5))
def test_gram_statistics_ignore_a_brightness_offset_but_not_a_texture(offset, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + torch.rand(1, 3, 32, 32, generator=g) * 0.4
    base = gram_statistics(x)
    shifted = gram_statistics(x + offset)  # zero-mean filters, reflect padding: no change
    assert torch.allclose(base, shifted, atol=1e-4)
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert float((base - gram_statistics(blurred)).norm()) > 1e-2


def test_glaze_like_pulls_the_latent_to_its_style_target_far_beyond_noise(tiny, works) -> None:
    x = works[:2]
    ctx = ProtectionContext(tiny, torch.device("cpu"), 0, get_tier("smoke"), Progress())
    glaze = GlazeLike(steps=10, target_strength=0.01)
    out = glaze.protect(x, ctx)
    assert check_budget(x, out.images, 0.05, "glaze-like") <= 0.05
    noisy = RandomNoise(0.05).protect(x, ctx).images
    from audit.parts.protections.glaze import style_target

    target = style_target(tiny, x, glaze.target_prompt, 0.01, torch.Generator().manual_seed(0))

    def latent_mse(u8: torch.Tensor) -> float:
        with torch.no_grad():
            return float((posterior(tiny.vae, u8.float() / 255)[0] - target).pow(2).mean())

    clean, glazed, noise = latent_mse((x * 255).round()), latent_mse(out.images), latent_mse(noisy)
    # measured (10 steps, a 1 % style target): clean 0.067, noise 0.073, glazed 0.042
    assert glazed < min(clean, noise) - 2 * abs(noise - clean)
    assert out.info["loss_last_iterate"] < out.info["loss_first"]


def test_the_hinge_is_zero_within_the_perceptual_bound(tiny, works) -> None:
    x = works[:1]
    target = posterior(tiny.vae, x)[0]
    with torch.no_grad():
        at_target = glaze_loss(tiny.vae, x, x, target, one_minus_ssim, 30.0, 0.05)
    assert float(at_target) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["advdm", "aspl", "fsmg", "aspl+pid", "fsmg+pid"])
def test_a_protection_crafting_against_the_instance_prompt_takes_the_style_kinds(
        name: str) -> None:
    """ASPL, FSMG and AdvDM craft against DreamBooth's instance prompt: on an artist's works, the
    one the exploiter of a style fine-tunes with, not 'a photo of sks person'."""
    tier = get_tier("smoke")
    _, person = build_protection(name, tier)
    _, style = build_protection(name, tier, kind=STYLE)
    assert person.params["prompt"] == PERSON.instance_prompt
    assert style.params["prompt"] == STYLE.instance_prompt
    if "class_prompt" in person.params:
        assert person.params["class_prompt"] == PERSON.class_prompt
        assert style.params["class_prompt"] == STYLE.class_prompt
    # nothing else moves
    assert {k: v for k, v in style.params.items() if "prompt" not in k} == {
        k: v for k, v in person.params.items() if "prompt" not in k}


@pytest.mark.parametrize("name", ["pid", "mist", "photoguard-diffusion", "glaze-like"])
def test_a_protection_without_an_instance_prompt_is_the_same_for_every_kind(name: str) -> None:
    tier = get_tier("smoke")
    assert build_protection(name, tier)[1] == build_protection(name, tier, kind=STYLE)[1]
