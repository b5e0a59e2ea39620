"""Subject sets: N clean images of one person or of one artist's style, validated on load.

``--data DIR`` holds one sub-folder of images per subject (or images directly, making one
subject named after the folder); a sub-folder's ``subject.yaml`` may say its kind
(``kind: style``; ``audit/data/kinds.py``). Without ``--data``, the bundled subject of the kind
``--subject-kind`` names is used (``person`` by default; ``style``: **stained-glass**,
``audit/data/style.py``):

**astronaut** — scikit-image's ``data.astronaut()``: "Eileen Collins (born November 19, 1956)
is an American astronaut ... This image was downloaded from the NASA Great Images database
... No known copyright restrictions, released into the public domain." (scikit-image data
README). It is the only real colour portrait that ships inside an installed package here, and
DreamBooth needs a few images of one person, so the subject is four *views* derived from it
(two face-centred crops of different sizes, a horizontal flip, a shifted crop). The face box
(175, 76)–(265, 166) was found once with dlib's HOG frontal-face detector at development time;
every view contains it whole. Records say this in the subject's notes.

Everything that is converted is said in the notes (grayscale → RGB, alpha dropped over
white, 16-bit → 8-bit, EXIF orientation, centre crop, resize); everything that cannot be used is
a DataError naming the file and the fix. Skipped entries of ``--data`` (hidden folders, symlink
loops, broken links) are said in every subject's notes, or listed in the error when no subject
is left.

Degenerate subjects are refused:

- **Image size**: the shorter side must be at least ``ceil(resolution / 2)`` (32 px at the
  smoke tier's 64 px, 256 px at Stable Diffusion's 512 px). Upscaling more than 2× invents
  detail (Lanczos ringing and blur) that the exploit would learn instead of the person, and
  that a protection's perturbation would be computed on. A relative floor, not an absolute
  one, because the audited resolution ranges from 64 px (smoke) to the model's native size.
- **Image count**: at least ``MIN_IMAGES`` = 2 (DreamBooth on one picture memorises that
  picture, not a subject); below ``RECOMMENDED_IMAGES`` = 4 a warning note — the DreamBooth
  paper uses 3–5 images per subject and Anti-DreamBooth 4 per set.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from audit.data.images import from_pil, to_uint8
from audit.data.kinds import KIND_FILE, PERSON, STYLE, SubjectKind, read_kind
from audit.data.style import STYLE_SUBJECT, style_works
from audit.errors import DataError

BUNDLED_SUBJECT = "astronaut"
#: the bundled subject of each kind (``--subject-kind`` without ``--data``)
BUNDLED = {PERSON.name: BUNDLED_SUBJECT, STYLE.name: STYLE_SUBJECT}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
MIN_IMAGES = 2  # refused below: one picture is memorised, not learnt as a subject
RECOMMENDED_IMAGES = 4  # a note below: DreamBooth uses 3-5 per subject, Anti-DreamBooth 4 per set
MAX_UPSCALE = 2  # shorter side >= ceil(resolution / MAX_UPSCALE)
# EXIF orientation → (what a viewer does, the transpose that does it), as ImageOps.exif_transpose.
EXIF_ORIENTATION = 0x0112
ORIENTATIONS = {
    2: ("mirrored left-right", Image.Transpose.FLIP_LEFT_RIGHT),
    3: ("rotated 180°", Image.Transpose.ROTATE_180),
    4: ("mirrored top-bottom", Image.Transpose.FLIP_TOP_BOTTOM),
    5: ("transposed: mirrored left-right and rotated 90° counter-clockwise",
        Image.Transpose.TRANSPOSE),
    6: ("rotated 90° clockwise", Image.Transpose.ROTATE_270),
    7: ("transversed: mirrored left-right and rotated 90° clockwise", Image.Transpose.TRANSVERSE),
    8: ("rotated 90° counter-clockwise", Image.Transpose.ROTATE_90),
}
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
    kind: SubjectKind = PERSON


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
        "face-centred crops of 200, 170 (shifted) and 240 px and a horizontal flip; resized to "
        f"{resolution}×{resolution} (Lanczos)",
    )
    source = ("bundled: scikit-image data.astronaut() — NASA photograph of Eileen Collins, public "
              "domain")
    return Subject(BUNDLED_SUBJECT, batch, tuple(files), source, notes, _hash(batch, tuple(files)))


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in ("Thumbs.db", "desktop.ini")


def _link_problem(path: Path, root: Path | None = None) -> str | None:
    """Why a symlink cannot be followed ("symlink loop ...", "broken symlink ..."), else None.

    A link whose target is ``root`` or one of its parents is a loop too: followed, the folder
    would contain itself.
    """
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"symlink loop ({path.name} → {os.readlink(path)} leads back to itself)"
        return f"broken symlink ({path.name} → {os.readlink(path)}, which does not exist)"
    if root is not None:
        target, top = path.resolve(), Path(root).resolve()
        if target == top or target in top.parents:
            return f"symlink loop ({path.name} → {os.readlink(path)} is its own parent folder)"
    return None


def _scan_data_dir(data_dir: Path) -> tuple[list[str], list[str]]:
    """The subject folders' names (sorted) and a note for each entry skipped, with why."""
    subjects, skipped = [], []
    for path in sorted(data_dir.iterdir()):
        problem = _link_problem(path, data_dir)
        if problem:
            skipped.append(f"{path.name}: skipped, {problem}; remove the link or point it at a "
                           "subject folder")
        elif path.is_dir() and path.name.startswith("."):
            skipped.append(f"{path.name}: skipped, hidden folder (name starts with '.'); rename it "
                           "without the dot to audit it")
        elif path.is_dir() and _visible(path):
            subjects.append(path.name)
    return subjects, skipped


def _image_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The candidate image files of a subject folder (sorted) and notes on what is ignored."""
    files, notes = [], []
    for path in sorted(folder.iterdir()):
        if not _visible(path):
            continue
        problem = _link_problem(path)
        if problem:
            raise DataError(f"{path}: {problem}. Remove the link or point it at the image file.")
        if path.is_dir():
            notes.append(f"{path.name}/: sub-folder ignored (a subject's images are read from its "
                         "own folder only)")
        elif path.is_file() and path.name != KIND_FILE:  # the kind file is read by read_kind
            files.append(path)
    return files, notes


def bundled_style_subject(resolution: int) -> Subject:
    """The bundled style subject (``audit/data/style.py``)."""
    batch, files = style_works(resolution)
    notes = (f"4 works in one synthetic style (stained glass: SLIC cells in their mean colour, "
             f"dark outlines) made from scikit-image photographs; resized to "
             f"{resolution}×{resolution} (Lanczos)",)
    source = ("bundled: a synthetic style over scikit-image data.chelsea/coffee/rocket/astronaut "
              "(public domain / CC0)")
    return Subject(STYLE_SUBJECT, batch, files, source, notes, _hash(batch, files), STYLE)


def discover_subjects(data_dir: Path | None, kind: str | None = None) -> list[str]:
    """Names of the subjects in ``data_dir`` (sorted), or the bundled subject of ``kind``."""
    if data_dir is None:
        return [BUNDLED[read_kind(None, kind).name]]
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"--data {data_dir}: folder does not exist. Pass a folder holding one "
                        "sub-folder of images per subject.")
    if not data_dir.is_dir():
        raise DataError(f"--data {data_dir}: is a file, not a folder. Pass a folder holding one "
                        "sub-folder of images per subject.")
    subfolders, skipped = _scan_data_dir(data_dir)
    if subfolders:
        return subfolders
    if any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and _visible(p)
           and not _link_problem(p) for p in data_dir.iterdir()):
        return [data_dir.name]
    if skipped:
        raise DataError(
            f"--data {data_dir}: no subject left to audit; skipped: " + "; ".join(skipped) + ". "
            "Put each subject's images in a visible sub-folder of its own, e.g. DIR/alice/1.png, "
            "DIR/alice/2.png."
        )
    raise DataError(
        f"--data {data_dir}: the folder is empty (no sub-folders, no images). Put each subject's "
        "images in a sub-folder of its own, e.g. DIR/alice/1.png, DIR/alice/2.png."
    )


def _subject_folder(name: str, data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    folder = data_dir / name
    problem = _link_problem(folder, data_dir)
    if problem:
        raise DataError(f"--data {data_dir}: subject '{name}' is a {problem}. Remove the link or "
                        "point it at a subject folder.")
    if folder.is_dir():
        return folder
    if data_dir.name == name:
        return data_dir
    raise DataError(f"--data {data_dir}: subject '{name}' not found (no folder {folder}).")


def _to_rgb(
        image: Image.Image, path: Path, notes: list[str], sixteen_bit: bool = False) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or sixteen_bit or array.max() > 255 else 255.0
        array = np.clip(np.round(array / top * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"{path.name}: {mode} ({'16' if top > 255 else '32'}-bit grayscale) → 8-bit "
                     f"RGB (scaled by {255 / top:.6g})")
        return Image.fromarray(array, mode="L").convert("RGB")
    if mode == "F":
        raise DataError(f"{path}: floating-point image (mode F) — save it as an 8-bit RGB PNG or "
                        "JPEG first.")
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


def _bomb_error(path: Path, size: tuple[int, int] | None, pixels: int | None) -> DataError:
    limit = Image.MAX_IMAGE_PIXELS
    dims = (f"{size[0]}×{size[1]} = {size[0] * size[1]:,} pixels" if size else f"{pixels:,} pixels"
            if pixels else "its size")
    return DataError(
        f"{path}: {dims}, over Pillow's decompression-bomb limit of {limit:,} pixels "
        "(PIL.Image.MAX_IMAGE_PIXELS), so it is not decoded. Downscale the image (the audit "
        "resizes it to the audited resolution anyway; e.g. to at most 4096 px on the long side), "
        "or, if you trust the file, raise the limit knowingly before the audit starts, e.g. in "
        "your conftest.py: `import PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = <pixels>` (None "
        "disables the check)."
    )


def _header_size(path: Path) -> tuple[int, int] | None:
    """An image's width × height from its header, ignoring the bomb limit (nothing decoded)."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as opened:
            return opened.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _rawmode(image: Image.Image) -> str:
    """The decoder's raw mode of an opened (not yet loaded) image, e.g. "RGB;16B"."""
    tile = getattr(image, "tile", None) or []
    if not tile:
        return ""
    args = tile[0][3] if len(tile[0]) > 3 else tile[0].args
    return str(args[0] if isinstance(args, tuple) else args)


def _read_deep(path: Path) -> Image.Image | None:
    """A 16-bit-per-channel colour image at full depth, scaled 65535 → 255 (rounded), or None.

    Pillow has no 16-bit colour mode: it opens such a PNG or TIFF as 8-bit RGB(A) keeping each
    sample's high byte (65535·k/65535 truncated), so we decode it with OpenCV instead.
    """
    try:
        import cv2
    except ImportError:
        return None
    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (3, 4):
        return None
    array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # BGR(A) → RGB(A)
    scaled = np.round(array.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(scaled, mode="RGBA" if scaled.shape[2] == 4 else "RGB")


def _orient(image: Image.Image, orientation: int, path: Path, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation, always (also when the size does not change), and say so.

    The same transposes as ``PIL.ImageOps.exif_transpose``; done here so that it also applies
    to a 16-bit image decoded outside Pillow.
    """
    if orientation == 1:
        return image
    if orientation not in ORIENTATIONS:
        notes.append(f"{path.name}: EXIF orientation {orientation} is not a valid value (1–8); "
                     "ignored")
        return image
    what, method = ORIENTATIONS[orientation]
    notes.append(f"{path.name}: EXIF orientation {orientation} applied ({what}), as image viewers "
                 "show it")
    return image.transpose(method)


def _read_image(path: Path, notes: list[str]) -> Image.Image:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: not an image file (supported: {', '.join(sorted(IMAGE_SUFFIXES))}). Remove "
            "it or move it out of the subject folder."
        )
    limit = Image.MAX_IMAGE_PIXELS
    deep = None
    try:
        with warnings.catch_warnings():
            # refused below, by name
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            width, height = opened.size
            if limit is not None and width * height > limit:
                raise _bomb_error(path, (width, height), None)
            rawmode = _rawmode(opened)
            # Pillow keeps the high byte
            if opened.mode in ("RGB", "RGBA", "LA") and ";16" in rawmode:
                deep = rawmode
            opened.load()
            image = opened.copy()
            n_frames = getattr(opened, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise _bomb_error(path, _header_size(path), None) from exc
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt or not really {path.suffix}). "
                        "Re-export it or remove it.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: the image is truncated or corrupt ({exc}). Re-export it or "
                        "remove it.") from None
    if n_frames > 1:
        notes.append(f"{path.name}: {n_frames} frames, first used")
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if deep:
        full = _read_deep(path)
        if full is not None and full.size == image.size:
            notes.append(f"{path.name}: 16-bit → 8-bit ({image.mode}; read at full depth, scaled "
                         "65535 → 255, rounded)")
            image = full
        else:
            notes.append(f"{path.name}: 16-bit → 8-bit ({image.mode}; Pillow's decoder keeps the "
                         "high byte; install opencv-python-headless for rounding)")
    image = _orient(image, orientation, path, notes)
    return _to_rgb(image, path, notes, sixteen_bit=";16" in rawmode)


def subject_kind(name: str, data_dir: Path | None, kind: str | None = None) -> SubjectKind:
    """A subject's kind without loading its images: ``kind`` (``--subject-kind``), else its
    folder's ``subject.yaml``, else ``person``; a bundled subject is of its own kind."""
    if kind is not None:
        return read_kind(None, kind)
    if data_dir is None:
        return STYLE if name == STYLE_SUBJECT else PERSON
    return read_kind(_subject_folder(name, Path(data_dir)))


def load_subject(name: str, data_dir: Path | None, resolution: int,
                 kind: str | None = None) -> Subject:
    """Load and validate one subject at ``resolution``×``resolution`` (DataError otherwise);
    ``kind`` (``--subject-kind``) overrides the folder's ``subject.yaml``."""
    if resolution < 8:
        raise DataError(f"resolution {resolution} is too small; use at least 8 px.")
    if data_dir is None:
        makers = {BUNDLED_SUBJECT: bundled_subject, STYLE_SUBJECT: bundled_style_subject}
        if name not in makers:
            raise DataError(f"unknown bundled subject '{name}'; the bundled subjects are "
                            f"{', '.join(repr(n) for n in makers)} (--subject-kind person or "
                            "style).")
        subject = makers[name](resolution)
        return subject if kind is None else replace(subject, kind=read_kind(None, kind))
    data_dir = Path(data_dir)
    folder = _subject_folder(name, data_dir)
    notes: list[str] = []
    if folder != data_dir:
        notes.extend(f"--data {data_dir.name}: {note}" for note in _scan_data_dir(data_dir)[1])
    files, ignored = _image_files(folder)
    notes.extend(ignored)
    if not files:
        raise DataError(f"{folder}: subject folder is empty. Put the subject's images (PNG/JPEG) "
                        "in it or remove it.")
    images = [(path, _read_image(path, notes)) for path in files]
    if len(images) < MIN_IMAGES:
        raise DataError(
            f"{folder}: only {len(images)} image ({images[0][0].name}); a subject needs at least "
            f"{MIN_IMAGES}. DreamBooth on a single picture memorises that picture instead of "
            "learning the person. Add more images of the same person to the folder "
            f"({RECOMMENDED_IMAGES}–5 as in the DreamBooth and Anti-DreamBooth papers)."
        )
    if len(images) < RECOMMENDED_IMAGES:
        notes.append(
            f"only {len(images)} images; DreamBooth papers use 3–5 per subject and Anti-DreamBooth "
            f"{RECOMMENDED_IMAGES} per set, so results on fewer are noisier; add more if you can"
        )
    subject = _to_batch(name, folder, files, images, resolution, notes)
    return replace(subject, kind=read_kind(folder, kind))


def _to_batch(name: str, folder: Path, files: list[Path], images: list[tuple[Path, Image.Image]],
              resolution: int,
              notes: list[str]) -> Subject:
    """The subject's images as one batch at ``resolution``: one size checked, centre-cropped to a
    square, resized (Lanczos), each step said in ``notes``."""
    sizes = {image.size for _, image in images}
    if len(sizes) > 1:
        listing = ", ".join(f"{p.name} {im.size[0]}×{im.size[1]}" for p, im in images)
        raise DataError(
            f"{folder}: images of mixed sizes ({listing}). A protection is computed at one size; "
            "resize or crop all of a subject's images to one size first."
        )
    (width, height), = sizes
    side, floor = min(width, height), math.ceil(resolution / MAX_UPSCALE)
    if side < floor:
        raise DataError(
            f"{folder}: its images ({images[0][0].name} and the rest) are {width}×{height}, "
            f"shorter side {side} px; the audit works at {resolution}×{resolution} and upscaling "
            f"more than {MAX_UPSCALE}× (shorter side under {floor} px) invents detail the exploit "
            f"would learn instead of the person. Use images whose shorter side is at least {floor} "
            f"px (ideally {resolution} px or more), or audit at a lower resolution (--audit-set "
            "resolution=N)."
        )
    tensors = []
    for _, image in images:
        if width != height:
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if image.size != (resolution, resolution):
            image = _resize(image, resolution)
        tensors.append(from_pil(image))
    if width != height:
        notes.append(f"non-square {width}×{height} images centre-cropped to {side}×{side}")
    if side != resolution:
        direction = "upscaled" if side < resolution else "downscaled"
        notes.append(f"{direction} from {side} px to {resolution}×{resolution} (Lanczos)")
    batch = torch.stack(tensors)
    names = tuple(p.name for p in files)
    return Subject(name, batch, names, str(folder), tuple(notes), _hash(batch, names))


def load_image_file(path: Path, resolution: int, notes: list[str]
                    | None = None) -> tuple[Image.Image, torch.Tensor]:
    """One image file read exactly as ``load_subject`` reads each of a subject's files.

    The same conversions (first frame, 16-bit → 8-bit, EXIF orientation, alpha over white,
    grayscale → RGB), then the same centre crop to a square and Lanczos resize to
    ``resolution``×``resolution``. Returns the converted RGB image at its original size
    (before crop and resize) and the 3×R×R float tensor in [0, 1]. Each conversion is appended
    to ``notes`` under the file's name; what cannot be read is a DataError naming the file.
    No subject-level checks (image count, minimum size): the caller does its own.
    """
    path = Path(path)
    notes = [] if notes is None else notes
    original = _read_image(path, notes)
    width, height = original.size
    side = min(width, height)
    image = original
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        notes.append(f"{path.name}: non-square {width}×{height} centre-cropped to {side}×{side}")
    if image.size != (resolution, resolution):
        image = _resize(image, resolution)
        direction = "upscaled" if side < resolution else "downscaled"
        notes.append(f"{path.name}: {direction} from {side} px to {resolution}×{resolution} "
                     "(Lanczos)")
    return original, from_pil(image)
