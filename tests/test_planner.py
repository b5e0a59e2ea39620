"""The plan of one case (no model): runs by role × replicate, their seeds, chains and exploits.

``plan_case`` is a pure function of (scenario, protection, tier, seed); everything here is
checked on the bundled catalogue for every built-in reference protection and K = 1, 2, 3.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from audit.__main__ import main
from audit.config.scenario import CATALOGUE_DIR, Scenario, catalogue_files, load_scenario
from audit.config.tiers import TIERS, get_tier, parse_overrides
from audit.parts import EXPLOITS
from audit.parts import PROTECTIONS as PROTECTION_PARTS
from audit.parts.exploits import trains
from audit.parts.protections.build import build_protection
from audit.parts.registry import PartSpec
from audit.run.planner import ProtectionInfo, plan_case, replicate_seed

SCENARIOS = [p.stem for p in catalogue_files()]
PROTECTIONS = ["none", "random", "pid"]


@functools.cache
def scenario(name: str) -> Scenario:
    return load_scenario(CATALOGUE_DIR / f"{name}.yaml")


def protection_info(name: str, tier) -> ProtectionInfo:
    protection, spec = build_protection(name, tier)
    return ProtectionInfo(spec, protection.random, getattr(protection, "shared_across_replicates",
                                                           False))


def plan(name: str, protection: str = "pid", k: int = 3, seed: int = 0, tier: str = "smoke",
         *items: str):
    overrides = parse_overrides([f"replicates={k}", *items])
    t = get_tier(tier, overrides)
    return plan_case(scenario(name), protection_info(protection, t), t, seed)


def test_the_catalogue_is_what_these_tests_cover() -> None:
    assert {"jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma"} <= set(SCENARIOS)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("protection", PROTECTIONS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_roles_replicates_and_seeds(name: str, protection: str, k: int) -> None:
    seed = 11
    p = plan(name, protection, k, seed)
    n_variants = len(scenario(name).resolved_variants())
    assert p.replicates == k and len(p.variants) == n_variants
    # Replicate seeds: distinct, replicate 0 is the audit's own seed.
    assert len(set(p.seeds)) == k and p.seeds[0] == seed
    assert p.seeds == tuple(replicate_seed(seed, r) for r in range(k))
    # K runs per role (and per variant), one per replicate, in replicate order.
    for role in ("clean", "protected"):
        assert [r.replicate for r in p.runs_for(role)] == list(range(k))
    for v in range(n_variants):
        assert [r.replicate for r in p.runs_for("attacked", v)] == list(range(k))
    adaptive = scenario(name).adaptive is not None
    extra = {"non_adaptive_protected", "non_adaptive_attacked"} if adaptive else set()
    # An editing scenario always runs the null baseline (its verdict is measured from it).
    editing = not trains(p.standard_exploit.name)
    if editing:
        extra.add("null_baseline")
    assert {r.role for r in p.runs} <= {"clean", "protected", "attacked", "control", *extra}
    for r in range(k):
        clean, protected = p.runs_for("clean")[r], p.runs_for("protected")[r]
        attacked = [p.runs_for("attacked", v)[r] for v in range(n_variants)]
        # Paired by replicate: one exploit seed for every role of replicate r.
        assert {x.seed for x in (clean, protected, *attacked)} == {p.seeds[r]}
        assert clean.chain == () and clean.exploit == p.standard_exploit
        assert protected.exploit == p.standard_exploit
        (step,) = protected.chain
        assert step.kind == "protection" and step.spec == p.protection
        assert (step.adapt is not None) == adaptive
        # An adaptive scenario's protection as it is: the other scenarios' protected step.
        plain = p.runs_for("non_adaptive_protected")[r].chain[0] if adaptive else step
        assert plain.adapt is None and plain.spec == p.protection
        # A random protection is re-crafted with the replicate's seed; 'none' has no seed at all.
        assert plain.seed == (p.seeds[r] if protection != "none" else None)
        for v, run in enumerate(attacked):
            variant = p.variants[v]
            assert run.chain[0] == step and tuple(s.spec for s in run.chain[1:]) == variant.attack
            assert run.exploit == variant.exploit
    # The standard exploit is the tier's DreamBooth; an editing scenario's is its editing exploit.
    standard = scenario(name).exploit.part if editing else "dreambooth"
    assert p.standard_exploit == PartSpec("exploit", standard,
                                          get_tier("smoke").resolve_part(EXPLOITS.get(standard)).to_dict())
    # unique_runs: one run per identity, first occurrence kept, nothing lost.
    unique = p.unique_runs()
    assert len({r.identity for r in unique}) == len(unique) == len({r.identity for r in p.runs})
    assert [r for r in p.runs if r in unique] == unique
    notes = [n for n in p.notes if not n.startswith("adaptive protector")]
    if k == 1:
        assert notes and "one replicate" in notes[0]
    else:
        assert not notes


@pytest.mark.parametrize("protection", PROTECTIONS)
def test_protected_images_differ_by_replicate_only_for_a_random_protection(protection: str) -> None:
    p = plan("jpeg-q75", protection, 3)
    chains = {r.identity[0] for r in p.runs_for("protected")}  # the frozen image chain
    assert len(chains) == (3 if protection != "none" else 1)
    # JPEG is deterministic: no seed in its step, whatever the replicate.
    for run in p.runs_for("attacked", 0):
        assert run.chain[1].spec.name == "jpeg" and run.chain[1].seed is None


def test_a_folder_protection_is_shared_by_every_replicate() -> None:
    t = get_tier("smoke")
    spec = PartSpec("protection", "dir", {"path": "/x", "epsilon": None})
    p = plan_case(scenario("no-attack"), ProtectionInfo(spec, random=True,
                                                        shared_across_replicates=True), t, 4)
    assert {r.chain[0].seed for r in p.runs_for("protected")} == {4}
    # the exploits still differ by replicate
    assert len({r.seed for r in p.runs_for("protected")}) == 3


def test_random_attack_steps_draw_with_the_replicates_seed(tmp_path: Path) -> None:
    path = tmp_path / "noisy.yaml"
    path.write_text("id: noisy\nversion: 1\ntitle: t\nwhy: w\nsource: s\nattack:\n  - "
                    "gaussian_noise: {std: 0.05}\n  - jpeg: {quality: 50}\n")
    t = get_tier("smoke")
    p = plan_case(load_scenario(path), protection_info("pid", t), t, 0)
    for r, run in enumerate(p.runs_for("attacked", 0)):
        noise, jpeg = run.chain[1:]
        assert (noise.spec == PartSpec("transform", "gaussian_noise", {"std": 0.05}) and noise.seed
                == p.seeds[r])
        assert jpeg.spec.params == {"quality": 50} and jpeg.seed is None
    assert "gaussian_noise(std=0.05) @seed 0" in p.table()


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("protection", PROTECTIONS)
def test_no_attack_shares_its_attacked_runs_with_the_protected_runs(
        protection: str, k: int) -> None:
    p = plan("no-attack", protection, k)
    attacked, protected = p.runs_for("attacked", 0), p.runs_for("protected")
    assert [a.identity for a in attacked] == [q.identity for q in protected]
    assert not p.runs_for("control", 0) and not p.variants[0].changes_exploit
    assert len(p.unique_runs()) == 2 * k  # clean and protected only
    assert all(r.role in ("clean", "protected") for r in p.unique_runs())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_zero_sigma_has_matched_controls_with_the_changed_exploit(k: int) -> None:
    p = plan("zero-sigma", "pid", k)
    (variant,) = p.variants
    assert variant.changes_exploit and variant.exploit.params["posterior"]["sigma"] == "zero"
    assert p.standard_exploit.params["posterior"]["sigma"] == "sample"
    assert variant.origin["posterior.sigma"] == "scenario" and variant.origin["steps"] == "tier"
    # Apart from σ the changed exploit is the standard one.
    assert {**variant.exploit.params, "posterior": None} == {**p.standard_exploit.params,
                                                             "posterior": None}
    controls = p.runs_for("control", 0)
    assert [c.replicate for c in controls] == list(range(k))
    for r, control in enumerate(controls):
        assert (control.chain == () and control.exploit == variant.exploit and control.seed
                == p.seeds[r])
    assert len(p.unique_runs()) == 4 * k
    assert ("posterior.sigma=zero" in p.exploit_label(variant.exploit)
            and p.exploit_label(p.standard_exploit) == "standard")
    # Without matched controls (tier setting) the plan has none.
    off = plan("zero-sigma", "pid", k, 0, "smoke", "controls.matched=false")
    assert not off.runs_for("control", 0) and not off.variants[0].changes_exploit


def test_prompt_mismatch_has_controls_for_its_non_standard_prompts_only() -> None:
    p = plan("prompt-mismatch", "pid", 3)
    standard_prompt = p.standard_exploit.params["instance_prompt"]
    prompts = [v.exploit.params["instance_prompt"] for v in p.variants]
    assert prompts == ["a photo of sks person", "a photo of sks face", "a dslr portrait of sks "
            "person"]
    for v, variant in enumerate(p.variants):
        standard = variant.exploit.params["instance_prompt"] == standard_prompt
        assert variant.changes_exploit == (not standard)
        assert len(p.runs_for("control", v)) == (0 if standard else 3)
        for control in p.runs_for("control", v):
            assert control.exploit.params["instance_prompt"] == prompts[v] and control.chain == ()
    # Variant 0 is the protector's own prompt: its attacked runs are the protected runs.
    assert [a.identity for a in p.runs_for("attacked", 0)] == [q.identity
                                                               for q in p.runs_for("protected")]
    # clean, protected, 2 × (attacked + control), per replicate.
    assert len(p.unique_runs()) == 3 * 6


@pytest.mark.parametrize("name", SCENARIOS)
def test_noise_floor_control_adds_exactly_one_run(name: str) -> None:
    base = plan(name, "pid", 3)
    p = plan(name, "pid", 3, 0, "smoke", "controls.noise_floor=true")
    assert not base.runs_for("noise_floor")
    (floor,) = p.runs_for("noise_floor")
    assert len(p.runs) == len(base.runs) + 1 and len(p.unique_runs()) == len(base.unique_runs()) + 1
    (step,) = floor.chain
    assert step.kind == "transform" and step.spec == PartSpec("transform", "level_jitter",
                                                              {"levels": 1})
    assert step.seed is not None and floor.replicate == 0
    assert floor.exploit == p.standard_exploit and floor.seed == p.seeds[0]
    assert "noise_floor r0" in p.table() and "level_jitter(levels=1)" in p.table()


@pytest.mark.parametrize("name", ["jpeg-q75", "latent-diffpure", "gau-sr", "zero-sigma",
                                  "no-attack"])
def test_the_purified_control_is_the_clean_images_through_the_same_attack(name: str) -> None:
    """controls.purified: each attacked run gets a control whose chain is its attack without the
    protection (the same transforms, parameters and seeds) and whose exploit is its own; a
    scenario without an attack gets none, and the other runs keep their identities (their cache
    keys) unchanged."""
    base = plan(name, "pid", 3)
    p = plan(name, "pid", 3, 0, "smoke", "controls.purified=true")
    assert {r.identity for r in base.runs} <= {r.identity for r in p.runs}
    for v, variant in enumerate(p.variants):
        if not variant.attack and not variant.changes_exploit:
            continue
        for attacked, control in zip(p.runs_for("attacked", v), p.runs_for("control", v),
                                     strict=True):
            assert control.chain == attacked.chain[1:]  # the attack, minus the protection
            assert control.exploit == attacked.exploit and control.seed == attacked.seed
    controls = [r for r in p.runs if r.role == "control"]
    if not any(v.attack for v in p.variants):
        assert controls == [r for r in base.runs if r.role == "control"]
    else:
        assert len(controls) == 3 * len(p.variants)
        assert "matched control" in p.table()
    # the control does not depend on the protection: two protections share it (one fine-tune)
    other = plan_case(scenario(name), protection_info("random", get_tier("smoke")),
                      get_tier("smoke", parse_overrides(["controls.purified=true"])), 0)
    assert ([r.identity for r in other.runs if r.role == "control"]
            == [r.identity for r in controls])


@pytest.mark.parametrize("tier", sorted(TIERS))
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_plan_table_prints_with_the_tiers_settings(name: str, tier: str) -> None:
    t = get_tier(tier)
    p = plan_case(scenario(name), protection_info("pid", t), t, 0)
    text = p.table()
    pid_steps = t.resolve_part(PROTECTION_PARTS.get("pid")).params.steps
    exploit = p.standard_exploit.name  # DreamBooth, or an editing scenario's editing exploit
    db_steps = t.resolve_part(EXPLOITS.get(exploit)).params.steps
    assert (f"scenario {name} · protection pid(" in text
            and f"steps={pid_steps}," in text.splitlines()[0])
    assert f"standard exploit: {exploit}(" in text and f"steps={db_steps}," in text.splitlines()[1]
    assert f"{t.replicates} replicate(s), seeds 0, 1000003, 2000006" in text
    for run in p.runs:
        assert run.label() in text
    assert f"{len(p.runs)} runs, {len(p.unique_runs())} distinct exploits" in text
    if tier == "paper" and trains(exploit):
        assert "steps=1000" in text.splitlines()[0] and "steps=1000" in text.splitlines()[1]
        assert "num_class_images=200" in text
    if name == "no-attack":
        assert "(= protected r0)" in text


def test_plan_is_pure_and_deterministic() -> None:
    a, b = plan("prompt-mismatch", "random", 2, 3), plan("prompt-mismatch", "random", 2, 3)
    assert a == b and a.table() == b.table()
    assert plan("prompt-mismatch", "random", 2, 4).seeds != a.seeds


def test_python_m_audit_plan(capsys) -> None:
    assert main(["plan", "--tier", "paper"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert f"scenario {name} · protection pid(" in out
    assert "steps=1000" in out and f"{len(SCENARIOS)} scenario(s)" in out
    # where the recipe came from
    assert "steps, lr ← tier: PID Table 8a, SD 1.5, text encoder frozen" in out
    assert main(["plan", "--protection", "none", "--replicates", "1",
                 str(CATALOGUE_DIR / "no-attack.yaml")]) == 0
    out = capsys.readouterr().out
    assert ("1 replicate(s), seeds 0" in out and "note: one replicate" in out
            and "1 scenario(s)" in out)
    assert main(["plan", "--protection", "pdi"]) == 2
    assert "did you mean 'pid'" in capsys.readouterr().err
    assert main(["plan", "--audit-set", "dreambooth.steps=-5"]) == 2
    assert "steps" in capsys.readouterr().err


def test_audit_set_on_the_exploit_reaches_every_run() -> None:
    p = plan("prompt-mismatch", "pid", 2, 0, "smoke", "dreambooth.steps=5")
    assert all(r.exploit.params["steps"] == 5 for r in p.runs)
    assert all(v.origin["steps"] == "--audit-set" for v in p.variants)
    # scenario kept
    assert [v.exploit.params["instance_prompt"] for v in p.variants][1] == "a photo of sks face"


def test_audit_set_on_a_transform_reaches_the_attack_step() -> None:
    p = plan("jpeg-q75", "pid", 1, 0, "smoke", "jpeg.quality=50")
    assert p.variants[0].attack[0].params == {"quality": 50}
