"""A stage's cache key changes when the code that computes it changes (the CI gate's case).

A protection edited between two audits into the same results folder, with its name and
parameters kept, must be crafted anew and its exploits re-run; what does not depend on it (the
clean runs) still comes from the cache. A protection whose source cannot be read is never cached.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audit.config.tiers import get_tier
from audit.data.images import from_uint8, to_uint8
from audit.parts import TRANSFORMS
from audit.parts.protections.base import Protection, ProtectionContext, ProtectionOutput
from audit.parts.protections.simple import RandomNoise
from audit.parts.registry import PartSpec
from audit.run.cache import Cache
from audit.run.fingerprint import code_fingerprint
from audit.run.planner import ChainStep
from audit.run.progress import Progress
from audit.run.stages import Stages

# A factory protection as a user writes it: the built-in PID, with the objective's sign kept (v1)
# or flipped (v2) so that PGD *minimises* PID's loss; same class, name and parameters.
FACTORY_V1 = """
from audit.parts.protections.pid import PID


def make():
    return PID(steps=3)
"""
FACTORY_V2 = """
import audit.parts.protections.pid as pid

_objective = pid.pid_objective


def make():
    pid.pid_objective = lambda *args, **kwargs: -_objective(*args, **kwargs)
    return pid.PID(steps=3)
"""


def write_module(folder: Path, name: str, text: str) -> None:
    """(Re)write a module and forget its imported form, as a new process would."""
    (folder / f"{name}.py").write_text(text)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc within one second
    return folder


# -- the fingerprint itself ------------------------------------------------------------------------
def test_an_edited_factory_module_changes_the_fingerprint(user_modules: Path) -> None:
    import audit.parts.protections.pid as pid

    original = pid.pid_objective
    try:
        write_module(user_modules, "factory_a", FACTORY_V1)
        first = code_fingerprint(importlib.import_module("factory_a").make(),
                                 factory="factory_a:make")
        again = code_fingerprint(importlib.import_module("factory_a").make(),
                                 factory="factory_a:make")
        write_module(user_modules, "factory_a", FACTORY_V2)
        second = code_fingerprint(importlib.import_module("factory_a").make(),
                                  factory="factory_a:make")
    finally:
        pid.pid_objective = original
    assert first.sha256 == again.sha256 and first.sha256 != second.sha256
    assert first.files["factory_a"] != second.files["factory_a"]
    # The class's own module and its bases' are named too; the standard library is not.
    assert {"audit.parts.protections.pid", "audit.parts.protections.base"} <= set(first.files)
    assert not any(m.startswith("abc") for m in first.files)


class _Noise(Protection):
    name = "mine"

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        return ProtectionOutput(to_uint8(images))


def test_a_class_redefined_in_one_file_and_an_instance_function_are_told_apart() -> None:
    def version(levels: int) -> type[Protection]:
        if levels == 1:
            class Mine(_Noise):
                def protect(self, images, ctx):
                    return ProtectionOutput(to_uint8((images + 1 / 255).clamp(0, 1)))
        else:
            class Mine(_Noise):  # same name, same file, other code
                def protect(self, images, ctx):
                    return ProtectionOutput(to_uint8((images - 1 / 255).clamp(0, 1)))
        return Mine

    one, two = version(1)(), version(2)()
    assert type(one).__qualname__ == type(two).__qualname__
    assert code_fingerprint(one).sha256 != code_fingerprint(two).sha256
    assert code_fingerprint(one).sha256 == code_fingerprint(version(1)()).sha256
    patched = version(1)()
    patched.protect = lambda images, ctx: ProtectionOutput(to_uint8(images))  # type: ignore[method-assign]
    assert code_fingerprint(patched).sha256 != code_fingerprint(one).sha256


def test_code_without_a_readable_source_has_no_fingerprint_and_says_why() -> None:
    namespace: dict = {"_Noise": _Noise}
    exec("class Hidden(_Noise):\n    name = 'hidden'\n", namespace)
    namespace["Hidden"].__module__ = "not_a_file_module"
    sys.modules["not_a_file_module"] = SimpleNamespace(__name__="not_a_file_module")  # type: ignore[assignment]
    try:
        fingerprint = code_fingerprint(namespace["Hidden"]())
    finally:
        del sys.modules["not_a_file_module"]
    assert (fingerprint.sha256 is None and "not_a_file_module" in fingerprint.reason
            and "not cached" in fingerprint.reason)


def test_fingerprinting_is_negligible_next_to_a_stage() -> None:
    import audit.parts.protections.pid as pid

    protection = pid.PID(steps=3)
    code_fingerprint(protection)  # files hashed once (memoised on path, mtime and size)
    start = time.perf_counter()
    for _ in range(20):
        code_fingerprint(protection)
    # 50 ms, against seconds for the cheapest stage
    assert (time.perf_counter() - start) / 20 < 0.05


# -- the protect and transform stages --------------------------------------------------------------
def stages(root: Path, fingerprint: str = "model-a") -> Stages:
    model = SimpleNamespace(fingerprint=fingerprint)
    return Stages(Cache(root / "cache"), lambda: model, lambda: torch.device("cpu"), lambda: 8,
                  Progress(None))


def subject() -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(name="s",
                           images=from_uint8(torch.randint(0, 256, (2, 3, 8, 8), generator=g,
                                                           dtype=torch.uint8)),
                           content_hash="subject-hash")


def test_an_unreadable_protection_is_crafted_once_per_session_and_never_cached(
        tmp_path: Path) -> None:
    calls = []

    class Counted(RandomNoise):
        def protect(self, images, ctx):
            calls.append(ctx.seed)
            return super().protect(images, ctx)

    s, subj, tier = stages(tmp_path), subject(), get_tier("smoke")
    protection = Counted(0.05)
    hidden = code_fingerprint(protection)
    hidden = type(hidden)(None, {}, reason="source not readable")
    step = ChainStep("protection", PartSpec("protection", "random", {"epsilon": 0.05}), 1)
    a, info = s.protect(protection, step, subj, tier, hidden)
    b, _ = s.protect(protection, step, subj, tier, hidden)
    assert torch.equal(a, b) and calls == [1]
    assert info["cache_key"] is None and info["not_cached"] == "source not readable"
    assert not (tmp_path / "cache" / "protect").exists()
    # A new session (another process) crafts it again: nothing was stored.
    stages(tmp_path).protect(protection, step, subj, tier, hidden)
    assert calls == [1, 1]


def test_a_transform_that_uses_the_model_is_keyed_by_the_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = TRANSFORMS.get("jpeg")
    monkeypatch.setitem(TRANSFORMS._parts, "jpeg", type(jpeg)(**{**vars(jpeg), "uses_model": True}))
    step = ChainStep("transform", PartSpec("transform", "jpeg", {"quality": 75}), None)
    images = to_uint8(subject().images)
    stages(tmp_path, "model-a").transform(step, images)
    stages(tmp_path, "model-b").transform(step, images)
    events_b = stages(tmp_path, "model-b")
    events_b.transform(step, images)
    assert events_b.cache.take_events().hits == ["transform"]
    # Two models, two entries: model b was not served model a's result.
    assert len(list((tmp_path / "cache" / "transform").rglob("manifest.json"))) == 2


# -- the whole case, through the engine ------------------------------------------------------------
def run_no_attack(results: Path, spec: str) -> dict:
    from audit.config.options import AuditOptions
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.config.tiers import parse_overrides
    from audit.run.session import AuditSession

    overrides = parse_overrides(["dreambooth.steps=2", "generation.images_per_prompt=1",
                                 "generation.steps=2",
                                 "controls.noise_floor=false"])
    options = AuditOptions(protection=spec, results_dir=results, device="cpu", replicates=2,
                           overrides=overrides,
                           exploit_workers=1)
    session = AuditSession(options, Progress(None))
    try:
        record = session.run_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), "astronaut",
                                  "no-attack").dump()
    finally:
        session.close()
    assert record["outcome"] != "error", record.get("error")
    return record


def exploit_keys(record: dict, role: str) -> set[str]:
    return {e["weights_key"] for e in record["exploits"].values() if e["role"] == role}


def test_an_edited_factory_protection_is_recrafted_and_refit_while_clean_runs_are_reused(
        tmp_path: Path, user_modules: Path) -> None:
    import audit.parts.protections.pid as pid

    original = pid.pid_objective
    try:
        write_module(user_modules, "my_protection", FACTORY_V1)
        first = run_no_attack(tmp_path / "res", "my_protection:make")
        write_module(user_modules, "my_protection", FACTORY_V2)
        second = run_no_attack(tmp_path / "res", "my_protection:make")
    finally:
        pid.pid_objective = original
    assert first["protection"]["code"]["sha256"] != second["protection"]["code"]["sha256"]
    # The protection was crafted anew: other keys, and by the new code (the objective it records is
    # the negated PID loss, ≤ 0; the first run's is PID's own, > 0).
    first_keys = {r["cache_key"] for r in first["protection_runs"]}
    assert first_keys.isdisjoint(r["cache_key"] for r in second["protection_runs"])
    assert all(r["objective_final_8bit"] > 0 for r in first["protection_runs"])
    assert all(r["objective_final_8bit"] < 0 for r in second["protection_runs"])
    # Its exploits were re-run; the clean ones came from the cache.
    assert exploit_keys(first, "protected").isdisjoint(exploit_keys(second, "protected"))
    assert exploit_keys(first, "clean") == exploit_keys(second, "clean")
    assert ("protect" not in second["cache"]["hits"] and second["cache"]["misses"].count("protect")
            == 2)
    assert (second["cache"]["hits"].count("generate") == 2
            and second["cache"]["misses"].count("finetune") == 2)


def test_a_protection_class_defined_in_a_test_and_changed_is_recrafted(
        tmp_path: Path, user_modules: Path) -> None:
    write_module(user_modules, "factory_here", "import tests.test_code_fingerprint as t\n\n\ndef "
                                               "make():\n    return t.CURRENT()\n")

    class Shift(Protection):
        name = "shift"
        random = False

        def protect(self, images, ctx):
            return ProtectionOutput(to_uint8((images + 4 / 255).clamp(0, 1)))

    first_class = Shift

    class Shift(Protection):  # type: ignore[no-redef]  # same name and params, other code
        name = "shift"
        random = False

        def protect(self, images, ctx):
            return ProtectionOutput(to_uint8((images - 4 / 255).clamp(0, 1)))

    global CURRENT
    try:
        CURRENT = first_class
        first = run_no_attack(tmp_path / "res", "factory_here:make")
        CURRENT = Shift
        second = run_no_attack(tmp_path / "res", "factory_here:make")
    finally:
        CURRENT = None
    assert first["protection"]["code"]["sha256"] != second["protection"]["code"]["sha256"]
    assert first["protection_run"]["cache_key"] != second["protection_run"]["cache_key"]
    assert exploit_keys(first, "protected").isdisjoint(exploit_keys(second, "protected"))
    assert exploit_keys(first, "clean") == exploit_keys(second, "clean")


CURRENT: type[Protection] | None = None
