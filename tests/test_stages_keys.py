"""The stages' one cache-key rule, on a throw-away cache root (no real model).

    stage · part identity · resolved params · inputs · model fingerprint · seed (· extras)

A key changes exactly when one of these does; each stage is a cache hit the second time; the
fine-tuned weights and the generations are separate entries (new evaluation prompts
re-generate without re-fitting); every stage holds the entry's lock while it computes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_overrides
from audit.data.images import from_uint8, to_uint8
from audit.parts import TRANSFORMS
from audit.parts.protections.simple import NoProtection, RandomNoise
from audit.parts.registry import PartSpec
from audit.run.cache import Cache
from audit.run.planner import ChainStep, ProtectionInfo, Run, plan_case
from audit.run.progress import Progress
from audit.run.stages import Stages, stage_key

BASE: dict[str, Any] = {
    "part": {"kind": "transform", "name": "jpeg", "version": 1, "target": "m:f"},
    "params": {"quality": 75},
    "inputs": {"images": "abc"},
    "model": None,
    "seed": None,
}
CHANGES = {
    "part": [{**BASE["part"], "version": 2}, {**BASE["part"], "name": "resize"},
             {**BASE["part"], "target": "m:g"}],
    "params": [{"quality": 76}, {"quality": 75, "extra": 1}, {}],
    "inputs": [{"images": "abd"}, {"images": "abc", "reference": "x"}],
    "model": ["fingerprint"],
    "seed": [0, 1],
}


def no_model() -> Any:
    raise AssertionError("this stage must not load the model")


def stages(root: Path, model=no_model) -> Stages:
    return Stages(Cache(root), model, lambda: torch.device("cpu"), lambda: 16, Progress(None))


def images_u8(seed: int = 0, n: int = 2, side: int = 16) -> torch.Tensor:
    return to_uint8(torch.rand((n, 3, side, side), generator=torch.Generator().manual_seed(seed)))


def step(name: str, seed: int | None, **params) -> ChainStep:
    return ChainStep("transform", PartSpec("transform", name,
                                           TRANSFORMS.get(name).validate(params).model_dump()),
                                           seed)


# -- the rule ------------------------------------------------------------------------------------
def test_the_key_changes_with_each_field_and_only_then(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    key = stage_key(cache, "transform", **BASE)
    assert key == stage_key(cache, "transform",
                            **{k: (dict(reversed(v.items())) if isinstance(v, dict) else v) for k,
                               v in BASE.items()})
    seen = {key}
    for name, values in CHANGES.items():
        for value in values:
            changed = stage_key(cache, "transform", **{**BASE, name: value})
            assert changed != key, (name, value)
            seen.add(changed)
    assert len(seen) == 1 + sum(len(v) for v in CHANGES.values())
    assert stage_key(cache, "protect", **BASE) != key  # the stage itself is part of the key
    assert stage_key(cache, "finetune", **BASE, resolution=64) != stage_key(
        cache, "finetune", **BASE, resolution=32)
    # not where the cache lives
    assert stage_key(Cache(tmp_path / "other"), "transform", **BASE) == key


small = st.dictionaries(st.text(max_size=3), st.one_of(st.integers(-3, 3), st.text(max_size=2)),
                        max_size=3)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["part", "params", "inputs"]), a=small, b=small)
def test_keys_agree_exactly_when_the_fields_agree(
        tmp_path: Path, field: str, a: dict, b: dict) -> None:
    cache = Cache(tmp_path)
    ka = stage_key(cache, "s", **{**BASE, field: a})
    kb = stage_key(cache, "s", **{**BASE, field: b})
    assert (ka == kb) == (a == b)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.one_of(st.none(), st.integers(0, 2**32)), b=st.one_of(st.none(), st.integers(0, 2**32)))
def test_seed_none_and_every_seed_give_distinct_keys(tmp_path: Path, a, b) -> None:
    cache = Cache(tmp_path)
    assert (stage_key(cache, "s", **{**BASE, "seed": a})
            == stage_key(cache, "s", **{**BASE, "seed": b})) == (a == b)


# -- the transform stage ---------------------------------------------------------------------------
def test_a_transform_is_cached_and_computes_what_the_part_computes(tmp_path: Path) -> None:
    s = stages(tmp_path)
    x = images_u8()
    first = s.transform(step("jpeg", None, quality=75), x)
    assert first.dtype == torch.uint8 and first.shape == x.shape
    part = TRANSFORMS.get("jpeg")
    expected = to_uint8(
        part.load()(from_uint8(x), part.validate({"quality": 75}), torch.Generator()))
    assert torch.equal(first, expected)
    events = s.cache.take_events()
    assert events.misses == ["transform"] and events.hits == []
    again = s.transform(step("jpeg", None, quality=75), x)
    assert torch.equal(again, first)
    events = s.cache.take_events()
    assert events.hits == ["transform"] and events.misses == []
    # Other parameters or other input images: another entry.
    s.transform(step("jpeg", None, quality=50), x)
    s.transform(step("jpeg", None, quality=75), images_u8(1))
    assert s.cache.take_events().misses == ["transform", "transform"]


def test_a_random_transforms_key_has_its_seed(tmp_path: Path) -> None:
    s = stages(tmp_path)
    x = images_u8()
    a = s.transform(step("gaussian_noise", 1, std=0.1), x)
    b = s.transform(step("gaussian_noise", 2, std=0.1), x)
    assert not torch.equal(a, b)
    assert s.cache.take_events().misses == ["transform", "transform"]
    assert torch.equal(s.transform(step("gaussian_noise", 1, std=0.1), x), a)
    assert s.cache.take_events().hits == ["transform"]


def test_a_deterministic_transform_is_shared_by_the_replicates_of_a_plan(tmp_path: Path) -> None:
    """The planner gives JPEG no seed, so the three replicates' JPEG steps are one entry."""
    t = get_tier("smoke")
    spec = PartSpec("protection", "none", {"epsilon": 0.0})
    plan = plan_case(load_scenario(CATALOGUE_DIR / "jpeg-q75.yaml"),
                     ProtectionInfo(spec, random=False), t, 0)
    s = stages(tmp_path)
    x = images_u8()
    outputs = [s.transform(run.chain[1], x) for run in plan.runs_for("attacked", 0)]
    assert all(torch.equal(o, outputs[0]) for o in outputs)
    events = s.cache.take_events()
    assert events.misses == ["transform"] and events.hits == ["transform", "transform"]


def test_a_deterministic_transforms_key_ignores_the_seed(tmp_path: Path) -> None:
    s = stages(tmp_path)
    x = images_u8()
    a = s.transform(step("jpeg", 1, quality=75), x)
    b = s.transform(step("jpeg", 2, quality=75), x)
    assert torch.equal(a, b)
    events = s.cache.take_events()
    assert events.misses == ["transform"] and events.hits == ["transform"]


def test_the_noise_floor_run_moves_each_pixel_by_at_most_one_level(
        tmp_path: Path, images: torch.Tensor) -> None:
    t = get_tier("smoke", parse_overrides(["controls.noise_floor=true"]))
    spec = PartSpec("protection", "none", {"epsilon": 0.0})
    plan = plan_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"),
                     ProtectionInfo(spec, random=False), t, 0)
    (floor,) = plan.runs_for("noise_floor")
    clean = to_uint8(images)
    jittered = stages(tmp_path).transform(floor.chain[0], clean)
    diff = jittered.to(torch.int16) - clean.to(torch.int16)
    assert int(diff.abs().max()) == 1 and float((diff != 0).float().mean()) > 0.5


# -- the protect stage -----------------------------------------------------------------------------
def test_protect_is_cached_per_seed_and_needs_no_model_when_the_protection_uses_none(
        tmp_path: Path) -> None:
    s = stages(tmp_path)
    subject = SimpleNamespace(name="s", images=from_uint8(images_u8()), content_hash="subject-hash")
    tier = get_tier("smoke")
    random = RandomNoise(0.05)
    spec = PartSpec("protection", "random", {"epsilon": 0.05})
    a, info = s.protect(random, ChainStep("protection", spec, 1), subject, tier)
    b, _ = s.protect(random, ChainStep("protection", spec, 2), subject, tier)
    assert not torch.equal(a, b) and info["seed"] == 1
    again, info_again = s.protect(random, ChainStep("protection", spec, 1), subject, tier)
    assert torch.equal(a, again) and info_again["cache_key"] == info["cache_key"]
    events = s.cache.take_events()
    assert events.misses == ["protect", "protect"] and events.hits == ["protect"]
    # Another subject (content hash) or other parameters: another entry.
    other = SimpleNamespace(name="s", images=subject.images, content_hash="other-hash")
    _, info_other = s.protect(random, ChainStep("protection", spec, 1), other, tier)
    _, info_eps = s.protect(RandomNoise(0.02), ChainStep("protection", spec, 1), subject, tier)
    assert len({info["cache_key"], info_other["cache_key"], info_eps["cache_key"]}) == 3
    none, _ = s.protect(NoProtection(), ChainStep("protection", PartSpec("protection", "none", {}),
                                                  None), subject, tier)
    assert torch.equal(none, to_uint8(subject.images))


# -- fine-tune and generation: separate entries ----------------------------------------------------
class FakeModel:
    """Stands in for the diffusion model: a fingerprint, a 'UNet' and a 'text encoder'."""

    fingerprint = "fake-model"
    model_id = "fake"

    def __init__(self) -> None:
        self.unet = torch.nn.Linear(2, 2)
        self.text_encoder = torch.nn.Linear(2, 2)

    def fresh_copy(self) -> FakeModel:
        return FakeModel()


@dataclass
class Calls:
    finetune: list[Any] = field(default_factory=list)
    generate: list[Any] = field(default_factory=list)


@pytest.fixture
def fake_exploit(monkeypatch) -> Calls:
    import audit.diffusion.sampling as sampling
    import audit.parts.exploits.dreambooth as dreambooth

    calls = Calls()

    def finetune(model, images, config, progress, class_images=None):
        calls.finetune.append(config)
        unet = torch.nn.Linear(2, 2)
        with torch.no_grad():
            unet.weight.fill_(float(config.seed % 97) + float(images.float().mean()) + config.steps)
        return unet, model.text_encoder, {"loss_first_10pct": 1.0, "steps": config.steps}

    def generate(model, unet, text_encoder, cfg, resolution, progress):
        calls.generate.append(cfg)
        n = len(cfg.prompts) * cfg.images_per_prompt
        level = float(unet.weight.detach().mean()) + cfg.seed + cfg.steps
        g = torch.Generator().manual_seed(int(level * 1000) % 2**31)
        return torch.rand((n, 3, 4, 4), generator=g)

    monkeypatch.setattr(dreambooth, "finetune", finetune)
    monkeypatch.setattr(sampling, "generate", generate)
    return calls


def exploit_run(seed: int = 0, **params) -> Run:
    t = get_tier("smoke")
    from audit.parts import EXPLOITS

    resolved = t.resolve_part(EXPLOITS.get("dreambooth"), params).to_dict()
    return Run("clean", None, 0, (), PartSpec("exploit", "dreambooth", resolved), seed)


def test_weights_and_generations_are_separate_entries(tmp_path: Path, fake_exploit: Calls) -> None:
    s = stages(tmp_path, model=lambda: FakeModel())
    x = images_u8()
    gen = get_tier("smoke").generation
    first = s.exploit(exploit_run(), x, gen)
    assert len(fake_exploit.finetune) == 1 and len(fake_exploit.generate) == 1
    assert fake_exploit.finetune[0].seed == 0 and fake_exploit.finetune[0].steps == 450
    events = s.cache.take_events()
    assert sorted(events.misses) == ["finetune", "generate"] and events.hits == []
    assert (first.generations.dtype == torch.uint8 and len(first.generations) == 3
            * gen.images_per_prompt)
    # The same run again: both from the cache, nothing computed.
    again = s.exploit(exploit_run(), x, gen)
    assert torch.equal(again.generations, first.generations)
    assert (again.weights_key, again.generations_key) == (first.weights_key, first.generations_key)
    assert len(fake_exploit.finetune) == 1 and len(fake_exploit.generate) == 1
    assert again.info["loss_first_10pct"] == 1.0
    # Other evaluation settings: re-generate from the cached weights, no new fine-tune.
    other_gen = get_tier("smoke", parse_overrides(["generation.images_per_prompt=2"])).generation
    regenerated = s.exploit(exploit_run(), x, other_gen)
    assert len(fake_exploit.finetune) == 1 and len(fake_exploit.generate) == 2
    assert (regenerated.weights_key == first.weights_key
            and regenerated.generations_key != first.generations_key)
    assert len(regenerated.generations) == 6
    events = s.cache.take_events()
    assert ("finetune" in events.hits and "generate" in events.misses
            and "finetune" not in events.misses)


@pytest.mark.parametrize(
    "change",
    [{"params": {"steps": 7}}, {"params": {"instance_prompt": "a photo of sks face"}},
     {"seed": 1000003}, {"images": 1}],
)
def test_a_changed_exploit_refits_and_regenerates(
        tmp_path: Path, fake_exploit: Calls, change: dict) -> None:
    s = stages(tmp_path, model=lambda: FakeModel())
    gen = get_tier("smoke").generation
    base = s.exploit(exploit_run(), images_u8(), gen)
    run = exploit_run(change.get("seed", 0), **change.get("params", {}))
    other = s.exploit(run, images_u8(change.get("images", 0)), gen)
    assert other.weights_key != base.weights_key and other.generations_key != base.generations_key
    assert len(fake_exploit.finetune) == 2 and len(fake_exploit.generate) == 2


def test_a_generations_hit_does_not_refit_when_the_weights_entry_is_gone(
        tmp_path: Path, fake_exploit: Calls) -> None:
    import shutil

    s = stages(tmp_path, model=lambda: FakeModel())
    gen = get_tier("smoke").generation
    first = s.exploit(exploit_run(), images_u8(), gen)
    shutil.rmtree(tmp_path / "finetune")
    again = s.exploit(exploit_run(), images_u8(), gen)
    assert torch.equal(again.generations, first.generations)
    assert len(fake_exploit.finetune) == 1


# -- the metric stage ------------------------------------------------------------------------------
def test_the_metric_stage_holds_the_lock_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    locks: list[tuple[str, str]] = []
    original = Cache.lock

    @contextlib.contextmanager
    def recording_lock(self, stage: str, key: str):
        locks.append((stage, key))
        with original(self, stage, key):
            yield

    monkeypatch.setattr(Cache, "lock", recording_lock)
    s = stages(tmp_path)
    generations, reference = images_u8(0, 3, 32), images_u8(1, 2, 32)
    result = s.metric("subject_similarity", generations, reference)
    assert len(result["values"]) == 3 and result["direction"] == "down"
    ((stage, key),) = locks
    assert stage == "metric" and (tmp_path / "metric" / key[:2] / key).is_dir()
    assert s.metric("subject_similarity", generations, reference) == result
    assert locks == [(stage, key), (stage, key)]
    events = s.cache.take_events()
    assert events.misses == ["metric"] and events.hits == ["metric"]
    # Other generations or another reference: another key.
    s.metric("subject_similarity", images_u8(2, 3, 32), reference)
    s.metric("subject_similarity", generations, images_u8(3, 2, 32))
    assert len({k for _, k in locks}) == 3


def test_every_stage_computes_under_the_lock(tmp_path: Path, monkeypatch) -> None:
    held: list[str] = []
    computed_under_lock: list[bool] = []
    original = Cache.lock

    @contextlib.contextmanager
    def tracking_lock(self, stage: str, key: str):
        held.append(stage)
        try:
            with original(self, stage, key):
                yield
        finally:
            held.remove(stage)

    original_put = Cache.put

    def tracking_put(self, stage: str, key: str, tensors, meta) -> None:
        computed_under_lock.append(stage in held)
        original_put(self, stage, key, tensors, meta)

    monkeypatch.setattr(Cache, "lock", tracking_lock)
    monkeypatch.setattr(Cache, "put", tracking_put)
    s = stages(tmp_path)
    s.transform(step("jpeg", None), images_u8())
    subject = SimpleNamespace(name="s", images=from_uint8(images_u8()), content_hash="h")
    s.protect(RandomNoise(0.05), ChainStep("protection", PartSpec("protection", "random", {}), 1),
              subject, get_tier("smoke"))
    s.metric("subject_similarity", images_u8(0, 2, 32), images_u8(1, 2, 32))
    assert computed_under_lock == [True, True, True]
