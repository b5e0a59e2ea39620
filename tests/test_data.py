"""Subject loading: the bundled subject, folder discovery, conversions and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from audit.data.images import to_uint8
from audit.data.subjects import discover_subjects, load_subject
from audit.errors import DataError


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def rgb(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_bundled_subject_views() -> None:
    s64 = load_subject("astronaut", None, 64)
    assert s64.images.shape == (4, 3, 64, 64)
    assert float(s64.images.min()) >= 0 and float(s64.images.max()) <= 1
    assert load_subject("astronaut", None, 128).images.shape == (4, 3, 128, 128)
    assert load_subject("astronaut", None, 64).content_hash == s64.content_hash
    assert "derived" in s64.notes[0] and "public domain" in s64.source
    # View 1 is the mirror image of view 0.
    assert torch.allclose(s64.images[1], s64.images[0].flip(-1), atol=1 / 255)
    assert discover_subjects(None) == ["astronaut"]


def test_discover_sorted_subfolders_and_flat_folder(tmp_path: Path) -> None:
    save(tmp_path / "zoe" / "1.png", rgb())
    save(tmp_path / "adam" / "1.png", rgb())
    (tmp_path / ".hidden").mkdir()
    assert discover_subjects(tmp_path) == ["adam", "zoe"]
    flat = tmp_path / "flat"
    save(flat / "a.png", rgb())
    save(flat / "b.png", rgb(seed=1))
    assert discover_subjects(flat) == ["flat"]
    assert load_subject("flat", flat, 32).images.shape == (2, 3, 32, 32)


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_discover_errors_name_the_path(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "data"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty":
        target.mkdir()
    with pytest.raises(DataError) as info:
        discover_subjects(target)
    assert str(target) in str(info.value)


def test_bad_files_are_named(tmp_path: Path) -> None:
    subject = tmp_path / "s"
    save(subject / "a.png", rgb())
    (subject / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file.*Remove it"):
        load_subject("s", tmp_path, 32)
    (subject / "notes.txt").unlink()
    (subject / "b.png").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match=r"b\.png"):
        load_subject("s", tmp_path, 32)
    good = (subject / "a.png").read_bytes()
    (subject / "b.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"b\.png.*(truncated|corrupt)"):
        load_subject("s", tmp_path, 32)
    (subject / "b.png").unlink()
    (subject / ".DS_Store").write_bytes(b"\0\1")  # hidden files are ignored
    save(subject / "c.png", rgb(seed=1))
    assert load_subject("s", tmp_path, 32).files == ("a.png", "c.png")


def test_empty_subject_folder_and_mixed_sizes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_subject("empty", tmp_path, 32)
    save(tmp_path / "mixed" / "a.png", rgb(32, 32))
    save(tmp_path / "mixed" / "b.png", rgb(40, 40))
    with pytest.raises(DataError) as info:
        load_subject("mixed", tmp_path, 32)
    assert "a.png 32×32" in str(info.value) and "b.png 40×40" in str(info.value)


def test_conversions_are_done_and_said(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    save(folder / "gray.png", rgb()[..., 0], mode="L")
    rgba = np.concatenate([rgb(), np.full((32, 32, 1), 255, np.uint8)], axis=2)
    save(folder / "rgba.png", rgba, mode="RGBA")
    save(folder / "deep.png", (rgb()[..., 0].astype(np.uint16) * 257))  # 16-bit grayscale PNG
    subject = load_subject("s", tmp_path, 32)
    assert subject.images.shape == (3, 3, 32, 32)
    notes = " ".join(subject.notes)
    assert ("gray.png: grayscale" in notes and "rgba.png: RGBA → RGB" in notes
            and "deep.png" in notes and "8-bit" in notes)
    gray = subject.images[subject.files.index("gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    deep = to_uint8(subject.images[subject.files.index("deep.png")][None])[0, 0]
    assert torch.equal(deep, torch.from_numpy(rgb()[..., 0]))  # 16-bit scaled back exactly


def test_non_square_is_centre_cropped_and_noted(tmp_path: Path) -> None:
    save(tmp_path / "s" / "wide.png", rgb(32, 48))
    save(tmp_path / "s" / "wide2.png", rgb(32, 48, seed=1))
    subject = load_subject("s", tmp_path, 32)
    assert subject.images.shape == (2, 3, 32, 32)
    assert any("centre-cropped" in n for n in subject.notes)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 4), side=st.integers(8, 24), seed=st.integers(0, 1000))
def test_round_trip_at_native_resolution(tmp_path: Path, n: int, side: int, seed: int) -> None:
    folder = tmp_path / f"case-{n}-{side}-{seed}" / "subject"
    arrays = [rgb(side, side, seed + i) for i in range(n)]
    for i, array in enumerate(arrays):
        save(folder / f"{i}.png", array)
    subject = load_subject("subject", folder.parent, side)
    assert subject.images.shape == (n, 3, side, side)
    assert float(subject.images.min()) >= 0 and float(subject.images.max()) <= 1
    for i, array in enumerate(arrays):
        assert torch.equal(to_uint8(subject.images[i : i + 1])[0].permute(1, 2, 0),
                           torch.from_numpy(array))


def test_exif_orientation_is_applied_to_square_images_and_said(tmp_path: Path) -> None:
    """A square photo with EXIF orientation 6 (camera held upright) is shown rotated 90°
    clockwise by every viewer; the audit must see it the same way, even though the size does
    not change."""
    array = np.zeros((32, 32, 3), np.uint8)
    array[:16] = 255  # top half white as stored; after a 90° clockwise turn: the right half
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path / "s"
    folder.mkdir()
    Image.fromarray(array).save(folder / "portrait.jpg", exif=exif, quality=95)
    save(folder / "plain.png", rgb())
    subject = load_subject("s", tmp_path, 32)
    image = subject.images[subject.files.index("portrait.jpg")].mean(0)
    # right white, left black
    assert float(image[:, 20:].mean()) > 0.9 and float(image[:, :12].mean()) < 0.1
    notes = " ".join(subject.notes)
    assert "portrait.jpg: EXIF orientation 6 applied (rotated 90° clockwise)" in notes
    assert "plain.png: EXIF" not in notes



@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(
        tmp_path: Path, orientation: int) -> None:
    from PIL import ImageOps

    array = rgb(32, 32, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    folder = tmp_path / "s"
    folder.mkdir()
    Image.fromarray(array).save(folder / "a.png", exif=exif)
    Image.fromarray(array).save(folder / "b.png")
    subject = load_subject("s", tmp_path, 32)
    with Image.open(folder / "a.png") as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert np.array_equal(to_uint8(subject.images[0][None])[0].permute(1, 2, 0).numpy(), expected)
    assert any(f"a.png: EXIF orientation {orientation} applied" in n for n in subject.notes)

def test_16_bit_rgb_png_is_scaled_exactly_and_said(tmp_path: Path) -> None:
    """Pillow opens a 16-bit RGB PNG as 8-bit RGB keeping the high byte (65535 → 255 by
    truncation, not rounding); the loader reads the 16 bits and scales 65535 → 255 rounded."""
    import cv2

    deep = np.random.default_rng(0).integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    deep[0, 0] = (255, 65535, 0)  # 255/257 rounds to 1, its high byte is 0
    folder = tmp_path / "s"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "deep.png"), deep[..., ::-1])  # OpenCV writes BGR
    save(folder / "plain.png", rgb())
    subject = load_subject("s", tmp_path, 32)
    loaded = to_uint8(
        subject.images[subject.files.index("deep.png")][None])[0].permute(1, 2, 0).numpy()
    expected = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(loaded, expected)
    assert any("deep.png: 16-bit → 8-bit" in n for n in subject.notes)
    assert not any("plain.png" in n for n in subject.notes)


# just over the limit (a warning in Pillow) and over 2× (an error)
@pytest.mark.parametrize("limit", [32 * 32 - 1, 100])
def test_decompression_bomb_limit_is_a_data_error_naming_the_file(
        tmp_path: Path, monkeypatch, limit: int) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    save(tmp_path / "s" / "a.png", rgb())
    save(tmp_path / "s" / "b.png", rgb(seed=1))
    with pytest.raises(DataError) as info:
        load_subject("s", tmp_path, 32)
    message = str(info.value)
    assert "a.png" in message and "32×32" in message and f"{limit:,}" in message
    assert "downscale" in message.lower() and "MAX_IMAGE_PIXELS" in message


def test_tiny_images_are_refused(tmp_path: Path) -> None:
    """Upscaling more than 2× invents detail the exploit would learn instead of the person."""
    for i in range(4):
        save(tmp_path / "dots" / f"{i}.png", rgb(1, 1, seed=i))
        save(tmp_path / "small" / f"{i}.png", rgb(15, 15, seed=i))
        save(tmp_path / "half" / f"{i}.png", rgb(16, 20, seed=i))
    for name, side in (("dots", 1), ("small", 15)):
        with pytest.raises(DataError) as info:
            load_subject(name, tmp_path, 32)
        message = str(info.value)
        assert str(tmp_path / name) in message and f"{side} px" in message and "16 px" in message
        assert "upscal" in message and "resolution" in message
    half = load_subject("half", tmp_path, 32)  # exactly 2×: accepted, and said
    assert half.images.shape == (4, 3, 32, 32) and any("upscaled from 16 px" in n
                                                       for n in half.notes)


def test_too_few_images_refused_or_warned(tmp_path: Path) -> None:
    save(tmp_path / "one" / "only.png", rgb())
    with pytest.raises(DataError) as info:
        load_subject("one", tmp_path, 32)
    message = str(info.value)
    assert str(tmp_path / "one") in message and "only.png" in message and "at least 2" in message
    for i in range(2):
        save(tmp_path / "two" / f"{i}.png", rgb(seed=i))
    two = load_subject("two", tmp_path, 32)
    assert any("only 2 images" in n and "4" in n for n in two.notes)
    for i in range(4):
        save(tmp_path / "four" / f"{i}.png", rgb(seed=i))
    assert not any("images;" in n for n in load_subject("four", tmp_path, 32).notes)


def test_hidden_folders_and_symlink_loops_are_said(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(2):
        save(data / "alice" / f"{i}.png", rgb(seed=i))
        save(data / ".bob" / f"{i}.png", rgb(seed=i))
    (data / "loop").symlink_to(data / "loop")  # a link to itself
    (data / "up").symlink_to(data)  # a link to its own parent folder
    (data / "gone").symlink_to(tmp_path / "nowhere")
    assert discover_subjects(data) == ["alice"]
    notes = " ".join(load_subject("alice", data, 32).notes)
    assert ".bob" in notes and "hidden" in notes
    assert "loop" in notes and "symlink loop" in notes and "up" in notes
    assert "gone" in notes and "broken symlink" in notes
    # Nothing left: the error lists what was skipped and why.
    for path in (data / "alice" / "0.png", data / "alice" / "1.png"):
        path.unlink()
    (data / "alice").rmdir()
    with pytest.raises(DataError) as info:
        discover_subjects(data)
    message = str(info.value)
    assert (".bob" in message and "hidden" in message and "symlink loop" in message
            and str(data) in message)


def test_symlink_loop_inside_a_subject_is_named(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / "s" / f"{i}.png", rgb(seed=i))
    (tmp_path / "s" / "2.png").symlink_to(tmp_path / "s" / "2.png")
    with pytest.raises(DataError, match=r"2\.png: symlink loop.*Remove the link"):
        load_subject("s", tmp_path, 32)
