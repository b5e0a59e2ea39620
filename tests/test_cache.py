"""The content-addressed cache: keys separate what differs, corrupt entries are rebuilt."""

from __future__ import annotations

from pathlib import Path

import torch

from audit.cache import Cache, tensor_hash


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
