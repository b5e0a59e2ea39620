"""Image strips for the report: every artifact embedded once, as CSS data, however often shown.

Clean and protected generations are shared by every scenario (the audit caches them), so the
same PNG appears in many cases. Each distinct image is stored once as a CSS class whose
background is a ``data:`` URI; thumbnails and the full-size view (a CSS ``:target`` overlay,
no script) reference the class. Images at most ``THUMB_PX`` on a side (the smoke tier's 64 px)
are embedded losslessly as they are; larger ones as a PNG thumbnail plus a JPEG (quality 90,
at most ``FULL_PX``) for the full-size view, which keeps a standard-tier report mailable.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

THUMB_PX = 128
FULL_PX = 768


@dataclass(frozen=True)
class EmbeddedImage:
    """One image as shown in a strip: its CSS class, sizes and caption, or why it is missing."""

    css_class: str | None
    full_id: str | None
    name: str
    width: int = 0
    height: int = 0
    thumb_width: int = 0
    thumb_height: int = 0
    problem: str | None = None


class ImageStore:
    """Collects distinct images (by content hash) and writes the CSS that carries them."""

    def __init__(self) -> None:
        self._css: dict[str, str] = {}
        self._full: dict[str, tuple[int, int]] = {}

    def add(self, relative: str, roots: list[Path]) -> EmbeddedImage:
        name = Path(relative).name
        path = _find(relative, roots)
        if path is None:
            return EmbeddedImage(None, None, name, problem=f"artifact not found: {relative}")
        raw = path.read_bytes()
        digest = "i" + hashlib.sha256(raw).hexdigest()[:16]
        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            return EmbeddedImage(None, None, name, problem=f"unreadable image {relative}: {exc}")
        width, height = image.size
        scale = min(1.0, THUMB_PX / max(width, height))
        thumb_w, thumb_h = max(1, round(width * scale)), max(1, round(height * scale))
        if digest not in self._css:
            if scale == 1.0 and image.format == "PNG":
                self._css[digest] = _uri("image/png", raw)
            else:
                self._css[digest] = _uri("image/png", _encode(image.convert("RGB"),
                                                              (thumb_w, thumb_h), "PNG"))
                full_scale = min(1.0, FULL_PX / max(width, height))
                size = (round(width * full_scale), round(height * full_scale))
                self._css[digest + "f"] = _uri("image/jpeg",
                                               _encode(image.convert("RGB"), size, "JPEG"))
            self._full[digest] = (width, height)
        full_class = digest + "f" if digest + "f" in self._css else digest
        return EmbeddedImage(digest, full_class, name, width, height, thumb_w, thumb_h)

    def full_views(self) -> list[tuple[str, str, int, int]]:
        """(anchor id, CSS class, width, height) of each distinct image's full-size overlay."""
        views = []
        for digest, (width, height) in self._full.items():
            full_class = digest + "f" if digest + "f" in self._css else digest
            views.append((f"full-{digest}", full_class, *_display_size(width, height)))
        return views

    def css(self) -> str:
        return "\n".join(f".{name}{{background-image:url({uri})}}" for name,
                         uri in self._css.items())

    @property
    def total_bytes(self) -> int:
        return sum(len(uri) for uri in self._css.values())


def _display_size(width: int, height: int) -> tuple[int, int]:
    """Small images are enlarged by an integer factor (pixelated), large ones fitted to FULL_PX."""
    longest = max(width, height)
    if longest <= 256:
        zoom = max(1, 512 // longest)
        return width * zoom, height * zoom
    scale = min(1.0, FULL_PX / longest)
    return round(width * scale), round(height * scale)


def _find(relative: str, roots: list[Path]) -> Path | None:
    candidate = Path(relative)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for root in roots:
        path = Path(root) / candidate
        if path.is_file():
            return path
    return None


def _encode(image: Image.Image, size: tuple[int, int], fmt: str) -> bytes:
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    return buffer.getvalue()


def _uri(mime: str, data: bytes) -> str:
    # base64 has no quotes, parentheses or angle brackets, so it is safe inside url(...) in <style>.
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
