"""Exploit runs in worker processes give exactly the numbers of the main process."""

from __future__ import annotations

from pathlib import Path

import torch

from audit.config.settings import GenerationSettings
from audit.data.images import to_uint8
from audit.parts.registry import PartSpec
from audit.run.cache import Cache
from audit.run.planner import Run
from audit.run.progress import Progress
from audit.run.stages import Stages, single_thread
from audit.run.workers import ExploitPool, WorkerSetup, default_workers

EXPLOIT = {"steps": 3, "lr": 1e-3, "batch_size": 2, "prior_preservation": False,
           "num_class_images": 0}


def test_worker_processes_reproduce_the_main_process_bitwise(tiny, images, tmp_path: Path) -> None:
    from audit.parts.exploits.dreambooth import DreamboothParams

    params = DreamboothParams(**EXPLOIT).model_dump()
    runs = [Run("clean", None, r, (), PartSpec("exploit", "dreambooth", params), seed) for r,
            seed in enumerate((0, 7))]
    generation = GenerationSettings(
        images_per_prompt=1, steps=2, prompts=("a photo of sks person",))
    images_u8 = to_uint8(images)
    device = torch.device("cpu")
    local = Stages(Cache(tmp_path / "local"), lambda: tiny, lambda: device, lambda: 64, Progress())
    expected = [local.exploit(run, images_u8, generation) for run in runs]
    assert not torch.equal(expected[0].generations, expected[1].generations)  # the seed matters

    # each worker takes its device from the slots as it starts (one GPU each on CUDA:
    # audit/run/placement.py); here two CPU slots
    setup = WorkerSetup("tiny", "cpu", False, tiny.fingerprint, str(tmp_path / "pool"), True, 64,
                        devices=("cpu", "cpu"))
    pool = ExploitPool(2, setup)
    try:
        results = pool.run([(run, images_u8, generation) for run in runs])
    finally:
        pool.close()
    for (output, timings, events), want in zip(results, expected, strict=True):
        assert torch.equal(output.generations, want.generations)
        assert (output.weights_key == want.weights_key and output.generations_key
                == want.generations_key)
        assert any(t["stage"].startswith("exploit: DreamBooth fine-tune") for t in timings)
        assert {t["device"] for t in timings} == {"cpu"}
        assert "finetune" in events["misses"]
    # The workers wrote the cache: the main process now finds both entries.
    pooled = Stages(Cache(tmp_path / "pool"), lambda: tiny, lambda: device, lambda: 64, Progress())
    assert all(pooled.exploit_cached(run, images_u8, generation) for run in runs)


def test_one_thread_on_cpu_then_restored() -> None:
    before = torch.get_num_threads()
    with single_thread(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert default_workers(torch.device("cuda")) == 1
