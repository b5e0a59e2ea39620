"""GPU placement of exploit runs on one machine, checked on fake device lists (no GPU needed)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from audit.run.placement import (
    pool_size,
    visible_gpus,
    worker_devices,
    xdist_device,
    xdist_index,
)
from audit.run.workers import default_workers

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_every_visible_gpu_is_used_and_an_explicit_one_alone() -> None:
    assert visible_gpus(CUDA, count=4) == [0, 1, 2, 3]
    assert visible_gpus(torch.device("cuda:2"), count=4) == [2]
    assert visible_gpus(CPU, count=4) == [] and visible_gpus(torch.device("mps"), count=4) == []


def test_pool_workers_round_robin_over_the_gpus() -> None:
    gpus = visible_gpus(CUDA, count=3)
    assert pool_size(gpus, 1, under_xdist=False) == 3
    assert worker_devices(CUDA, gpus, 3) == ["cuda:0", "cuda:1", "cuda:2"]
    # two runs per GPU: six workers, each GPU holding exactly two
    six = worker_devices(CUDA, gpus, pool_size(gpus, 2, under_xdist=False))
    assert six == ["cuda:0", "cuda:1", "cuda:2"] * 2
    with pytest.raises(ValueError, match="--runs-per-gpu"):
        pool_size(gpus, 0, under_xdist=False)


@given(st.integers(1, 16), st.integers(1, 4), st.integers(0, 63))
def test_each_gpu_holds_runs_per_gpu_workers_and_xdist_workers_spread(
        count: int, per_gpu: int, worker: int) -> None:
    gpus = list(range(count))
    devices = worker_devices(CUDA, gpus, pool_size(gpus, per_gpu, under_xdist=False))
    assert all(devices.count(f"cuda:{g}") == per_gpu for g in gpus)
    pinned = xdist_device(CUDA, gpus, f"gw{worker}")
    assert pinned == torch.device("cuda", worker % count)
    # under xdist a worker's own pool stays on its one GPU
    assert pool_size(visible_gpus(pinned, count), per_gpu, under_xdist=True) == per_gpu
    assert set(worker_devices(pinned, visible_gpus(pinned, count), per_gpu)) == {str(pinned)}


def test_cpu_and_explicit_devices_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert xdist_device(CPU, [], "gw3") == CPU
    assert xdist_device(torch.device("cuda:1"), [0, 1, 2], "gw0") == torch.device("cuda:1")
    assert xdist_device(CUDA, [0, 1], "main") == CUDA and xdist_index("gw12") == 12
    assert worker_devices(CPU, [], 3) == ["cpu"] * 3
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    cores = default_workers(CPU, [], runs_per_gpu=4)  # the CPU rule, whatever --runs-per-gpu says
    assert cores == max(1, min(4, __import__("os").cpu_count() or 1))
    assert default_workers(CUDA, [0, 1, 2, 3], runs_per_gpu=2) == 8
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert default_workers(CPU, []) == 1 and default_workers(torch.device("cuda:1"), [1], 2) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"runs_per_gpu": 0}, "--runs-per-gpu=0: between 1 and 16"),
    ({"ray_address": "auto"}, "--ray-address=auto is given without --executor=ray"),
])
def test_placement_options_are_checked_at_start_up(options: dict, message: str) -> None:
    from audit.config.options import AuditOptions
    from audit.config.startup import check_options

    with pytest.raises(pytest.UsageError, match=message):
        check_options(AuditOptions(protection="pid", **options))
    check_options(AuditOptions(protection="pid", runs_per_gpu=2, executor="ray"))  # ray installed
