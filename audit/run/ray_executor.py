"""Exploit runs as Ray tasks (``--executor ray``): one machine's GPUs or a cluster's.

Each pending exploit run (fine-tune + generation, ``audit/run/planner.py``) becomes one Ray
task that needs one GPU (``num_gpus=1`` when the cluster has GPUs; one CPU otherwise). The
**driver** — the pytest process — **owns the content-addressed cache**; workers never touch
it, so no lock or file has to be shared between nodes:

1. the driver computes the run's cache keys and ships, through Ray's object store, the
   entries it already holds that the run reads (prior preservation's class images; the
   fine-tuned weights when only the generations are missing);
2. the worker computes the run through the same ``Stages`` code as in-process, over a scratch
   cache in a fresh temporary folder, then sends back every entry the run wrote (fine-tuned
   weights, generations, class images), each with the SHA-256 of its tensors and metadata;
3. the driver re-hashes what arrived, checks each key is the one it computed (same model
   fingerprint, toolkit version and settings), and writes the entries into its cache under
   each entry's lock (``Cache.lock``: two audits on one results folder, xdist's workers
   included, still write an entry once), through ``Cache.put``'s write-to-temp-then-rename,
   the generations last. An entry that does not check out is refused and the run fails.

Failure modes. A worker process or node lost mid-run (``WorkerCrashedError``,
``NodeDiedError``, a lost object) is retried by Ray (``max_retries``), then resubmitted by the
driver up to ``RESUBMITS`` times more; an exception raised by the run itself is not retried (it
would fail again) and becomes the case's error. Nothing of a run reaches the cache before its
whole result has arrived and checked out, so the audit never records a half-run; each run is
stored as soon as it arrives, so an audit stopped midway (Ctrl-C, a lost driver) keeps every
finished run, and its rerun computes only the others.

Why Ray (README, "Three ways to run"): tasks with GPU resource requests, retries on lost
workers and nodes, and an object store for the tensors, on a laptop (``ray.init()`` starts a
local cluster) as on a cluster, from ``pip install``. Dask schedules CPU tasks well but has no
GPU resource accounting of its own (worker "resources" are labels the user must declare per
worker); submitit sends Slurm jobs whose queueing delay is minutes, for runs of minutes, and
needs a shared filesystem and Slurm itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from audit.run.cache import Cache, canonical_json, tensor_hash

RETRIES = 3  # Ray's max_retries: a task whose worker or node died is re-run this many times
RESUBMITS = 2  # then the driver submits it again this many times
# Fault injection for the tests: the first task to find this marker path absent creates it and
# kills its own worker process after computing the run, before returning it.
CRASH_ONCE_ENV = "PROTECTION_AUDIT_RAY_CRASH_ONCE"


@dataclass(frozen=True)
class Entry:
    """One cache entry in transit: its stage, key, tensors, metadata and their digest."""

    stage: str
    key: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    digest: str

    @classmethod
    def of(cls, stage: str, key: str, tensors: dict[str, torch.Tensor],
           meta: dict[str, Any]) -> Entry:
        return cls(stage, key, tensors, meta, entry_digest(tensors, meta))

    def check(self) -> None:
        """Raise when the tensors or metadata are not those the digest was taken of."""
        if entry_digest(self.tensors, self.meta) != self.digest:
            raise RuntimeError(f"Ray result for {self.stage}/{self.key[:16]}…: digest mismatch "
                               "(changed in transit); not stored")


def entry_digest(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """SHA-256 over each tensor's name and content hash and the canonical JSON of the metadata."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(f"{name}:{tensor_hash(tensors[name])};".encode())
    h.update(canonical_json(meta).encode())
    return h.hexdigest()


# -- in the Ray worker ---------------------------------------------------------------------------
_MODELS: dict[tuple[str, str, str], Any] = {}  # (model, fingerprint, device): loaded once a process


def _crash_once(marker: str | None) -> None:
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)  # the worker process dies mid-run, as a lost node's would


def remote_exploit(setup: Any, device: str, run: Any, images_u8: torch.Tensor, generation: Any,
                   shipped: list[Any], crash_marker: str | None = None) -> dict[str, Any]:
    """One exploit run in a Ray worker, over a scratch cache seeded with the driver's entries;
    returns the output, every entry the run wrote, its timings and cache events."""
    import ray

    from audit.run.progress import Progress
    from audit.run.workers import checked_model, worker_stages

    torch_device = torch.device(device)
    ident = (setup.model, setup.fingerprint, device)
    if ident not in _MODELS:
        _MODELS[ident] = checked_model(setup, torch_device)
    scratch = Path(tempfile.mkdtemp(prefix="audit-ray-"))
    try:
        cache = Cache(scratch)
        seeded = set()
        for entry in ray.get(shipped) if shipped else []:
            entry.check()
            cache.put(entry.stage, entry.key, entry.tensors, entry.meta)
            seeded.add((entry.stage, entry.key))
        progress = Progress()
        stages = worker_stages(setup, torch_device, _MODELS[ident], cache, progress)
        output = stages.exploit(run, images_u8, generation)
        events = cache.take_events().to_dict()
        _crash_once(crash_marker)
        written = []
        for stage, key in cache.entries():
            got = cache.get(stage, key) if (stage, key) not in seeded else None
            if got is not None:
                written.append(Entry.of(stage, key, *got))
        return {"output": output, "entries": written, "events": events,
                "timings": [{**t, "device": device, "node": ray.get_runtime_context().get_node_id()}
                            for t in progress.take_timings()]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- in the driver -------------------------------------------------------------------------------
def _system_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a lost worker, node or object (not the run's own exception)."""
    from ray import exceptions as rx

    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
             "RaySystemError", "LocalRayletDiedError", "TaskUnschedulableError")
    return tuple(getattr(rx, n) for n in names if hasattr(rx, n))


class RayPool:
    """Pending exploit runs as Ray tasks; the same ``run``/``close`` as ``ExploitPool``."""

    def __init__(self, address: str | None, setup: Any, cache: Cache, stages: Any,
                 retries: int = RETRIES, resubmits: int = RESUBMITS) -> None:
        self.address = address
        self.setup = setup
        self.cache = cache
        self.stages = stages
        self.retries = retries
        self.resubmits = resubmits
        self._owned = False  # this pool started (or joined) Ray: it shuts it down at close
        self._task: Any = None
        self._device = "cpu"
        self._shipped: dict[tuple[str, str], Any] = {}  # entries put in the object store once

    def _connect(self) -> Any:
        import ray

        if self._task is not None:
            return ray
        if not ray.is_initialized():
            # An audit sends nothing anywhere: Ray's usage statistics off unless the user set them.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            self._owned = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self._device = "cuda" if gpus else "cpu"  # Ray gives the task one GPU: cuda:0 there
        self._task = ray.remote(remote_exploit).options(
            num_gpus=1 if gpus else 0, num_cpus=1, max_retries=self.retries,
            retry_exceptions=False)
        return ray

    def describe(self, pending: int) -> str:
        import ray

        self._connect()
        res = ray.cluster_resources()
        where = self.address or "a local Ray"
        return (f"Ray tasks on {where} ({len(ray.nodes())} node(s), {res.get('GPU', 0):g} GPU, "
                f"{res.get('CPU', 0):g} CPU; one {'GPU' if self._device == 'cuda' else 'CPU'} "
                "a run)")

    def _ship(self, run: Any, generation: Any, wkey: str) -> list[Any]:
        """Object refs of the cache entries the run reads that the driver already holds."""
        import ray

        from audit.parts import EXPLOITS

        params = EXPLOITS.get(run.exploit.name).validate(run.exploit.params)
        wanted = [("finetune", wkey)]
        class_key = self.stages.class_images_key(params, generation)
        if class_key is not None:
            wanted.append(("class_images", class_key))
        refs = []
        for stage, key in wanted:
            if (stage, key) not in self._shipped:
                hit = self.cache.get(stage, key) if self.cache.has(stage, key) else None
                if hit is None:
                    continue
                self._shipped[(stage, key)] = ray.put(Entry.of(stage, key, *hit))
            refs.append(self._shipped[(stage, key)])
        return refs

    def _submit(self, job: tuple[Any, torch.Tensor, Any], wkey: str) -> Any:
        run, images_u8, generation = job
        return self._task.remote(self.setup, self._device, run, images_u8, generation,
                                 self._ship(run, generation, wkey),
                                 os.environ.get(CRASH_ONCE_ENV))

    def run(self, jobs: list[tuple[Any, torch.Tensor, Any]],
            on_done: Any = None) -> list[tuple[Any, list, dict]]:
        """Outputs of the jobs (run, images, generation settings), in the jobs' order; each
        run's entries are stored as it arrives. The first run's own error is raised after every
        other run has come back (and been stored)."""
        ray = self._connect()
        keys = [self.stages.exploit_keys(*job) for job in jobs]
        refs = {self._submit(job, keys[i][0]): i for i, job in enumerate(jobs)}
        attempts = [0] * len(jobs)
        results: list[Any] = [None] * len(jobs)
        error: BaseException | None = None
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            i = refs.pop(done[0])
            try:
                result = ray.get(done[0])
            except _system_errors() as exc:
                attempts[i] += 1
                if attempts[i] > self.resubmits:
                    error = error or RuntimeError(
                        f"exploit run {jobs[i][0].label()} lost {attempts[i]} times on the Ray "
                        f"cluster ({type(exc).__name__}): {exc}")
                    continue
                refs[self._submit(jobs[i], keys[i][0])] = i
                continue
            except ray.exceptions.RayTaskError as exc:  # the run's own exception
                error = error or exc.as_instanceof_cause()
                continue
            try:
                results[i] = self._store(result, *keys[i])
            except RuntimeError as exc:
                error = error or exc
                continue
            if on_done is not None:
                on_done(jobs[i][0], results[i])
        if error is not None:
            raise error
        return results

    def _store(self, result: dict[str, Any], wkey: str, gkey: str) -> tuple[Any, list, dict]:
        """Check a run's entries and write them into the driver's cache, generations last."""
        output, entries = result["output"], result["entries"]
        if (output.weights_key, output.generations_key) != (wkey, gkey):
            raise RuntimeError(f"Ray worker computed keys {output.generations_key[:16]}… for a run "
                               f"the driver keys {gkey[:16]}… (another toolkit version or model "
                               "on that node?); not stored")
        by_stage = {e.stage: e for e in entries}
        if "generate" not in by_stage or by_stage["generate"].key != gkey:
            raise RuntimeError("Ray worker returned no generations entry for the run; not stored")
        for entry in sorted(entries, key=lambda e: e.stage == "generate"):
            entry.check()
            with self.cache.lock(entry.stage, entry.key):
                if not self.cache.has(entry.stage, entry.key):
                    self.cache.put(entry.stage, entry.key, entry.tensors, entry.meta)
        return output, result["timings"], result["events"]

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False
        self._task = None
        self._shipped.clear()
