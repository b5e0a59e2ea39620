"""Where metric weights come from, and the one message for weights that are not there.

Metrics load their networks through their libraries' own caches (``TORCH_HOME`` for torch hub
checkpoints, ``HF_HOME`` for the hub, ``~/.insightface``, ...). On clusters without internet a
local folder is named by ``PROTECTION_AUDIT_WEIGHTS``; each metric documents the file names it
looks for there. Downloads happen only when the audit runs with ``--allow-download`` (the
environment variable ``PROTECTION_AUDIT_ALLOW_DOWNLOAD=1`` says so to code that has no options
object). Otherwise a missing file is reported at once as ``unavailable`` — never after retries.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

WEIGHTS_ENV = "PROTECTION_AUDIT_WEIGHTS"
DOWNLOAD_ENV = "PROTECTION_AUDIT_ALLOW_DOWNLOAD"


def weights_dir() -> Path | None:
    """The local weights folder named by ``PROTECTION_AUDIT_WEIGHTS``, if set."""
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def downloads_allowed() -> bool:
    """True when the audit may download weights (``--allow-download``)."""
    return os.environ.get(DOWNLOAD_ENV, "") == "1"


def find_weights(*candidates: Path | str | None, name: str | None = None) -> Path | None:
    """The first existing file among ``candidates``, after ``$PROTECTION_AUDIT_WEIGHTS/name``."""
    paths: list[Path] = []
    local = weights_dir()
    if local is not None and name:
        paths.append(local / name)
    paths.extend(Path(c).expanduser() for c in candidates if c)
    return next((p for p in paths if p.exists()), None)


def looked_in(*candidates: Path | str | None, name: str | None = None) -> list[str]:
    """The places ``find_weights`` searched, for the unavailable message."""
    local = weights_dir()
    places = [str(local / name)] if local is not None and name else []
    return places + [str(Path(c).expanduser()) for c in candidates if c]


def missing_weights(what: str, looked: list[str], how: str) -> str:
    """The ``unavailable`` reason for weights that are not on this machine."""
    where = "; ".join(looked) if looked else "(no local path)"
    return (
        f"{what} not found (looked in: {where}). {how} Or put the file in a folder named by "
        f"${WEIGHTS_ENV}, or rerun with --allow-download."
    )


def hub_checkpoints() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where torchvision and
    piq cache what ``load_state_dict_from_url`` downloads."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path | str) -> str:
    """sha256 of a weights file, computed once per (path, size, mtime) in a process."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def weights_label(path: Path | None, file: str) -> str:
    """How a result names its weights: ``file sha256 <hex>``, or ``file (missing)``."""
    return f"{path.name} sha256 {file_sha256(path)}" if path is not None else f"{file} (missing)"


def hub_file_missing(what: str, file: str, url: str) -> str | None:
    """The unavailable reason for a torch-hub checkpoint ``file`` (looked for in
    ``$PROTECTION_AUDIT_WEIGHTS`` and the hub's checkpoint folder), or None when it is there or
    may be downloaded."""
    if find_weights(hub_checkpoints() / file, name=file) is not None or downloads_allowed():
        return None
    return missing_weights(what, looked_in(hub_checkpoints() / file, name=file),
                           f"Copy it from {url} into {hub_checkpoints()}.")
