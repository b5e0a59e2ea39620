"""Which GPU each exploit worker runs on, on one machine.

An exploit run (fine-tune + generation, ``audit/run/planner.py``) is the unit that is placed:
one run per GPU at a time, or ``--runs-per-gpu N`` side by side where the GPU's memory allows
(a DreamBooth run of Stable Diffusion 1.5 at 512 px takes most of a 24 GB card; LoRA or a
smaller model leaves room for more). The rules, all pure functions of the visible device list
so that a test can check them on a fake one:

* **without xdist**, the audit's worker pool has ``len(gpus) × runs_per_gpu`` processes, worker
  ``w`` pinned to ``gpus[w mod len(gpus)]`` (round robin: the first ``len(gpus)`` workers take
  one GPU each, so even a short queue uses every card);
* **with xdist**, pytest worker ``gwN`` audits on ``gpus[N mod len(gpus)]`` and its own pool
  (``runs_per_gpu`` processes, when more than one) stays on that GPU;
* an explicit ``--device=cuda:N`` pins everything to that GPU; on the CPU (or MPS) nothing
  changes (``audit/run/workers.py``: one process per core).

A worker is pinned by the ``torch.device`` it loads its model on and by
``torch.cuda.set_device`` (so a library's default-device allocation lands on the same card);
``CUDA_VISIBLE_DEVICES`` is left as the user set it, so device indices mean what they mean in
``nvidia-smi`` order the user chose.
"""

from __future__ import annotations

import os
import re

import torch


def visible_gpus(device: torch.device, count: int | None = None) -> list[int]:
    """The GPU indices exploit runs may use: every visible CUDA device for ``cuda``, the one
    named for ``cuda:N``, none for any other device. ``count`` stands in for
    ``torch.cuda.device_count()`` (tests)."""
    if device.type != "cuda":
        return []
    if device.index is not None:
        return [device.index]
    n = torch.cuda.device_count() if count is None else count
    return list(range(n))


def xdist_index(worker_id: str | None = None) -> int | None:
    """The N of pytest-xdist's worker id ``gwN`` (``PYTEST_XDIST_WORKER``), None outside xdist."""
    wid = worker_id if worker_id is not None else os.environ.get("PYTEST_XDIST_WORKER")
    match = re.fullmatch(r"gw(\d+)", wid or "")
    return int(match.group(1)) if match else None


def xdist_device(device: torch.device, gpus: list[int],
                 worker_id: str | None = None) -> torch.device:
    """An xdist worker's device: ``gwN`` → ``cuda:gpus[N mod len(gpus)]``; unchanged outside
    xdist, off CUDA, or when the device names its GPU."""
    n = xdist_index(worker_id)
    if n is None or device.type != "cuda" or device.index is not None or not gpus:
        return device
    return torch.device("cuda", gpus[n % len(gpus)])


def pool_size(gpus: list[int], runs_per_gpu: int, *, under_xdist: bool) -> int:
    """Worker processes for exploit runs on GPUs: ``runs_per_gpu`` per GPU this process uses
    (under xdist: its one GPU)."""
    if runs_per_gpu < 1:
        raise ValueError(f"--runs-per-gpu={runs_per_gpu}: at least 1")
    return runs_per_gpu * (1 if under_xdist else max(1, len(gpus)))


def worker_devices(device: torch.device, gpus: list[int], workers: int) -> list[str]:
    """The device of each of ``workers`` pool workers: round robin over ``gpus`` on CUDA (worker
    w → GPU ``gpus[w mod len(gpus)]``), the audit's device otherwise."""
    if device.type != "cuda" or not gpus:
        return [str(device)] * workers
    return [f"cuda:{gpus[w % len(gpus)]}" for w in range(workers)]


def pin(device: torch.device) -> None:
    """Make ``device`` the process's current CUDA device (a no-op off CUDA)."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device.index)
