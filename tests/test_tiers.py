"""Tiers: settings grouped by part and section, one precedence for every part's parameters

    part default < tier < scenario < --audit-set

recorded per key in ``Resolved.origin``; ``--audit-set`` parsing (dotted keys, YAML-typed
values, the flat aliases of earlier versions) and its validation before anything runs.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config.options import AuditOptions
from audit.config.tiers import (
    ALIASES,
    SECTIONS,
    TIERS,
    Tier,
    get_tier,
    parse_overrides,
    validate_overrides,
)
from audit.parts import EXPLOITS, PROTECTIONS, REGISTRIES
from audit.parts.exploits.dreambooth import DreamboothParams
from audit.parts.protections.pid import PIDParams
from audit.parts.registry import InvalidParams

DREAMBOOTH = EXPLOITS.get("dreambooth")
PID = PROTECTIONS.get("pid")


def tier(name: str = "smoke", *items: str) -> Tier:
    return get_tier(name, parse_overrides(list(items)))


# -- precedence ----------------------------------------------------------------------------------
def test_dreambooth_precedence_layer_by_layer() -> None:
    bare = Tier("bare", {})  # no tier values: the part's defaults
    default = bare.resolve_part(DREAMBOOTH)
    assert default.params == DreamboothParams() and default.origin == {}
    # The tier over the default.
    smoke = get_tier("smoke").resolve_part(DREAMBOOTH)
    assert smoke.params.steps == 450 and smoke.origin["steps"] == "tier"
    assert (smoke.params.instance_prompt == DreamboothParams().instance_prompt
            and "instance_prompt" not in smoke.origin)
    # The scenario over the tier.
    scen = get_tier("smoke").resolve_part(DREAMBOOTH, {"steps": 7, "instance_prompt": "a photo of "
            "sks face"})
    assert (scen.params.steps, scen.params.instance_prompt) == (7, "a photo of sks face")
    assert scen.origin["steps"] == "scenario" and scen.origin["instance_prompt"] == "scenario"
    assert scen.params.lr == 3e-3 and scen.origin["lr"] == "tier"  # the rest still from the tier
    # --audit-set over the scenario.
    top = tier("smoke", "dreambooth.steps=9").resolve_part(DREAMBOOTH,
                                                           {"steps": 7, "instance_prompt": "x"})
    assert top.params.steps == 9 and top.origin["steps"] == "--audit-set"
    assert top.params.instance_prompt == "x" and top.origin["instance_prompt"] == "scenario"
    assert top.params.batch_size == 4 and top.origin["batch_size"] == "tier"
    assert top.params.max_grad_norm == 1.0 and "max_grad_norm" not in top.origin


def test_nested_parameters_merge_key_by_key_across_layers() -> None:
    t = tier("smoke", "dreambooth.posterior.value=0.5")
    r = t.resolve_part(DREAMBOOTH, {"posterior": {"sigma": "clip"}})
    assert r.params.posterior.sigma == "clip" and r.params.posterior.value == 0.5
    assert (r.origin["posterior.sigma"] == "scenario" and r.origin["posterior.value"]
            == "--audit-set")
    r = tier("smoke", "dreambooth.posterior.sigma=zero").resolve_part(
        DREAMBOOTH, {"posterior": {"sigma": "clip", "value": 1.0}})
    assert r.params.posterior.sigma == "zero" and r.params.posterior.value == 1.0
    assert (r.origin["posterior.sigma"] == "--audit-set" and r.origin["posterior.value"]
            == "scenario")


def test_pid_precedence() -> None:
    assert Tier("bare", {}).resolve_part(PID).params == PIDParams() and PIDParams().steps == 1000
    smoke = get_tier("smoke").resolve_part(PID)
    assert smoke.params.steps == 100 and smoke.origin == {"steps": "tier"}
    r = tier("smoke", "pid.steps=7", "pgd_steps=8").resolve_part(PID)  # the later item wins
    assert r.params.steps == 8 and r.origin["steps"] == "--audit-set"
    r = tier("paper", "pid.step_size=0.01").resolve_part(PID)
    assert (r.params.steps, r.params.step_size) == (1000, 0.01)
    assert r.origin == {"steps": "tier", "step_size": "--audit-set"}
    r = get_tier("smoke").resolve_part(PID, {"steps": 3})
    assert r.params.steps == 3 and r.origin["steps"] == "scenario"


def test_sections_resolve_with_their_origin() -> None:
    g = get_tier("smoke").resolve_section("generation")
    assert (g.params.images_per_prompt, g.params.steps) == (8, 10) and g.origin["steps"] == "tier"
    assert g.params.guidance_scale == 7.5 and "guidance_scale" not in g.origin
    g = tier("smoke", "generation.guidance_scale=5").resolve_section("generation")
    assert g.params.guidance_scale == 5 and g.origin["guidance_scale"] == "--audit-set"
    assert tier("smoke", "controls.noise_floor=true").controls.noise_floor
    assert not get_tier("smoke").controls.noise_floor and get_tier("smoke").controls.matched


@pytest.mark.parametrize(
    ("name", "pid_steps", "db", "images", "resolution"),
    [
        ("smoke", 100, {"steps": 450, "lr": 3e-3, "lr_schedule": "cosine", "batch_size": 4,
                        "prior_preservation": False}, 8, 64),
        ("standard", 200, {"steps": 400, "lr": 2e-6, "batch_size": 1, "prior_preservation": True,
                           "num_class_images": 50}, 8, None),
        ("paper", 1000, {"steps": 1000, "lr": 2e-6, "lr_schedule": "constant", "batch_size": 1,
                         "prior_preservation": True,
                         "num_class_images": 200, "train_text_encoder": False}, 20, None),
    ],
)
def test_each_tier_resolves_the_settings_it_documents(
        name, pid_steps, db, images, resolution) -> None:
    t = get_tier(name)
    assert t.resolve_part(PID).params.steps == pid_steps
    dreambooth = t.resolve_part(DREAMBOOTH).params
    for key, value in db.items():
        assert getattr(dreambooth, key) == value, key
    assert (t.generation.images_per_prompt == images and t.resolution == resolution
            and t.replicates == 3)
    for section in SECTIONS:
        t.resolve_section(section)
    assert not t.non_standard
    validate_overrides(t)


def test_resolving_never_changes_the_tier_tables() -> None:
    before = copy.deepcopy(TIERS)
    t = tier("smoke", "dreambooth.posterior.sigma=zero", "dreambooth.steps=3", "generation.steps=2")
    t.resolve_part(DREAMBOOTH, {"posterior": {"value": 1.0}})
    t.resolve_section("generation")
    assert TIERS == before
    assert get_tier("smoke").resolve_part(DREAMBOOTH).params.steps == 450


def test_unknown_tier_says_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"unknown tier 'smok' \(did you mean 'smoke'\?\)"):
        get_tier("smok")


# -- --audit-set parsing ---------------------------------------------------------------------------
def test_parse_overrides_dotted_nested_and_yaml_typed() -> None:
    parsed = parse_overrides([
        "dreambooth.steps=200", "dreambooth.lr=0.001", "dreambooth.train_text_encoder=true",
        "dreambooth.posterior.sigma=zero", "dreambooth.instance_prompt=a photo of sks face",
        "verdict.face_metric_substitute=null", "replicates=5", "resolution=128",
        "generation.prompts=a photo of sks person|a selfie of sks person",
    ])
    assert parsed == {
        "dreambooth": {"steps": 200, "lr": 0.001, "train_text_encoder": True,
                       "posterior": {"sigma": "zero"},
                       "instance_prompt": "a photo of sks face"},
        "verdict": {"face_metric_substitute": None},
        "": {"replicates": 5, "resolution": 128},
        "generation": {"prompts": ["a photo of sks person", "a selfie of sks person"]},
    }
    assert (isinstance(parsed["dreambooth"]["steps"], int)
            and isinstance(parsed["dreambooth"]["lr"], float))
    assert parse_overrides(None) == {} and parse_overrides([]) == {}
    t = get_tier("smoke", parsed)
    validate_overrides(t)
    assert t.replicates == 5 and t.resolution == 128 and t.non_standard
    assert t.generation.prompts == ("a photo of sks person", "a selfie of sks person")


@pytest.mark.parametrize(
    ("alias", "value", "section", "key", "typed"),
    [
        ("finetune_steps", "200", "dreambooth", "steps", 200),
        ("pgd_steps", "8", "pid", "steps", 8),
        ("finetune_lr", "0.01", "dreambooth", "lr", 0.01),
        ("train_text_encoder", "true", "dreambooth", "train_text_encoder", True),
        ("images_per_prompt", "2", "generation", "images_per_prompt", 2),
        ("inference_steps", "3", "generation", "steps", 3),
        ("bootstrap_resamples", "200", "verdict", "bootstrap_resamples", 200),
        ("noise_floor_control", "true", "controls", "noise_floor", True),
    ],
)
def test_aliases_map_to_their_sections(
        alias: str, value: str, section: str, key: str, typed) -> None:
    parsed = parse_overrides([f"{alias}={value}"])
    assert parsed == {section: {key: typed}}
    t = get_tier("smoke", parsed)
    validate_overrides(t)
    resolved = (t.resolve_section(section) if section in SECTIONS
                else t.resolve_part(REGISTRIES_BY_NAME[section]))
    assert getattr(resolved.params, key) == typed and resolved.origin[key] == "--audit-set"


REGISTRIES_BY_NAME = {p.name: p for reg in REGISTRIES.values() for p in reg}


def test_every_alias_names_a_real_setting() -> None:
    for alias, target in ALIASES.items():
        section, _, key = target.partition(".")
        model = (SECTIONS[section] if section in SECTIONS
                 else REGISTRIES_BY_NAME[section].params_model())
        assert key in model.model_fields, (alias, target)


@pytest.mark.parametrize("item", ["novalue", "=5", ""])
def test_malformed_items_are_refused(item: str) -> None:
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_overrides([item])


# -- validation before anything runs ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("items", "fragments"),
    [
        (["dreambooth.steps=-5"], ["dreambooth", "'steps'", "greater than or equal to 1"]),
        (["finetune_steps=0"], ["dreambooth", "'steps'", "greater than or equal to 1"]),
        (["dreambooth.steps=100001"], ["'steps'", "less than or equal to 100000"]),
        (["dreambooh.steps=5"], ["unknown section 'dreambooh'", "did you mean 'dreambooth'"]),
        (["generatoin.steps=5"], ["unknown section 'generatoin'", "did you mean 'generation'"]),
        (["replicates=0"], ["replicates", "greater than or equal to 1"]),
        (["replicats=2"], ["replicats", "did you mean 'replicates'"]),
        (["generation.images_per_prompt=0"], ["generation", "'images_per_prompt'", "greater than "
                "or equal to 1"]),
        (["pid.stepz=5"], ["pid", "unknown field 'stepz'", "did you mean 'steps'"]),
        (["dreambooth.posterior.sigma=tiny"], ["'posterior.sigma'", "'zero'"]),
        (["verdict.alpha=0.7"], ["verdict", "'alpha'", "less than 0.5"]),
        (["resolution=16"], ["resolution", "greater than or equal to 32"]),
    ],
)
def test_validate_overrides_refuses_with_the_field_and_the_range(
        items: list[str], fragments: list[str]) -> None:
    with pytest.raises(InvalidParams) as info:
        validate_overrides(tier("smoke", *items))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_valid_overrides_pass_and_mark_the_run_non_standard() -> None:
    t = tier("smoke", "dreambooth.steps=5", "pid.steps=2", "generation.images_per_prompt=1",
             "controls.noise_floor=true")
    validate_overrides(t)
    assert t.non_standard and t.to_dict()["overrides"]["pid"] == {"steps": 2}
    assert not get_tier("smoke").non_standard
    options = AuditOptions(protection="pid", replicates=1)
    assert options.tier_settings.replicates == 1 and options.non_standard


@settings(max_examples=60, deadline=None)
@given(steps=st.integers(1, 100_000), tier_name=st.sampled_from(sorted(TIERS)), alias=st.booleans())
def test_any_in_range_step_count_round_trips(steps: int, tier_name: str, alias: bool) -> None:
    key = "finetune_steps" if alias else "dreambooth.steps"
    t = get_tier(tier_name, parse_overrides([f"{key}={steps}"]))
    validate_overrides(t)
    resolved = t.resolve_part(DREAMBOOTH, {"steps": 3})  # a scenario's value is overridden too
    assert resolved.params.steps == steps and resolved.origin["steps"] == "--audit-set"


@settings(max_examples=30, deadline=None)
@given(steps=st.one_of(st.integers(-10**6, 0), st.integers(100_001, 10**9)))
def test_any_out_of_range_step_count_is_refused(steps: int) -> None:
    with pytest.raises(InvalidParams, match="steps"):
        validate_overrides(get_tier("smoke", parse_overrides([f"dreambooth.steps={steps}"])))
