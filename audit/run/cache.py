"""Content-addressed store of every stage's output.

A key is the SHA-256 of the canonical JSON of everything that determines a stage's output:
its inputs' content hashes, the stage's config, the model id/revision and weights
fingerprint, the seeds and the toolkit version (a key that forgets the model returns another
model's results, lm-evaluation-harness#2715). An entry is a folder holding its tensors
(``tensors.safetensors``), its metadata (``meta.json``; a metric's values live there) and a
``manifest.json`` listing each file's SHA-256. The manifest also records the entry's stage
and key and the SHA-256 of its own canonical content, so every byte a read hands back is
covered: a read re-hashes the files, checks the manifest's digest and that its stage/key are
the ones asked for, and an entry that does not match (truncated, edited by hand, half-written,
copied under another key) is deleted, reported as corrupt and recomputed, never used; an
entry from before metadata was hashed is deleted and recomputed as a miss. Writes go to a
temporary folder renamed into place, so an interrupted audit leaves no half entry and resumes
where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # POSIX advisory locks; elsewhere concurrent workers may compute an entry twice
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from audit import __version__


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def tensor_hash(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# 1 (no "format" field): metadata inside manifest.json, unhashed; read as a miss, rebuilt
FORMAT = 2
TENSORS = "tensors.safetensors"
META = "meta.json"


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without its own ``digest`` field."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def _is_legacy(manifest_path: Path) -> bool:
    """A format-1 manifest (no format, no digest): its metadata was never hashed."""
    manifest = json.loads(manifest_path.read_text())
    return (isinstance(manifest, dict) and "format" not in manifest and "digest" not in manifest
            and "files" in manifest)


def _read_entry(
        entry: Path, stage: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An entry's tensors and metadata after checking every byte of them; ValueError if not."""
    manifest = json.loads((entry / "manifest.json").read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError("manifest format "
                         f"{manifest.get('format') if isinstance(manifest, dict) else '?'} != "
                         f"{FORMAT}")
    if manifest.get("digest") != _manifest_digest(manifest):
        raise ValueError("manifest.json: digest mismatch (edited)")
    if manifest.get("stage") != stage or manifest.get("key") != key:
        raise ValueError(f"manifest is for {manifest.get('stage')}/{manifest.get('key')}, not "
                         f"{stage}/{key}")
    files = manifest["files"]
    if META not in files or set(files) - {META, TENSORS}:
        raise ValueError(f"unexpected file list {sorted(files)}")
    data = {}
    for name, digest in files.items():
        data[name] = (entry / name).read_bytes()  # hashed and parsed from the same bytes
        if hashlib.sha256(data[name]).hexdigest() != digest:
            raise ValueError(f"{name}: hash mismatch")
    tensors = load_tensors(data[TENSORS]) if TENSORS in files else {}
    meta = json.loads(data[META].decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"{META}: not an object")
    return tensors, meta


@dataclass
class CacheEvents:
    """What the cache did for one case: hits, misses and corrupt entries rebuilt, per stage."""

    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}


class Cache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.events = CacheEvents()

    def key(self, stage: str, **parts: Any) -> str:
        payload = {"stage": stage, "toolkit": __version__, **parts}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def merge_events(self, events: dict[str, list[str]]) -> None:
        """Add another process's events (a worker's) to this cache's."""
        for name in ("hits", "misses", "corrupt"):
            getattr(self.events, name).extend(events.get(name, []))

    def take_events(self) -> CacheEvents:
        events, self.events = self.events, CacheEvents()
        return events

    @contextlib.contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on one entry while it is looked up and computed.

        With pytest-xdist, two workers that need the same baseline would otherwise both
        compute it; with the lock the second waits and then finds it in the cache.
        """
        if not self.enabled or fcntl is None:
            yield
            return
        path = self.root / ".locks" / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def entries(self) -> list[tuple[str, str]]:
        """(stage, key) of every entry present (not verified), in a stable order."""
        if not self.root.is_dir():
            return []
        return sorted((m.parent.parent.parent.name, m.parent.name)
                      for m in self.root.glob("*/*/*/manifest.json")
                      if not m.parent.name.startswith(".tmp-"))

    def has(self, stage: str, key: str) -> bool:
        """Whether an entry is present (not verified: ``get`` verifies and counts it)."""
        return self.enabled and (self._dir(stage, key) / "manifest.json").is_file()

    def get(self, stage: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The stored tensors and metadata, or None if absent or corrupt (then it is removed)."""
        if not self.enabled:
            return None
        entry = self._dir(stage, key)
        manifest_path = entry / "manifest.json"
        if not manifest_path.is_file():
            self.events.misses.append(stage)
            return None
        try:
            # written before metadata was hashed: rebuilt, not "corrupt"
            if _is_legacy(manifest_path):
                shutil.rmtree(entry, ignore_errors=True)
                self.events.misses.append(stage)
                return None
            tensors, meta = _read_entry(entry, stage, key)
        except Exception:
            shutil.rmtree(entry, ignore_errors=True)
            self.events.corrupt.append(stage)
            self.events.misses.append(stage)
            return None
        self.events.hits.append(stage)
        return tensors, meta

    def put(
            self, stage: str, key: str, tensors: dict[str, torch.Tensor],
            meta: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry = self._dir(stage, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        try:
            files = {}
            if tensors:
                path = tmp / TENSORS
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
                files[TENSORS] = file_hash(path)
            (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
            files[META] = file_hash(tmp / META)
            manifest = {"format": FORMAT, "stage": stage, "key": key, "toolkit": __version__,
                        "created": time.time(), "files": files}
            manifest["digest"] = _manifest_digest(manifest)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            os.replace(tmp, entry)
        except OSError:
            # Another worker wrote the same entry first: same key, same content; keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
