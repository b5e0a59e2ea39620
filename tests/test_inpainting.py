"""The inpainting exploit on the built-in model: ``tiny``'s companion inpainting UNet
(``tiny-inpainting``, trained by training/train_inpainting.py), how an inpainting UNet is chosen
and checked, and what the trained one does with its mask and masked image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from audit.diffusion.editing import (
    EditConfig,
    edit,
    face_mask,
    inpainting_unavailable,
    load_inpainting_unet,
)
from audit.diffusion.tiny import (
    CHECKSUMS,
    UNET_FILES,
    inpainting_extension,
    tiny_weights_path,
    verify_weights,
)
from audit.errors import ModelError
from audit.parts.exploits.editing import InpaintingParams
from audit.run.progress import Progress
from audit.run.stages import single_thread

# SHA-256 of audit/models/weights/tiny_inpainting/SHA256SUMS (its model card states it).
PINNED_INPAINTING_HASH = "298db17bee2cfb5f13fed48c68f6894afd9efd3317a39d0a397e756a11ad55fe"
CFG = EditConfig(("a person in an airplane",), 1.0, 10, 7.5, "", 1.0, seed=5, mode="inpainting")


def test_the_shipped_inpainting_unet_matches_its_hash_and_model_card(tiny) -> None:
    folder = tiny_weights_path("tiny-inpainting")
    assert verify_weights(folder) == PINNED_INPAINTING_HASH
    listed = [line.split("  ")[1] for line in (folder / CHECKSUMS).read_text().splitlines()]
    assert listed == list(UNET_FILES)  # only the UNet ships: VAE and text encoder are tiny's
    assert PINNED_INPAINTING_HASH in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    editor = load_inpainting_unet(tiny, None, allow_download=False)
    assert editor.model_id == "tiny-inpainting" and editor.fingerprint == PINNED_INPAINTING_HASH
    assert editor.unet.config.in_channels == 9 and editor.unet is not tiny.unet
    # trained from tiny's UNet: the five new input channels are no longer the zeros they began as
    assert editor.unet.conv_in.weight[:, 4:].abs().max() > 0


def test_tiny_inpaints_with_its_companion_and_other_models_say_what_they_need(tiny) -> None:
    assert InpaintingParams().unavailable(tiny) is None
    elsewhere = dataclasses.replace(tiny, model_id="some/sd-model")
    why = InpaintingParams().unavailable(elsewhere)
    assert why is not None and why.startswith("unavailable") and "9 input channels" in why
    assert "inpainting_model" in why and "--model" in why
    assert InpaintingParams(inpainting_model="runwayml/stable-diffusion-inpainting").unavailable(
        elsewhere) is None
    assert inpainting_unavailable(elsewhere, "a/folder") is None  # loading says what is wrong
    mask = face_mask(2, 64)
    assert mask.shape == (2, 1, 64, 64) and mask[0, 0, 32, 32] == 0 and mask[0, 0, 0, 0] == 1


def test_a_unet_that_is_not_an_inpainting_unet_for_the_model_is_refused(tiny, tmp_path) -> None:
    with pytest.raises(ModelError, match=r"inpainting_model=.*takes 4 input channels, not 9"):
        load_inpainting_unet(tiny, str(tiny_weights_path("tiny")), allow_download=False)
    with pytest.raises(ModelError, match=r"inpainting_model=.*no unet/ folder"):
        load_inpainting_unet(tiny, str(tmp_path), allow_download=False)
    with pytest.raises(ModelError, match=r"inpainting_model=nobody/nothing: not in the local "
                                         r"Hugging Face cache.*tiny-inpainting"):
        load_inpainting_unet(tiny, "nobody/nothing", allow_download=False)


def test_modified_inpainting_weights_are_refused_with_the_file_and_the_fix(
        tiny, tmp_path: Path, monkeypatch) -> None:
    import shutil

    copy = tmp_path / "tiny_inpainting"
    shutil.copytree(tiny_weights_path("tiny-inpainting"), copy)
    target = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr("audit.diffusion.tiny.tiny_weights_path", lambda variant="tiny": copy)
    with pytest.raises(ModelError, match=r"SHA-256 differs.*train_inpainting.py"):
        load_inpainting_unet(tiny, None, allow_download=False)


def _inside(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error between ``a`` and ``b`` over the kept region (mask 0)."""
    keep = (1 - mask).expand_as(a)
    return float(((a - b) ** 2 * keep).sum() / keep.sum())


def test_the_trained_inpainting_unet_keeps_the_face_of_its_own_input(tiny, images) -> None:
    """Measured mechanism (diffusers does not paste the kept region back for a 9-channel UNet, so
    what survives of the face, the UNet drew): the edit's kept region is far closer to its own
    input than where training began (a UNet that ignores the condition), and closer to its own
    input than to another view's face; the regenerated rest is not a copy; same seed, same edit.
    (benchmarks/bench_inpainting.py: kept-face PSNR 14.6 dB against 6.7 dB before training.)"""
    editor = load_inpainting_unet(tiny, None, allow_download=False)
    x = images[:2]
    with single_thread(torch.device("cpu")):
        first = edit(tiny, x, CFG, 64, Progress(), editor.unet)
        again = edit(tiny, x, CFG, 64, Progress(), editor.unet)
        before = edit(tiny, x, CFG, 64, Progress(), inpainting_extension(tiny.unet))
    assert torch.equal(first, again)
    mask = face_mask(2, 64)
    own, other = _inside(mask, first, x), _inside(mask, first, x.flip(0))
    assert own < 0.4 * _inside(mask, before, x), (own, _inside(mask, before, x))
    assert own < 0.7 * other, (own, other)
    outside = float(((first - x) ** 2 * mask.expand_as(x)).sum() / mask.expand_as(x).sum())
    assert outside > 2 * own, (outside, own)


def test_an_inpainting_case_runs_on_tiny_with_its_companion_named_in_the_record(
        tmp_path: Path) -> None:
    """End to end through the engine: ``edit-inpainting`` on the built-in model is audited (no
    longer skipped), its edits are keyed by the inpainting UNet's hash and the record and report
    name that UNet. ``random`` audited against its own null baseline has no effect by
    construction."""
    from audit.config.options import AuditOptions
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.run.session import AuditSession

    options = AuditOptions(protection="random", results_dir=tmp_path, device="cpu",
                           exploit_workers=1)
    session = AuditSession(options, Progress(None))
    record = session.run_case(load_scenario(CATALOGUE_DIR / "edit-inpainting.yaml"), "astronaut",
                              "edit-inpainting-astronaut").dump()
    assert record["outcome"] == "no effect at baseline", record.get("reason")
    runs = list(record["exploits"].values())
    assert runs and all(r["info"]["mode"] == "inpainting" for r in runs)
    unets = {r["info"]["inpainting_unet"]["fingerprint"] for r in runs}
    assert unets == {PINNED_INPAINTING_HASH}
    assert {r["info"]["inpainting_unet"]["id"] for r in runs} == {"tiny-inpainting"}
    # the noised images' edits differ from the clean edits (the edit reads its input)
    assert record["metrics"]["edit_ssim"]["m_c"]["value"] < 1.0
