"""``--protection=dir:PATH``: a folder of already-protected images, paired by file name.

How protections without code get audited (Glaze's or Mist's apps, web services): run the
tool on the clean subject images, save its outputs under the clean file names, and point the
audit at that folder. The folder mirrors ``--data``:

- ``PATH/<subject>/<file>``, one sub-folder per subject; or
- images directly in ``PATH`` when the audit has a single subject (e.g. ``--data`` holds images
  directly, or the bundled subject ``astronaut``, whose files are named as in
  ``audit.data.subjects.ASTRONAUT_VIEWS``).

Pairing: each clean file is paired with the protected file of the same stem; the extension may
differ (clean ``a.jpg`` ↔ protected ``a.png``: tools often re-encode). Two protected candidates
for one stem, a clean file without a protected one, a protected file without a clean one, or a
protected image whose size differs from its clean original are refused with a
``ProtectionError`` naming the files and the fix. Both sides are read with exactly the subject
loader's conversions (``audit.data.subjects.load_image_file``: EXIF orientation, 16-bit, alpha,
grayscale,
centre crop, Lanczos resize to the audit resolution), so both are compared at the same size.

Budget. A folder carries no declared budget, so ``epsilon=None`` (the default) means *measured,
not judged*: ``self.epsilon`` is set to 1.0 — the whole [0,1] range, so the base class's
validation and the engine's ``check_budget`` accept any output and return the measured ℓ∞ —
and ``self.declared_epsilon`` is None, which is what the engine reads to tell "no budget
declared" from a declared ε of 1. Overriding ``Protection.__init__`` instead would leave
``self.epsilon`` absent or None and break every caller that formats it. With an ε given (the
tool's documented budget), ``self.epsilon = self.declared_epsilon = ε`` and the output is judged
as for any protection; in addition ``protect`` judges it at the files' *original* resolution
(below), raising ``BudgetExceeded`` there too.

Resize caveat. The audit compares images at its resolution, so the ℓ∞ the engine measures is
that of the *resized* perturbation, which is a different number from the files' ℓ∞: Lanczos
averages a smooth or random-looking perturbation down, but its negative lobes add up
high-frequency patterns whose signs match the kernel's — ±12 random signs at 80 px measure 22
levels after resizing to 64 px (±12 at 512 px: 5 levels) — and 8-bit rounding adds ±1. The
number a protector quotes is the ℓ∞ of the published files, so ``info`` also records
``linf_original_255``: per image, the ℓ∞ in levels between the protected file and its clean
original at their (equal) original size, after the loader's conversions but before crop and
resize. A declared ε is judged against that number in ``protect``. The engine's
``check_budget`` at the audit resolution judges the resized images, which can exceed ε for a
folder that keeps it (above); where the images are resized it should only measure for this
class (pass ε = 1), since ``protect`` has judged the published files.

A folder does not change from one replicate to the next (``shared_across_replicates``), and
has no differentiable objective (``has_objective = False``): adaptive scenarios that re-craft
the perturbation through the protection's objective are skipped for it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import Field

from audit.data.images import from_pil, to_uint8
from audit.data.subjects import (
    ASTRONAUT_VIEWS,
    BUNDLED_SUBJECT,
    IMAGE_SUFFIXES,
    Subject,
    load_image_file,
)
from audit.errors import AuditError, BudgetExceeded, ProtectionError
from audit.parts.protections.base import (
    Protection,
    ProtectionContext,
    ProtectionOutput,
    budget_levels,
)
from audit.parts.registry import Params

if TYPE_CHECKING:
    from audit.config.tiers import TierSettings

#: Above this many levels a pair is noted as suspicious (wrong pairing, rotation, other crop).
SUSPICIOUS_LEVELS = 64


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in ("Thumbs.db", "desktop.ini")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and _visible(path) and path.is_file()


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names)


@dataclass
class _Pairing:
    """Clean files matched with protected ones by stem, and what did not match."""

    pairs: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)


def _match_stems(clean_names: Sequence[str], protected: Sequence[str]) -> _Pairing:
    """Pair each clean name with the protected name of the same stem (extensions may differ)."""
    clean_by_stem: dict[str, list[str]] = defaultdict(list)
    prot_by_stem: dict[str, list[str]] = defaultdict(list)
    for name in clean_names:
        clean_by_stem[Path(name).stem].append(name)
    for name in protected:
        prot_by_stem[Path(name).stem].append(name)
    pairing = _Pairing()
    for stem in sorted(set(clean_by_stem) | set(prot_by_stem)):
        cs, ps = clean_by_stem.get(stem, []), prot_by_stem.get(stem, [])
        if not cs:
            pairing.extra.extend(ps)
        elif not ps:
            pairing.missing.extend(cs)
        elif len(cs) == 1 and len(ps) == 1:
            pairing.pairs[cs[0]] = ps[0]
        elif len(cs) == 1:
            pairing.ambiguous.append(
                f"clean {cs[0]} has {len(ps)} candidates ({_listing(ps)}): keep only one"
            )
        elif sorted(cs) == sorted(ps):  # clean a.jpg and a.png: protected must keep exact names
            pairing.pairs.update({c: c for c in cs})
        else:
            pairing.ambiguous.append(
                f"clean {_listing(cs)} share the stem '{stem}', so their protected versions must "
                f"keep the exact names (found {_listing(ps)})"
            )
    return pairing


def _pairing_problems(pairing: _Pairing, folder: Path, clean_names: Sequence[str]) -> list[str]:
    """What keeps the pairing from being one-to-one, each with its fix; empty when it is."""
    problems = []
    if pairing.missing:
        problems.append(
            f"clean files without a protected counterpart in {folder}: {_listing(pairing.missing)} "
            "— save the tool's output for each under the clean file's name (the extension may "
            "differ)"
        )
    if pairing.extra:
        problems.append(
            f"protected files without a clean counterpart: {_listing(pairing.extra)} — rename each "
            f"to the name of the clean image it protects ({_listing(clean_names)}) or remove it"
        )
    if pairing.ambiguous:
        problems.append("ambiguous pairs: " + "; ".join(pairing.ambiguous))
    return problems


@dataclass
class _Measurement:
    """The protected images read from a folder, in the subject's file order.

    ``protected``: 8-bit images at the audit resolution; ``linf`` / ``linf_original``: ℓ∞ in
    levels against the clean image there and at the files' original size; ``sizes``: that
    original size per clean name; ``used``: the files read, for the content hash.
    """

    protected: list[torch.Tensor] = field(default_factory=list)
    linf: dict[str, int] = field(default_factory=dict)
    linf_original: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, str] = field(default_factory=dict)
    used: list[Path] = field(default_factory=list)


def _size_mismatch(
    prot_name: str, clean_name: str, prot_size: tuple[int, int], clean_size: tuple[int, int]
) -> str:
    """One protected file whose size differs from its clean original's, with a likely cause."""
    hint = ""
    if prot_size == clean_size[::-1]:
        hint = (
            " (width and height swapped: an EXIF orientation tag is on one file and not the other "
            "— save the protected image upright, as viewers show the clean one)"
        )
    return (f"{prot_name} is {_size(prot_size)} but its clean image {clean_name} is "
            f"{_size(clean_size)}{hint}")


def _linf_levels(protected: Image.Image, clean: Image.Image) -> int:
    """ℓ∞ in 8-bit levels between two converted originals of equal size."""
    diff = np.abs(np.asarray(protected, dtype=np.int16) - np.asarray(clean, dtype=np.int16))
    return int(diff.max()) if diff.size else 0


def _measurement_notes(
    measured: _Measurement,
    pairs: dict[str, str],
    clean_originals: Sequence[Image.Image],
    resolution: int,
) -> list[str]:
    """Notes on the measured ℓ∞: suspiciously large, all zero, or measured after resizing."""
    notes = []
    for name, levels in measured.linf_original.items():
        if levels > SUSPICIOUS_LEVELS:
            notes.append(
                f"{pairs[name]} differs from clean {name} by {levels} levels at its original size; "
                "check that it is the protected version of that image (pairing, orientation, crop)"
            )
    if measured.linf_original and max(measured.linf_original.values()) == 0:
        notes.append(
            "the protected images are identical to the clean ones (ℓ∞ = 0): was the tool's output "
            "saved?"
        )
    if any(im.size != (resolution, resolution) for im in clean_originals):
        notes.append(
            f"compared at the audit resolution {resolution}×{resolution} after the subject "
            "loader's crop and Lanczos resize; linf_original_255 is the ℓ∞ of the files as "
            "published"
        )
    return notes


class ProtectedFolderParams(Params):
    """``dir``'s parameters: ``ProtectedFolder(**params)``."""

    path: str = Field(
        description="folder of protected images laid out like --data: PATH/<subject>/<file>"
    )
    epsilon: float | None = Field(
        None,
        ge=0,
        le=1,
        description="declared ℓ∞ budget in [0,1] pixel units; None: measured, not judged",
    )


class _FolderFiles:
    """Finding and reading the protected files of a subject: which file in ``path`` is the
    protected version of which clean image (by file name), and the images on both sides."""

    path: Path
    subjects: tuple[str, ...] | None
    _direct_subjects: set[str]

    # -- what determines the output -------------------------------------------------------
    def _candidate_files(self) -> list[Path]:
        """Every file a subject could be paired with: images in PATH and in PATH/<folder>/."""
        files: list[Path] = []
        for entry in sorted(self.path.iterdir()):
            if not _visible(entry):
                continue
            if entry.is_dir():
                try:
                    files.extend(p for p in sorted(entry.iterdir()) if _is_image(p))
                except OSError:  # unreadable folder or symlink loop: nothing it could supply
                    continue
            elif _is_image(entry):
                files.append(entry)
        return files

    @staticmethod
    def _holds_images(folder: Path) -> bool:
        try:
            return any(_is_image(p) for p in folder.iterdir())
        except OSError:
            return False

    def _hash(self, files: Sequence[Path]) -> str:
        """SHA-256 over each file's path relative to PATH and its bytes."""
        digest = hashlib.sha256()
        for file in files:
            name = file.relative_to(self.path).as_posix().encode()
            data = file.read_bytes()
            digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
            digest.update(data)
        return digest.hexdigest()

    # -- pairing ------------------------------------------------------------------------
    def _subject_folder(self, subject: Subject, clean_names: Sequence[str]) -> tuple[Path, str]:
        """The folder holding this subject's protected images, and how it was chosen."""
        spec = f"--protection=dir:{self.path}"
        folder = self.path / subject.name
        if folder.is_dir():
            return folder, f"{self.path}/{subject.name}/ (one sub-folder per subject)"
        direct = [p for p in self.path.iterdir() if _is_image(p)]
        others = sorted(p.name for p in self.path.iterdir() if p.is_dir() and _visible(p))
        expected = _listing(clean_names)
        if direct and not any(self._holds_images(self.path / other) for other in others):
            many = self.subjects is not None and len(set(self.subjects)) > 1
            previous = self._direct_subjects - {subject.name}
            if many or previous:
                names = sorted(set(self.subjects or ()) | previous | {subject.name})
                raise ProtectionError(
                    f"{spec}: the folder holds images directly, which is the layout for a single "
                    f"subject, but the audit has several ({_listing(names)}). Put each subject's "
                    f"protected images in a sub-folder named after it, e.g. {folder}/ for "
                    f"'{subject.name}' ({expected}), as in --data."
                )
            self._direct_subjects.add(subject.name)
            return self.path, f"{self.path}/ (images directly: one subject)"
        found = (
            f" (sub-folders found: {_listing(others)})"
            if others
            else " (it holds no images either)"
        )
        raise ProtectionError(
            f"{spec}: no protected images for subject '{subject.name}': folder {folder} does not "
            f"exist{found}. Put the protected versions of '{subject.name}' images in {folder}/ "
            f"under the clean file names ({expected}; the extension may differ), mirroring the "
            "--data layout DIR/<subject>/<file>."
        )

    def _protected_entries(self, folder: Path) -> tuple[list[str], list[str]]:
        """The image file names in ``folder``, and notes on the entries ignored there."""
        notes: list[str] = []
        protected = []
        for entry in sorted(folder.iterdir()):
            if not _visible(entry):
                continue
            if entry.is_dir():
                if folder == self.path:
                    continue  # other subjects' folders, or unrelated ones: not this subject's
                notes.append(
                    f"{entry.name}/: sub-folder ignored (a subject's protected images are read "
                    "from its own folder only)"
                )
            elif entry.suffix.lower() in IMAGE_SUFFIXES:
                protected.append(entry.name)
            else:
                notes.append(
                    f"{entry.name}: not an image file ({entry.suffix or 'no extension'}), ignored"
                )
        return protected, notes

    def _pair(self, folder: Path, clean_names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
        """Clean name → protected name, by stem; every problem found at once in one error."""
        protected, notes = self._protected_entries(folder)
        pairing = _match_stems(clean_names, protected)
        problems = _pairing_problems(pairing, folder, clean_names)
        if problems:
            ignored = [n for n in notes if "not an image file" in n]
            tail = (
                f" (ignored, not images: {'; '.join(ignored)})"
                if ignored and pairing.missing
                else ""
            )
            raise ProtectionError(
                f"--protection=dir:{self.path}: the protected images in {folder} do not pair "
                f"one-to-one with the clean images by file name: {'; '.join(problems)}{tail}."
            )
        return pairing.pairs, notes

    # -- the clean side at its original resolution ----------------------------------------
    @staticmethod
    def _clean_originals(
        subject: Subject, resolution: int
    ) -> tuple[list[Image.Image], list[torch.Tensor]]:
        """Each clean file's converted original and its tensor at ``resolution``."""
        if subject.name == BUNDLED_SUBJECT and subject.source.startswith("bundled"):
            from skimage import data as skdata

            photo = Image.fromarray(skdata.astronaut())
            views = {name: (box, flip) for name, box, flip in ASTRONAUT_VIEWS}
            originals = []
            for name in subject.files:
                box, flip = views[name]
                view = photo.crop(box)
                originals.append(ImageOps.mirror(view) if flip else view)
            resized = [
                from_pil(im.resize((resolution, resolution), Image.Resampling.LANCZOS))
                for im in originals
            ]
            return originals, resized
        folder = Path(subject.source)
        originals, resized = [], []
        for name in subject.files:
            original, tensor = load_image_file(folder / name, resolution, [])
            originals.append(original)
            resized.append(tensor)
        return originals, resized

    def _clean_side(
        self, subject: Subject, images: torch.Tensor, resolution: int
    ) -> tuple[list[Image.Image], torch.Tensor]:
        """The clean originals re-read from disk, and ``images`` in 8-bit levels.

        Refused when the files no longer give the images the subject was loaded with.
        """
        spec = f"--protection=dir:{self.path}"
        try:
            clean_originals, clean_resized = self._clean_originals(subject, resolution)
        except (AuditError, OSError, KeyError) as exc:
            raise ProtectionError(
                f"{spec}: cannot re-read the clean original images of subject '{subject.name}' "
                f"from {subject.source} to compare sizes ({exc}). Keep the --data folder in place "
                "during the audit."
            ) from None
        clean_u8 = to_uint8(images)
        changed = [
            name
            for i, name in enumerate(subject.files)
            if not torch.equal(to_uint8(clean_resized[i][None])[0], clean_u8[i])
        ]
        if changed:
            raise ProtectionError(
                f"{spec}: the clean files {_listing(changed)} of subject '{subject.name}' "
                f"({subject.source}) changed on disk since the subject was loaded, so they cannot "
                "be paired reliably. Rerun the audit with the --data folder left unchanged."
            )
        return clean_originals, clean_u8

    def _load_protected(
        self, path: Path, clean_name: str, resolution: int, notes: list[str]
    ) -> tuple[Image.Image, torch.Tensor]:
        """One protected file, read as the subject loader reads a clean one; its notes appended."""
        file_notes: list[str] = []
        try:
            original, tensor = load_image_file(path, resolution, file_notes)
        except AuditError as exc:
            raise ProtectionError(
                f"--protection=dir:{self.path}: protected image for clean {clean_name}: {exc}"
            ) from None
        notes.extend(f"protected {note}" for note in file_notes)
        return original, tensor


class ProtectedFolder(_FolderFiles, Protection):
    """Already-protected images read from ``PATH``, paired by file name with the clean ones.

    ``ProtectedFolder(path, epsilon=None, *, subjects=None)``: ``epsilon`` in [0,1] pixel
    units (0.05 = 12.75/255) or None for "measured, not judged" (see the module docstring);
    ``subjects``, the names of all subjects in the audit when known, lets the images-directly
    layout be refused when there is more than one subject.
    """

    name = "dir"
    uses_model = False
    # : The output does not depend on the seed (base class attribute: replicates need not re-draw
    # it).
    random = False
    #: The output is the folder's content: the engine does not re-run it per replicate.
    shared_across_replicates = True
    #: ``protect`` judges a declared ε on the files at their own size (resizing changes ℓ∞).
    judges_own_budget = True
    #: No differentiable objective: scenarios that need it (adaptive re-crafting) are skipped.
    has_objective = False
    no_objective = ("a folder of already-protected files: the toolkit cannot see how they were "
                    "made; audit the protection's code (a LinfPGD subclass) to adapt it")

    def __init__(
        self,
        path: str | Path,
        epsilon: float | None = None,
        *,
        subjects: Sequence[str] | None = None,
    ) -> None:
        spec = f"--protection=dir:{path}"
        if epsilon is not None:
            try:
                epsilon = float(epsilon)
                super().__init__(epsilon)
            except (TypeError, ValueError):
                raise ProtectionError(
                    f"{spec}: --epsilon must be a number in [0, 1] ([0,1] pixel units, e.g. 0.05 = "
                    f"12.75/255; for a budget in levels divide by 255, 8 levels = {8 / 255:.4f}), "
                    f"got {epsilon!r}. Leave it out to have ℓ∞ measured, not judged."
                ) from None
        else:
            super().__init__(1.0)
        self.declared_epsilon: float | None = epsilon
        if not str(path):
            raise ProtectionError(
                "--protection=dir:: no folder given. Write --protection=dir:PATH, PATH holding the "
                "protected images laid out like --data (PATH/<subject>/<file>)."
            )
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise ProtectionError(
                f"{spec}: folder {self.path} does not exist. Pass the folder of protected images, "
                "laid out like --data (PATH/<subject>/<file>, under the clean file names)."
            )
        if not self.path.is_dir():
            raise ProtectionError(
                f"{spec}: {self.path} is a file, not a folder. Pass the folder holding the "
                "protected images, laid out like --data (PATH/<subject>/<file>, under the clean "
                "file names)."
            )
        self.subjects = tuple(subjects) if subjects is not None else None
        self._direct_subjects: set[str] = set()

    def params(self, tier: TierSettings | None = None) -> dict[str, Any]:
        """The folder, a content hash of every image file it could supply, and the budget.

        The hash covers the images in PATH and in its sub-folders (any subject's), by relative
        name and bytes, so a cache key changes whenever a protected file is added, removed,
        renamed or edited.
        """
        return {
            "path": str(self.path.resolve()),
            "content_hash": self._hash(self._candidate_files()),
            "epsilon": self.declared_epsilon,
        }

    # -- protect ----------------------------------------------------------------------------
    def _require_subject(self, ctx: ProtectionContext) -> Subject:
        """The subject whose clean file names the protected ones are paired with."""
        if ctx.subject is None:
            raise ProtectionError(
                f"--protection=dir:{self.path}: the protection context carries no subject, so the "
                "clean file names to pair with are unknown. The engine must pass "
                "ProtectionContext(subject=...)."
            )
        return ctx.subject

    def _check_shape(self, images: torch.Tensor, subject: Subject) -> None:
        """``images`` must be the subject's images in file order: n×3×R×R."""
        n, resolution = len(subject.files), images.shape[-1]
        if images.ndim != 4 or images.shape[0] != n or images.shape[-2] != resolution:
            raise ProtectionError(
                f"--protection=dir:{self.path}: got images of shape {tuple(images.shape)} for "
                f"subject '{subject.name}' with {n} files ({_listing(subject.files)}); expected "
                f"{n}×3×R×R, the subject's images in file order."
            )

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        subject = self._require_subject(ctx)
        images = images.detach().cpu()
        resolution = images.shape[-1]
        self._check_shape(images, subject)
        folder, layout = self._subject_folder(subject, subject.files)
        pairs, notes = self._pair(folder, subject.files)
        clean_originals, clean_u8 = self._clean_side(subject, images, resolution)
        measured = self._measure_pairs(
            folder, pairs, subject.files, resolution, clean_originals, clean_u8, notes
        )
        notes.extend(_measurement_notes(measured, pairs, clean_originals, resolution))
        info: dict[str, Any] = {
            "folder": str(folder),
            "layout": layout,
            "pairs": dict(pairs),
            "original_sizes": measured.sizes,
            "resolution": resolution,
            "linf_255": measured.linf,
            "linf_255_max": max(measured.linf.values()),
            "linf_original_255": measured.linf_original,
            "linf_original_255_max": max(measured.linf_original.values()),
            "epsilon": self.declared_epsilon,
            "budget": self._budget_text(),
            "content_hash": self._hash(measured.used),
            "notes": notes,
        }
        self._judge_declared_budget(measured.linf_original, pairs)
        return ProtectionOutput(torch.stack(measured.protected), info)

    def _measure_pairs(
        self,
        folder: Path,
        pairs: dict[str, str],
        clean_names: Sequence[str],
        resolution: int,
        clean_originals: Sequence[Image.Image],
        clean_u8: torch.Tensor,
        notes: list[str],
    ) -> _Measurement:
        """Each protected image at the audit resolution and its ℓ∞ there and at the original size.

        Every pair whose sizes differ is named at once in one error.
        """
        measured = _Measurement()
        mismatched = []
        for i, clean_name in enumerate(clean_names):
            prot_path = folder / pairs[clean_name]
            measured.used.append(prot_path)
            original, tensor = self._load_protected(prot_path, clean_name, resolution, notes)
            clean_size, prot_size = clean_originals[i].size, original.size
            if prot_size != clean_size:
                mismatch = _size_mismatch(pairs[clean_name], clean_name, prot_size, clean_size)
                mismatched.append(mismatch)
                continue
            measured.sizes[clean_name] = _size(clean_size)
            measured.linf_original[clean_name] = _linf_levels(original, clean_originals[i])
            out = to_uint8(tensor[None])[0]
            measured.protected.append(out)
            measured.linf[clean_name] = int(
                (out.to(torch.int16) - clean_u8[i].to(torch.int16)).abs().max()
            )
        if mismatched:
            raise ProtectionError(
                f"--protection=dir:{self.path}: protected images whose size differs from their "
                f"clean original's ({'; '.join(mismatched)}). A protection must keep the image "
                "size: save the tool's output at the clean image's size (turn off any resizing or "
                "cropping in the tool)."
            )
        return measured

    def _budget_text(self) -> str:
        """How the budget is treated, for ``info``."""
        if self.declared_epsilon is None:
            return "none declared: ℓ∞ measured, not judged"
        return (
            f"declared ε = {self.declared_epsilon:.4f} ({self.declared_epsilon * 255:.2f}/255), "
            "judged at the original and at the audit resolution"
        )

    def _judge_declared_budget(self, linf_original: dict[str, int], pairs: dict[str, str]) -> None:
        """With a declared ε, ``BudgetExceeded`` when a file's ℓ∞ at its original size exceeds
        it."""
        if self.declared_epsilon is None:
            return
        allowed = budget_levels(self.declared_epsilon)
        over = {name: levels for name, levels in linf_original.items() if levels > allowed}
        if not over:
            return
        listing = "; ".join(
            f"{pairs[name]} vs clean {name}: {levels}/255 = {levels / 255:.4f}"
            for name, levels in over.items()
        )
        raise BudgetExceeded(
            f"protection 'dir' ({self.path}) exceeds its declared budget at the images' original "
            f"resolution: ε = {self.declared_epsilon:.4f} ({self.declared_epsilon * 255:.2f}/255, "
            f"at most {allowed} levels after 8-bit quantisation), measured ℓ∞ {listing}. Declare "
            "the budget the tool really uses (--epsilon), or leave --epsilon out to have ℓ∞ "
            "measured, not judged."
        )
