"""The built-in tiny model, SD 1.5's tokenizer rebuilt offline, and model loading errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from audit.diffusion import (
    build_tiny_components,
    clip_tokenizer,
    load_model,
    resolve_device,
    state_fingerprint,
)
from audit.errors import ModelError

PROMPTS = [
    "a photo of sks person",
    "A DSLR portrait of sks person!",
    "noisy, low quality, artifacts, poorly drawn face",
    "two men in a wedding, 4k",
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokenizer_matches_clip_bpe(prompt: str) -> None:
    tokenizer = clip_tokenizer()
    ids = tokenizer(prompt).input_ids
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1] == SimpleTokenizer().encode(prompt)
    padded = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(padded) == 77 and padded[-1] == 49407
    assert len(tokenizer) == 49408


def test_tiny_is_deterministic_and_seeded(tiny, monkeypatch, tmp_path) -> None:
    again = load_model("tiny", "cpu")
    assert again.fingerprint == tiny.fingerprint and len(tiny.fingerprint) == 64
    assert state_fingerprint(again.unet, again.vae) == state_fingerprint(tiny.unet, tiny.vae)
    # Without shipped weights the pipeline is a seeded random init (and says so).
    monkeypatch.setattr("audit.diffusion.tiny.tiny_weights_path",
                        lambda variant="tiny": tmp_path / "absent")
    random_init = load_model("tiny", "cpu")
    assert "random init" in random_init.source and random_init.revision == "config-v1"
    one, other = build_tiny_components(seed=0), build_tiny_components(seed=1)
    assert state_fingerprint(one["unet"]) == state_fingerprint(random_init.unet)
    assert state_fingerprint(
        other["vae"], other["unet"],
        other["text_encoder"]) != state_fingerprint(one["vae"], one["unet"], one["text_encoder"])
    before = torch.random.get_rng_state()
    build_tiny_components(seed=5)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched


def test_tiny_shapes(tiny) -> None:
    assert tiny.resolution == 64 and tiny.vae_scale_factor == 4
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        dist = tiny.vae.encode(x * 2 - 1).latent_dist
        assert dist.mean.shape == (1, 4, 16, 16) and dist.logvar.shape == (1, 4, 16, 16)
        assert tiny.vae.decode(dist.mean).sample.shape == (1, 3, 64, 64)
        tokens = tiny.tokenizer(["a photo of sks person"], padding="max_length", max_length=77,
                                return_tensors="pt").input_ids
        emb = tiny.text_encoder(tokens)[0]
        out = tiny.unet(dist.mean, torch.tensor([10]), emb).sample
    assert out.shape == (1, 4, 16, 16)


def test_fresh_copy_leaves_base_untouched(tiny) -> None:
    before = state_fingerprint(tiny.unet, tiny.text_encoder)
    copy = tiny.fresh_copy()
    with torch.no_grad():
        next(copy.unet.parameters()).add_(1.0)
    assert state_fingerprint(tiny.unet, tiny.text_encoder) == before
    assert copy.vae is tiny.vae


def test_local_folder_round_trip(tiny, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=tiny.vae, unet=tiny.unet, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer,
        scheduler=tiny.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp_path / "model")
    loaded = load_model(str(tmp_path / "model"))
    for a, b in zip(
            tiny.unet.state_dict().values(), loaded.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert loaded.model_id == str((tmp_path / "model").resolve()) and len(loaded.fingerprint) == 64
    assert loaded.tokenizer("a photo of sks person").input_ids == tiny.tokenizer("a photo of sks "
            "person").input_ids


def test_incomplete_folder_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "m" / "unet").mkdir(parents=True)
    with pytest.raises(ModelError, match="lacks vae/"):
        load_model(str(tmp_path / "m"))


@pytest.mark.parametrize("spec", ["./no/such/model", "nobody/none-such-model"])
def test_missing_model_fails_fast_with_a_fix(spec: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ModelError) as info:
        load_model(spec)
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert spec in message and ("tiny" in message or "--allow-download" in message)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ModelError, match="--device=bogus"):
        resolve_device("bogus")
