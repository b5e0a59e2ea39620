"""The content-addressed cache: keys separate what differs, corrupt entries are rebuilt."""

from __future__ import annotations

from pathlib import Path

import torch

from audit.run.cache import Cache, tensor_hash


def test_round_trip_and_events(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    key = cache.key("exploit", images="abc", model="m1", seed=0)
    assert cache.get("exploit", key) is None
    t = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 2, 2)
    cache.put("exploit", key, {"generations": t}, {"loss": 0.5})
    tensors, meta = cache.get("exploit", key)
    assert torch.equal(tensors["generations"], t) and meta == {"loss": 0.5}
    events = cache.take_events()
    assert events.misses == ["exploit"] and events.hits == ["exploit"]


def test_key_depends_on_model_seed_and_config(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    base = {"images": "abc", "model": "m1", "seed": 0, "config": {"steps": 10}}
    k = cache.key("exploit", **base)
    assert k == cache.key("exploit", **dict(base))
    for change in ({"model": "m2"}, {"seed": 1}, {"config": {"steps": 11}}, {"images": "abd"}):
        assert cache.key("exploit", **{**base, **change}) != k
    assert cache.key("protect", **base) != k


def test_corrupt_entry_is_detected_and_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    key = cache.key("protect", x=1)
    cache.put("protect", key, {"images": torch.zeros((1, 3, 4, 4), dtype=torch.uint8)}, {})
    tensor_file = next(tmp_path.rglob("tensors.safetensors"))
    data = bytearray(tensor_file.read_bytes())
    data[-1] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    assert cache.get("protect", key) is None
    assert cache.events.corrupt == ["protect"]
    assert not tensor_file.exists()
    # Truncated manifest: also corrupt, never used.
    cache.put("protect", key, {"images": torch.zeros((1, 3, 4, 4), dtype=torch.uint8)}, {})
    manifest = next(tmp_path.rglob("manifest.json"))
    manifest.write_text(manifest.read_text()[:20])
    assert cache.get("protect", key) is None


def test_tensor_hash_sees_dtype_shape_and_values() -> None:
    a = torch.zeros((2, 3), dtype=torch.uint8)
    assert tensor_hash(a) == tensor_hash(a.clone())
    assert tensor_hash(a) != tensor_hash(a.reshape(3, 2))
    assert tensor_hash(a) != tensor_hash(a.float())
    b = a.clone()
    b[0, 0] = 1
    assert tensor_hash(a) != tensor_hash(b)


def test_lock_serialises_computation_of_one_entry(tmp_path: Path) -> None:
    import threading
    import time

    cache = Cache(tmp_path)
    key = cache.key("exploit", x=1)
    computed: list[str] = []

    def worker(name: str) -> None:
        with cache.lock("exploit", key):
            if cache.get("exploit", key) is None:
                time.sleep(0.2)
                computed.append(name)
                cache.put("exploit", key, {"g": torch.zeros(1)}, {})

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1  # the second worker found the first one's entry


def test_edited_metadata_is_corrupt_and_rebuilt(tmp_path: Path) -> None:
    """A metric entry's values live in its metadata: one digit changed by hand is never used."""
    cache = Cache(tmp_path)
    key = cache.key("metric", metric="brisque", generations="abc")
    meta = {"name": "brisque", "values": [31.25, 47.5], "missing": 0}
    cache.put("metric", key, {}, meta)
    assert cache.get("metric", key) == ({}, meta)
    entry = tmp_path / "metric" / key[:2] / key
    edited = False
    for path in sorted(entry.iterdir()):  # wherever the values are stored, as a text editor would
        text = path.read_text() if path.suffix == ".json" else ""
        if "31.25" in text:
            path.write_text(text.replace("31.25", "31.26"))
            edited = True
    assert edited
    cache.take_events()
    assert cache.get("metric", key) is None
    events = cache.take_events()
    assert events.corrupt == ["metric"] and events.misses == ["metric"] and events.hits == []
    assert not entry.exists()  # removed, so the next put rebuilds it
    cache.put("metric", key, {}, meta)
    assert cache.get("metric", key) == ({}, meta)


def test_entry_under_another_key_or_stage_is_corrupt(tmp_path: Path) -> None:
    """An entry copied or moved to another key's folder does not answer for that key."""
    import shutil

    cache = Cache(tmp_path)
    key_a, key_b = cache.key("metric", x=1), cache.key("metric", x=2)
    cache.put("metric", key_a, {}, {"values": [1.0]})
    src = tmp_path / "metric" / key_a[:2] / key_a
    dst = tmp_path / "metric" / key_b[:2] / key_b
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    assert cache.get("metric", key_b) is None and cache.events.corrupt == ["metric"]
    other_stage = tmp_path / "protect" / key_a[:2] / key_a
    other_stage.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, other_stage)
    assert cache.get("protect", key_a) is None and cache.events.corrupt == ["metric", "protect"]
    assert cache.get("metric", key_a) == ({}, {"values": [1.0]})


def test_edited_file_list_is_corrupt(tmp_path: Path) -> None:
    """Dropping a file from the manifest's list (so it is not checked) is itself detected."""
    import json

    cache = Cache(tmp_path)
    key = cache.key("protect", x=1)
    cache.put("protect", key, {"images": torch.zeros((1, 3, 4, 4), dtype=torch.uint8)},
              {"loss": 0.5})
    manifest_path = next(tmp_path.rglob("manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    assert cache.get("protect", key) is None and cache.events.corrupt == ["protect"]


def test_entry_from_before_metadata_was_hashed_is_rebuilt_as_a_miss(tmp_path: Path) -> None:
    import json

    cache = Cache(tmp_path)
    key = cache.key("metric", x=1)
    entry = tmp_path / "metric" / key[:2] / key
    entry.mkdir(parents=True)
    legacy = {"stage": "metric", "key": key, "toolkit": "0.1.0", "created": 0, "files": {},
              "meta": {"values": [1.0]}}
    (entry / "manifest.json").write_text(json.dumps(legacy))
    assert cache.get("metric", key) is None and not entry.exists()
    events = cache.take_events()
    assert events.misses == ["metric"] and events.corrupt == []
    cache.put("metric", key, {}, {"values": [1.0], "b": 2, "a": 1})
    assert list(cache.get("metric", key)[1]) == ["values", "b", "a"]  # insertion order kept
