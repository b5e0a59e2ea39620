"""Independent exploit runs in parallel worker processes (CPU cores, or GPUs one run each).

Profile of one smoke fine-tune on the tiny model (2-core CPU, torch 2.14, batch 4, 64 px):
~90 ms a step, of which the attention on the 16×16 latent (8 heads of dimension 4) takes ~40 %,
convolutions ~25 % and AdamW ~9 %; a second intra-op thread speeds a step up by only ~13 %
(the tensors are too small to split well), and generation is ~5 % of a run. So the cores are
better used by running independent fine-tunes side by side, one thread each: two processes on
two cores finish two runs in ~1.3–1.5× the time of one. Every fine-tune and generation on the
CPU runs with one intra-op thread whichever way it is executed (``stages.single_thread``), so a
run's numbers do not depend on whether it ran in a worker or in the main process.

Workers load the model themselves (by the same ``--model`` spec, verified by its fingerprint)
and write to the same cache, under the same per-entry locks; the main process only hands out
runs that are not cached yet and collects their outputs, timings and cache events. On CUDA
each worker is pinned to one GPU as it starts (``audit/run/placement.py``).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def default_workers(device: torch.device, gpus: list[int] | None = None,
                    runs_per_gpu: int = 1) -> int:
    """Worker processes for exploit runs: one per core on the CPU (at most 4; 1 under xdist);
    on CUDA ``runs_per_gpu`` per visible GPU (``audit/run/placement.py``); else 1."""
    under_xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    if device.type == "cuda":
        from audit.run.placement import pool_size

        return pool_size(gpus or [], runs_per_gpu, under_xdist=under_xdist)
    if device.type != "cpu" or under_xdist:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class WorkerSetup:
    model: str
    device: str
    allow_download: bool
    fingerprint: str
    cache_root: str
    cache_enabled: bool
    resolution: int
    transfer_model: str | None = None  # --transfer-model (loaded on first use in the worker)
    transfer_fingerprint: str | None = None  # the audit's, when it has loaded it
    # one device per worker (audit/run/placement.py); empty: every worker on ``device``
    devices: tuple[str, ...] = ()


def worker_setup(session: Any) -> WorkerSetup:
    """What a worker process needs to rebuild an ``AuditSession``'s stages; on CUDA each worker's
    GPU (``audit/run/placement.py``)."""
    from audit.run.placement import visible_gpus, worker_devices

    transfer = session.options.transfer_model_spec
    device = session.device
    devices = (tuple(worker_devices(device, visible_gpus(device), session.workers))
               if device.type == "cuda" else ())
    return WorkerSetup(session.options.model, str(device), session.options.allow_download,
                       session.model.fingerprint, str(session.cache.root), session.cache.enabled,
                       session.resolution, transfer,
                       session.transfer_model.fingerprint if transfer
                       and session._transfer_model is not None else None, devices)


_STATE: dict[str, Any] = {}


def _init(setup: WorkerSetup, slots: Any = None) -> None:
    """A worker's start: its device (the next free slot's, when the pool pins workers to GPUs),
    its model, checked against the audit's fingerprint, and its stages over the shared cache."""
    from audit.run.placement import pin

    torch.set_num_threads(1)
    device = torch.device(slots.get() if slots is not None else setup.device)
    pin(device)
    _STATE["device"] = str(device)
    _STATE["stages"] = _stages(setup, device)


def checked_model(setup: WorkerSetup, device: torch.device) -> Any:
    """The audit's model loaded in a worker, refused when its fingerprint is not the audit's."""
    from audit.diffusion import load_model

    model = load_model(setup.model, device, allow_download=setup.allow_download, seed=0)
    if model.fingerprint != setup.fingerprint:
        raise RuntimeError(f"worker loaded model '{setup.model}' with fingerprint "
                           f"{model.fingerprint[:16]}…, not the audit's {setup.fingerprint[:16]}…; "
                           "the model changed on disk during the audit (or differs on this node)")
    return model


def worker_stages(setup: WorkerSetup, device: torch.device, model: Any, cache: Any,
                  progress: Any) -> Any:
    """A worker's stages: the checked model on ``device`` over ``cache``."""
    from audit.run.stages import Stages

    return Stages(cache, lambda: model, lambda: device, lambda: setup.resolution, progress,
                  transfer=(lambda: _transfer(setup, device)) if setup.transfer_model else None)


def _stages(setup: WorkerSetup, device: torch.device) -> Any:
    from audit.run.cache import Cache
    from audit.run.progress import Progress

    progress = Progress()
    cache = Cache(Path(setup.cache_root), enabled=setup.cache_enabled)
    _STATE.update(progress=progress, cache=cache)
    return worker_stages(setup, device, checked_model(setup, device), cache, progress)


def _transfer(setup: WorkerSetup, device: torch.device) -> Any:
    """The transfer model in a worker, loaded once and checked against the audit's fingerprint."""
    if "transfer" not in _STATE:
        from audit.diffusion import load_model

        model = load_model(
            setup.transfer_model, device, allow_download=setup.allow_download, seed=0)  # type: ignore[arg-type]
        if setup.transfer_fingerprint and model.fingerprint != setup.transfer_fingerprint:
            raise RuntimeError(f"worker loaded transfer model '{setup.transfer_model}' with "
                               f"fingerprint {model.fingerprint[:16]}…, not the audit's "
                               f"{setup.transfer_fingerprint[:16]}…")
        _STATE["transfer"] = model
    return _STATE["transfer"]


def _work(
        run: Any, images_u8: torch.Tensor,
        generation: Any) -> tuple[Any, list[dict[str, Any]], dict[str, list[str]]]:
    output = _STATE["stages"].exploit(run, images_u8, generation)
    timings = [{**t, "device": _STATE["device"]} for t in _STATE["progress"].take_timings()]
    return output, timings, _STATE["cache"].take_events().to_dict()


class ExploitPool:
    """A lazily started pool of worker processes for exploit runs; closed with the audit."""

    def __init__(self, workers: int, setup: WorkerSetup) -> None:
        self.workers = workers
        self.setup = setup
        self._pool: ProcessPoolExecutor | None = None

    def describe(self, pending: int) -> str:
        """How the runs are spread, for the progress line."""
        workers = min(self.workers, pending)
        gpus = sorted(set(self.setup.devices[:workers]) - {"cpu"})
        return f"{workers} worker processes" + (f" on {', '.join(gpus)}" if gpus else "")

    def run(
            self, jobs: list[tuple[Any, torch.Tensor, Any]],
            on_done: Any = None) -> list[tuple[Any, list, dict]]:
        """Outputs of the jobs (run, images, generation settings), in the jobs' order."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no forked torch state
            slots = None
            if self.setup.devices:  # each worker takes one device as it starts
                slots = context.Queue()
                for device in self.setup.devices[:self.workers]:
                    slots.put(device)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init,
                                             initargs=(self.setup, slots))
        futures = {self._pool.submit(_work, *job): i for i, job in enumerate(jobs)}
        results: list[Any] = [None] * len(jobs)
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_done is not None:
                on_done(jobs[i][0], results[i])
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
