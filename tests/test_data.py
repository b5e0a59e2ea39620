"""Subject loading: the bundled subject, folder discovery, conversions and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from audit.data import discover_subjects, load_subject
from audit.errors import DataError
from audit.images import to_uint8


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
    assert discover_subjects(flat) == ["flat"]
    assert load_subject("flat", flat, 32).images.shape == (1, 3, 32, 32)


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
    assert load_subject("s", tmp_path, 32).files == ("a.png",)


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
    assert "gray.png: grayscale" in notes and "rgba.png: RGBA → RGB" in notes and "deep.png" in notes and "8-bit" in notes
    gray = subject.images[subject.files.index("gray.png")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    deep = to_uint8(subject.images[subject.files.index("deep.png")][None])[0, 0]
    assert torch.equal(deep, torch.from_numpy(rgb()[..., 0]))  # 16-bit scaled back exactly


def test_non_square_is_centre_cropped_and_noted(tmp_path: Path) -> None:
    save(tmp_path / "s" / "wide.png", rgb(32, 48))
    subject = load_subject("s", tmp_path, 32)
    assert subject.images.shape == (1, 3, 32, 32)
    assert any("centre-cropped" in n for n in subject.notes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 3), side=st.integers(8, 24), seed=st.integers(0, 1000))
def test_round_trip_at_native_resolution(tmp_path: Path, n: int, side: int, seed: int) -> None:
    folder = tmp_path / f"case-{n}-{side}-{seed}" / "subject"
    arrays = [rgb(side, side, seed + i) for i in range(n)]
    for i, array in enumerate(arrays):
        save(folder / f"{i}.png", array)
    subject = load_subject("subject", folder.parent, side)
    assert subject.images.shape == (n, 3, side, side)
    assert float(subject.images.min()) >= 0 and float(subject.images.max()) <= 1
    for i, array in enumerate(arrays):
        assert torch.equal(to_uint8(subject.images[i : i + 1])[0].permute(1, 2, 0), torch.from_numpy(array))
