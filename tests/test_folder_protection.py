"""``--protection=dir:PATH``: pairing by name, sizes, budgets measured at both resolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import audit.data.subjects
import audit.run.progress
from audit.data.images import to_uint8
from audit.data.subjects import ASTRONAUT_VIEWS, load_image_file, load_subject
from audit.errors import BudgetExceeded, ProtectionError
from audit.parts.protections.base import Protection, ProtectionContext, check_budget
from audit.parts.protections.folder import ProtectedFolder

NAMES = ("a.png", "b.png", "c.png")
DELTA = 3


def rgb(size: tuple[int, int] = (80, 80), seed: int = 0) -> np.ndarray:
    # Away from 0 and 255 so that ±DELTA is never clipped.
    return np.random.default_rng(seed).integers(10, 246, (size[1], size[0], 3), dtype=np.uint8)


def perturb(array: np.ndarray, seed: int = 0, delta: int = DELTA) -> np.ndarray:
    signs = np.random.default_rng(100 + seed).choice([-delta, delta], array.shape)
    return (array.astype(np.int16) + signs).clip(0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Clean data DIR/alice/{a,b,c}.png (80×80) and protected PROT/alice/ perturbed by ±3."""
    data, prot = tmp_path / "data", tmp_path / "prot"
    for i, name in enumerate(NAMES):
        clean = rgb(seed=i)
        save(data / "alice" / name, clean)
        save(prot / "alice" / name, perturb(clean, seed=i))
    return data, prot


def context(name: str, data_dir: Path | None, resolution: int = 64) -> ProtectionContext:
    return ProtectionContext(
        model=None,
        device=torch.device("cpu"),
        seed=0,
        tier=None,
        progress=audit.run.progress.Progress(),
        subject=load_subject(name, data_dir, resolution),
    )


def run(protection: ProtectedFolder, ctx: ProtectionContext):
    return protection.protect(ctx.subject.images.clone(), ctx)


def test_pairs_by_name_and_measures_linf(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    ctx = context("alice", data)
    out = run(ProtectedFolder(prot), ctx)
    assert out.images.dtype == torch.uint8 and out.images.shape == (3, 3, 64, 64)
    info = out.info
    assert info["pairs"] == {n: n for n in NAMES}
    assert info["folder"] == str(prot / "alice")
    assert info["linf_original_255"] == dict.fromkeys(NAMES, DELTA)
    assert info["linf_original_255_max"] == DELTA
    assert info["original_sizes"] == dict.fromkeys(NAMES, "80×80")
    assert info["epsilon"] is None and "measured, not judged" in info["budget"]
    # At the audit resolution: the same images the engine gets, compared with the clean ones.
    for i, name in enumerate(NAMES):
        expected = (
            (
                out.images[i].to(torch.int16)
                - to_uint8(ctx.subject.images[i][None])[0].to(torch.int16)
            )
            .abs()
            .max()
        )
        assert info["linf_255"][name] == int(expected)
    # Protected side read exactly as the clean side (same conversions and resize).
    _, expected0 = load_image_file(prot / "alice" / "a.png", 64)
    assert torch.equal(out.images[0], to_uint8(expected0[None])[0])
    assert any("downscaled from 80 px to 64×64" in n for n in info["notes"])
    assert len(info["content_hash"]) == 64


def test_extension_may_differ(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    # Clean a.png, protected a.bmp (lossless, so the measured budget is unchanged).
    array = np.asarray(Image.open(prot / "alice" / "a.png"))
    (prot / "alice" / "a.png").unlink()
    save(prot / "alice" / "a.bmp", array)
    out = run(ProtectedFolder(prot), context("alice", data))
    assert out.info["pairs"]["a.png"] == "a.bmp"
    assert out.info["linf_original_255"]["a.png"] == DELTA


def test_clean_jpeg_protected_png(tmp_path: Path) -> None:
    data, prot = tmp_path / "data", tmp_path / "prot"
    for i, stem in enumerate("xyz"):
        save(data / "bob" / f"{stem}.jpg", rgb(seed=i))
        # The protector works on what the JPEG decodes to.
        decoded = np.asarray(Image.open(data / "bob" / f"{stem}.jpg").convert("RGB"))
        save(prot / "bob" / f"{stem}.png", perturb(decoded, seed=i, delta=2))
    out = run(ProtectedFolder(prot), context("bob", data))
    assert out.info["pairs"] == {"x.jpg": "x.png", "y.jpg": "y.png", "z.jpg": "z.png"}
    assert out.info["linf_original_255_max"] <= 2


def test_images_directly_in_the_folder_for_one_subject(tmp_path: Path) -> None:
    data, prot = tmp_path / "alice", tmp_path / "prot"
    for i, name in enumerate(NAMES):
        clean = rgb(seed=i)
        save(data / name, clean)
        save(prot / name, perturb(clean, seed=i))
    out = run(ProtectedFolder(prot), context("alice", data))
    assert out.info["folder"] == str(prot) and "directly" in out.info["layout"]
    assert out.info["linf_original_255_max"] == DELTA
    # Refused when the audit has several subjects: one folder cannot be every subject's.
    with pytest.raises(ProtectionError, match=r"several \(alice, bob\).*sub-folder named after it"):
        run(ProtectedFolder(prot, subjects=["alice", "bob"]), context("alice", data))


def test_bundled_subject(tmp_path: Path) -> None:
    from skimage import data as skdata

    photo = Image.fromarray(skdata.astronaut())
    prot = tmp_path / "prot" / "astronaut"
    for i, (name, box, flip) in enumerate(ASTRONAUT_VIEWS):
        view = photo.crop(box)
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view
        save(prot / name, perturb(np.asarray(view), seed=i, delta=4))
    out = run(ProtectedFolder(tmp_path / "prot"), context("astronaut", None))
    assert out.images.shape == (4, 3, 64, 64)
    assert out.info["linf_original_255_max"] <= 4 and out.info["linf_original_255_max"] >= 3
    assert out.info["original_sizes"]["astronaut-2-tight-shifted-crop.png"] == "170×170"


def test_missing_counterpart_named(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    (prot / "alice" / "b.png").unlink()
    with pytest.raises(
        ProtectionError, match=r"clean files without a protected counterpart in .*alice: b\.png"
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_extra_protected_file_named(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    save(prot / "alice" / "d_glazed.png", rgb(seed=9))
    with pytest.raises(
        ProtectionError,
        match=r"protected files without a clean counterpart: d_glazed\.png — rename",
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_non_image_files_ignored_with_a_note(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    (prot / "alice" / "log.txt").write_text("glaze log")
    out = run(ProtectedFolder(prot), context("alice", data))
    assert any("log.txt: not an image file" in n for n in out.info["notes"])


def test_different_original_size_names_both(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    save(prot / "alice" / "c.png", rgb((96, 80), seed=2))
    with pytest.raises(
        ProtectionError,
        match=r"c\.png is 96×80 but its clean image c\.png is 80×80.*keep the image size",
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_swapped_size_hints_orientation(tmp_path: Path) -> None:
    data, prot = tmp_path / "data", tmp_path / "prot"
    for i, name in enumerate(NAMES):
        save(data / "alice" / name, rgb((80, 60), seed=i))
        save(prot / "alice" / name, rgb((80, 60) if i else (60, 80), seed=i))
    with pytest.raises(
        ProtectionError,
        match=r"a\.png is 60×80 but its clean image a\.png is 80×60 \(width and height swapped: an "
              r"EXIF",
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_ambiguous_stem(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    save(prot / "alice" / "a.webp", rgb(seed=0))
    with pytest.raises(
        ProtectionError,
        match=r"ambiguous pairs: clean a\.png has 2 candidates \(a\.png, a\.webp\): keep only one",
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_clean_files_sharing_a_stem_need_exact_names(tmp_path: Path) -> None:
    data, prot = tmp_path / "data", tmp_path / "prot"
    for i, name in enumerate(("a.png", "a.bmp", "b.png")):
        clean = rgb(seed=i)
        save(data / "alice" / name, clean)
        save(prot / "alice" / name, perturb(clean, seed=i))
    out = run(ProtectedFolder(prot), context("alice", data))
    assert out.info["pairs"] == {"a.bmp": "a.bmp", "a.png": "a.png", "b.png": "b.png"}
    (prot / "alice" / "a.bmp").rename(prot / "alice" / "a.tif")
    with pytest.raises(
        ProtectionError,
        match=r"share the stem 'a', so their protected versions must keep the exact names",
    ):
        run(ProtectedFolder(prot), context("alice", data))


def test_missing_subject_folder_named_with_fix(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    (prot / "alice").rename(prot / "alicia")
    with pytest.raises(ProtectionError) as info:
        run(ProtectedFolder(prot), context("alice", data))
    message = str(info.value)
    assert f"folder {prot / 'alice'} does not exist (sub-folders found: alicia)" in message
    assert (
        f"Put the protected versions of 'alice' images in {prot / 'alice'}/ under the clean file "
        "names (a.png, b.png, c.png"
        in message
    )


def test_missing_or_bad_path_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ProtectionError, match="does not exist"):
        ProtectedFolder(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ProtectionError, match="is a file, not a folder"):
        ProtectedFolder(tmp_path / "file.png")
    with pytest.raises(ProtectionError, match="divide by 255"):
        ProtectedFolder(tmp_path, epsilon=8)


def test_params_hash_changes_with_the_files(folders: tuple[Path, Path]) -> None:
    _, prot = folders
    protection = ProtectedFolder(prot, epsilon=0.05)
    first = protection.params(None)
    assert first["epsilon"] == 0.05 and first["path"] == str(prot.resolve())
    assert protection.params(None) == first
    array = np.asarray(Image.open(prot / "alice" / "b.png")).copy()
    array[0, 0, 0] ^= 1
    save(prot / "alice" / "b.png", array)
    second = protection.params(None)
    assert second["content_hash"] != first["content_hash"]
    (prot / "alice" / "b.png").rename(prot / "alice" / "b2.png")
    assert protection.params(None)["content_hash"] != second["content_hash"]
    assert ProtectedFolder(prot).params(None)["epsilon"] is None


def test_attributes_and_budget() -> None:
    assert issubclass(ProtectedFolder, Protection)
    assert ProtectedFolder.name == "dir"
    assert ProtectedFolder.shared_across_replicates is True
    assert ProtectedFolder.has_objective is False
    assert ProtectedFolder.uses_model is False


def test_epsilon_none_measured_not_judged(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    protection = ProtectedFolder(prot)
    assert protection.declared_epsilon is None and protection.epsilon == 1.0
    ctx = context("alice", data)
    out = run(protection, ctx)
    # The engine's check accepts it and returns the measured ℓ∞ at the audit resolution.
    measured = check_budget(ctx.subject.images, out.images, protection.epsilon, protection.name)
    assert measured == out.info["linf_255_max"] / 255


def test_declared_epsilon_judged_at_original_resolution(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    ok = ProtectedFolder(prot, epsilon=3 / 255)
    assert ok.declared_epsilon == ok.epsilon == pytest.approx(3 / 255)
    assert run(ok, context("alice", data)).info["linf_original_255_max"] == DELTA
    with pytest.raises(
        BudgetExceeded,
        match=r"original resolution: ε = 0\.0078 \(2\.00/255, at most 2 levels.*a\.png vs clean "
              r"a\.png: 3/255",
    ):
        run(ProtectedFolder(prot, epsilon=2 / 255), context("alice", data))


def test_clean_file_changed_after_loading(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    ctx = context("alice", data)
    save(data / "alice" / "a.png", rgb(seed=42))
    with pytest.raises(
        ProtectionError, match=r"clean files a\.png of subject 'alice'.*changed on disk"
    ):
        run(ProtectedFolder(prot), ctx)


def test_no_subject_in_context(folders: tuple[Path, Path]) -> None:
    data, prot = folders
    ctx = context("alice", data)
    images = ctx.subject.images
    ctx.subject = None
    with pytest.raises(ProtectionError, match="carries no subject"):
        ProtectedFolder(prot).protect(images, ctx)


def test_load_image_file_matches_the_subject_loader(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / "s" / f"{i}.png", rgb((90, 70), seed=i))
    subject = audit.data.subjects.load_subject("s", tmp_path, 48)
    notes: list[str] = []
    original, tensor = load_image_file(tmp_path / "s" / "0.png", 48, notes)
    assert original.size == (90, 70)
    assert torch.equal(to_uint8(tensor[None]), to_uint8(subject.images[:1]))
    assert notes == [
        "0.png: non-square 90×70 centre-cropped to 70×70",
        "0.png: downscaled from 70 px to 48×48 (Lanczos)",
    ]


def test_params_model_builds_the_protection(folders: tuple[Path, Path]) -> None:
    from audit.parts.protections.folder import ProtectedFolderParams

    _, prot = folders
    params = ProtectedFolderParams(path=str(prot))
    assert params.epsilon is None
    assert ProtectedFolder(**params.model_dump()).declared_epsilon is None
    assert ProtectedFolder.random is False
    with pytest.raises(ValueError, match="epsilon"):
        ProtectedFolderParams(path=str(prot), epsilon=8)


def test_images_directly_refused_for_a_second_subject(tmp_path: Path) -> None:
    prot = tmp_path / "prot"
    for subject in ("alice", "bob"):
        for i, name in enumerate(NAMES):
            save(tmp_path / subject / name, rgb(seed=i))
    for i, name in enumerate(NAMES):
        save(prot / name, perturb(rgb(seed=i), seed=i))
    protection = ProtectedFolder(prot)
    run(protection, context("alice", tmp_path / "alice"))
    with pytest.raises(ProtectionError, match=r"several \(alice, bob\)"):
        run(protection, context("bob", tmp_path / "bob"))


def test_resizing_can_raise_linf_above_the_files_budget(tmp_path: Path) -> None:
    """Why a declared ε is judged on the files: ±12 random signs at 80 px read 64 px exceed 12."""
    data, prot = tmp_path / "data", tmp_path / "prot"
    for i, name in enumerate(NAMES):
        clean = rgb(seed=i)
        save(data / "alice" / name, clean)
        save(prot / "alice" / name, perturb(clean, seed=i, delta=12))
    protection = ProtectedFolder(prot, epsilon=12 / 255)
    ctx = context("alice", data)
    out = run(protection, ctx)  # within budget at the original resolution
    assert out.info["linf_original_255_max"] == 12
    assert out.info["linf_255_max"] > 12
    with pytest.raises(BudgetExceeded):
        check_budget(ctx.subject.images, out.images, protection.epsilon, protection.name)


def test_scenarios_that_need_the_objective_are_skipped_for_a_folder(
        folders: tuple[Path, Path], tmp_path: Path) -> None:
    """A dir: protection has no objective: a scenario that re-crafts through one is skipped, saying
    why."""
    from audit.config.options import AuditOptions
    from audit.config.scenario import load_scenario
    from audit.run.session import AuditSession

    data, protected = folders
    scenario_file = tmp_path / "adaptive.yaml"
    scenario_file.write_text("id: adaptive\nversion: 1\ntitle: t\nwhy: w\nsource: s\nrequires: "
                             "[objective]\n")
    session = AuditSession(AuditOptions(protection=f"dir:{protected}", data=data,
                                        results_dir=tmp_path / "res"))
    record = session.run_case(load_scenario(scenario_file), "alice", "dir-adaptive-alice")
    assert record.outcome == "skipped"
    assert "has none the toolkit can see" in record.reason and "adaptive" in record.reason
    assert record.cache.misses == []  # nothing was computed
    assert record.plan is None and "plan" not in record.dump()  # left out, not written as null
