"""``--executor ray`` on a local two-worker Ray cluster (CPU): the audit's numbers equal the
in-process run's; a worker killed mid-run is re-queued and the case still completes; a rerun
takes every finished run from the driver's cache.

The smallest audit: protection ``random``, scenario ``no-attack``, the bundled subject, K = 2
(4 distinct exploit runs), 3 fine-tune steps, one generation of 2 steps per prompt, and one
metric (``subject_similarity``: the metrics run on the driver either way). Ray's start and its
workers' imports take most of the time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import audit.run.case as case_module
from audit.config.options import AuditOptions
from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import parse_overrides
from audit.judge.case import MetricChoice
from audit.run.progress import Progress
from audit.run.ray_executor import CRASH_ONCE_ENV, Entry
from audit.run.session import AuditSession

METRIC = "subject_similarity"
SETTINGS = ["dreambooth.steps=3", "generation.images_per_prompt=1", "generation.steps=2"]
VOLATILE = {"seconds", "timings", "cache", "artifacts", "started", "finished", "created"}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with two worker processes (two CPUs, no dashboard)."""
    try:
        import ray
    except ImportError:
        pytest.fail("Ray is not installed: ./dev installs the 'ray' extra (pip install -e "
                    "'.[test,ray]'); these tests are meant to run wherever the suite does")
    try:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # pragma: no cover - a sandbox without sockets or /dev/shm
        pytest.skip(f"a local Ray cluster cannot start here: {type(exc).__name__}: {exc}")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def one_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(case_module, "metric_choice",
                        lambda *args: MetricChoice([METRIC], METRIC, None))


def audit(results: Path, executor: str) -> tuple[dict[str, Any], AuditSession]:
    options = AuditOptions(protection="random", results_dir=results, device="cpu",
                           overrides=parse_overrides(SETTINGS), replicates=2, exploit_workers=1,
                           executor=executor)
    session = AuditSession(options, Progress(None))
    try:
        record = session.run_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), "astronaut",
                                  "random-no-attack-astronaut").dump()
    finally:
        session.close()
    assert record["outcome"] != "error", record.get("error")
    return record, session


def stable(value: Any) -> Any:
    """A record without its wall times, cache events and file paths."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(case_module, "metric_choice",
                   lambda *args: MetricChoice([METRIC], METRIC, None))
        return audit(tmp_path_factory.mktemp("local"), "local")[0]


def test_an_audit_through_ray_equals_the_in_process_run(cluster, in_process, tmp_path) -> None:
    record, session = audit(tmp_path / "ray", "ray")
    assert len(record["exploits"]) == 6 and record["metrics"][METRIC]["per_replicate"]["clean"]
    assert stable(record) == stable(in_process)
    # the driver wrote every run the workers computed into its own cache, checked entries
    generate = {e["cache_key"] for e in record["exploits"].values()}
    assert len(generate) == 4 and all(session.cache.get("generate", k) for k in generate)
    assert record["cache"]["misses"].count("finetune") == 4


def test_a_worker_killed_mid_run_is_requeued_and_a_rerun_reuses_every_run(
        cluster, in_process, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    record, _ = audit(tmp_path / "ray", "ray")
    assert marker.exists()  # one worker process died after computing its run, before returning
    assert stable(record) == stable(in_process)  # every case recorded, nothing lost or half-run
    monkeypatch.delenv(CRASH_ONCE_ENV)
    rerun, _ = audit(tmp_path / "ray", "ray")
    assert "finetune" not in rerun["cache"]["misses"] and "generate" not in rerun["cache"]["misses"]
    assert rerun["cache"]["hits"].count("generate") == 4
    assert stable(rerun) == stable(in_process)


def test_an_entry_changed_in_transit_is_refused() -> None:
    import torch

    entry = Entry.of("generate", "k" * 64, {"generations": torch.zeros(2, 3, 4, 4,
                                                                        dtype=torch.uint8)}, {})
    entry.check()
    entry.tensors["generations"][0, 0, 0, 0] = 1
    with pytest.raises(RuntimeError, match="digest mismatch"):
        entry.check()
