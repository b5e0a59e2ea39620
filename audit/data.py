"""Subject sets: N clean images of one person, validated on load.

``--data DIR`` holds one sub-folder of images per subject (or images directly, making one
subject named after the folder). Without it, the bundled subject is used:

**astronaut** — scikit-image's ``data.astronaut()``: "Eileen Collins (born November 19, 1956)
is an American astronaut ... This image was downloaded from the NASA Great Images database
... No known copyright restrictions, released into the public domain." (scikit-image data
README). It is the only real colour portrait that ships inside an installed package here, and
DreamBooth needs a few images of one person, so the subject is four *views* derived from it
(two face-centred crops of different sizes, a horizontal flip, a shifted crop). The face box
(175, 76)–(265, 166) was found once with dlib's HOG frontal-face detector at development time;
every view contains it whole. Records say this in the subject's notes.

Everything that is converted is said in the notes (grayscale → RGB, alpha dropped over
white, 16-bit → 8-bit, EXIF rotation, centre crop, resize); everything that cannot be used is
a DataError naming the file and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from audit.errors import DataError
from audit.images import from_pil, to_uint8

BUNDLED_SUBJECT = "astronaut"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# (left, top, right, bottom) in the 512×512 original; face box (175, 76)-(265, 166).
ASTRONAUT_VIEWS = (
    ("astronaut-0-face-crop.png", (120, 21, 320, 221), False),
    ("astronaut-1-face-crop-flipped.png", (120, 21, 320, 221), True),
    ("astronaut-2-tight-shifted-crop.png", (141, 30, 311, 200), False),
    ("astronaut-3-wide-crop.png", (95, 5, 335, 245), False),
)


@dataclass(frozen=True)
class Subject:
    name: str
    images: torch.Tensor  # N×3×R×R float in [0, 1]
    files: tuple[str, ...]
    source: str
    notes: tuple[str, ...]
    content_hash: str


def _hash(images: torch.Tensor, files: tuple[str, ...]) -> str:
    h = hashlib.sha256("|".join(files).encode())
    h.update(to_uint8(images).numpy().tobytes())
    return h.hexdigest()


def _resize(image: Image.Image, resolution: int) -> Image.Image:
    return image.resize((resolution, resolution), Image.Resampling.LANCZOS)


def bundled_subject(resolution: int) -> Subject:
    from skimage import data as skdata

    original = Image.fromarray(skdata.astronaut())
    images, files = [], []
    for name, box, flip in ASTRONAUT_VIEWS:
        view = original.crop(box)
        if flip:
            view = ImageOps.mirror(view)
        images.append(from_pil(_resize(view, resolution)))
        files.append(name)
    batch = torch.stack(images)
    notes = (
        "4 views derived from one photograph (scikit-image data.astronaut(), 512×512): "
        "face-centred crops of 200, 170 (shifted) and 240 px and a horizontal flip; "
        f"resized to {resolution}×{resolution} (Lanczos)",
    )
    source = "bundled: scikit-image data.astronaut() — NASA photograph of Eileen Collins, public domain"
    return Subject(BUNDLED_SUBJECT, batch, tuple(files), source, notes, _hash(batch, tuple(files)))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in ("Thumbs.db", "desktop.ini")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p))


def discover_subjects(data_dir: Path | None) -> list[str]:
    """Names of the subjects in ``data_dir`` (sorted), or the bundled subject."""
    if data_dir is None:
        return [BUNDLED_SUBJECT]
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"--data {data_dir}: folder does not exist. Pass a folder holding one sub-folder of images per subject.")
    if not data_dir.is_dir():
        raise DataError(f"--data {data_dir}: is a file, not a folder. Pass a folder holding one sub-folder of images per subject.")
    subfolders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and _visible(p))
    if subfolders:
        return subfolders
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in _image_files(data_dir)):
        return [data_dir.name]
    raise DataError(
        f"--data {data_dir}: the folder is empty (no sub-folders, no images). Put each subject's "
        "images in a sub-folder of its own, e.g. DIR/alice/1.png, DIR/alice/2.png."
    )


def _subject_folder(name: str, data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    folder = data_dir / name
    if folder.is_dir():
        return folder
    if data_dir.name == name:
        return data_dir
    raise DataError(f"--data {data_dir}: subject '{name}' not found (no folder {folder}).")


def _to_rgb(image: Image.Image, path: Path, notes: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(np.round(array / top * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"{path.name}: {mode} ({'16' if top > 255 else '32'}-bit grayscale) → 8-bit RGB (scaled by {255 / top:.6g})")
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        raise DataError(f"{path}: floating-point image (mode F) — save it as an 8-bit RGB PNG or JPEG first.")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append(f"{path.name}: {mode} → RGB (alpha composited over white)")
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("L", "1"):
        notes.append(f"{path.name}: grayscale ({mode}) → RGB (channel replicated)")
        return image.convert("RGB")
    if mode != "RGB":
        notes.append(f"{path.name}: {mode} → RGB")
        return image.convert("RGB")
    return image


def _read_image(path: Path, notes: list[str]) -> Image.Image:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: not an image file (supported: {', '.join(sorted(IMAGE_SUFFIXES))}). "
            "Remove it or move it out of the subject folder."
        )
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or not really {path.suffix}). Re-export it or remove it.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: the image is truncated or corrupt ({exc}). Re-export it or remove it.") from None
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"{path.name}: {image.n_frames} frames, first used")
    transposed = ImageOps.exif_transpose(image)
    if transposed is not None and transposed.size != image.size:
        notes.append(f"{path.name}: rotated by its EXIF orientation")
        image = transposed
    return _to_rgb(image, path, notes)


def load_subject(name: str, data_dir: Path | None, resolution: int) -> Subject:
    """Load and validate one subject at ``resolution``×``resolution`` (DataError otherwise)."""
    if resolution < 8:
        raise DataError(f"resolution {resolution} is too small; use at least 8 px.")
    if data_dir is None:
        if name != BUNDLED_SUBJECT:
            raise DataError(f"unknown bundled subject '{name}'; the bundled subject is '{BUNDLED_SUBJECT}'.")
        return bundled_subject(resolution)
    folder = _subject_folder(name, Path(data_dir))
    files = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: subject folder is empty. Put the subject's images (PNG/JPEG) in it or remove it.")
    notes: list[str] = []
    images = [(path, _read_image(path, notes)) for path in files]
    sizes = {image.size for _, image in images}
    if len(sizes) > 1:
        listing = ", ".join(f"{p.name} {im.size[0]}×{im.size[1]}" for p, im in images)
        raise DataError(
            f"{folder}: images of mixed sizes ({listing}). A protection is computed at one size; "
            "resize or crop all of a subject's images to one size first."
        )
    (width, height), = sizes
    tensors = []
    for _, image in images:
        if width != height:
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if image.size != (resolution, resolution):
            image = _resize(image, resolution)
        tensors.append(from_pil(image))
    if width != height:
        notes.append(f"non-square {width}×{height} images centre-cropped to {min(width, height)}×{min(width, height)}")
    if min(width, height) != resolution:
        direction = "upscaled" if min(width, height) < resolution else "downscaled"
        notes.append(f"{direction} from {min(width, height)} px to {resolution}×{resolution} (Lanczos)")
    batch = torch.stack(tensors)
    names = tuple(p.name for p in files)
    return Subject(name, batch, names, str(folder), tuple(notes), _hash(batch, names))
