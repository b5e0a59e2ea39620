"""The purification scenarios (issue 21): each file names its purifier with the papers'
settings in [0, 1] units, plans on the smoke and paper tiers with a seed per replicate, and none
joins the default smoke selection."""

from __future__ import annotations

import pytest

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier
from audit.parts import TRANSFORMS
from audit.parts.protections.build import build_protection
from audit.run.planner import ProtectionInfo, plan_case

# scenario id -> (purifier, parameters it must set, a paper its source cites)
PURIFICATIONS = {
    # The authors' [−1, 1] settings: lr, noise and the floor halve, Adam's eps doubles.
    "impress-glaze": (
        "impress",
        {
            "iterations": 3000,
            "lr": 0.005,
            "lr_floor": 5e-6,
            "adam_eps": 2e-5,
            "alpha": 0.1,
            "delta": 0.1,
            "noise_std": 0.05,
        },
        "IMPRESS",
    ),
    "impress-photoguard": (
        "impress",
        {
            "iterations": 1000,
            "lr": 0.0025,
            "lr_floor": 5e-6,
            "adam_eps": 2e-5,
            "alpha": 0.01,
            "delta": 0.1,
            "noise_std": 0.025,
        },
        "IMPRESS",
    ),
    "noisy-upscale-0.05": (
        "noisy_upscale",
        {"std": 0.05, "upscaler": "realesrgan-x4plus"},
        "Hönig",
    ),
    "noisy-upscale-0.1": ("noisy_upscale", {"std": 0.1, "upscaler": "realesrgan-x4plus"}, "Hönig"),
    "restoration": (
        "restoration",
        {"face_restorer": "none", "upscaler": "realesrgan-x4plus", "noise_std": 0.0},
        "DiffShortcut",
    ),
    "gau-sr": ("restoration", {"noise_std": 0.05, "upscaler": "realesrgan-x4plus"}, "DiffShortcut"),
    "latent-diffpure": (
        "latent_diffpure",
        {"t": 300, "prompt": "quality", "guidance_scale": 7.5},
        "DiffShortcut",
    ),
    "latent-diffpure-empty": (
        "latent_diffpure",
        {"t": 300, "prompt": "empty", "guidance_scale": 1.0},
        "DiffShortcut",
    ),
    "ddspure": ("ddspure", {"sigma": 0.25}, "Carlini"),
    "gridpure": (
        "gridpure",
        {"t": 10, "iterations": 20, "gamma": 0.1, "window_fraction": 0.5},
        "GrIDPure",
    ),
}


def test_the_purification_catalogue_is_complete() -> None:
    # the adaptive (EoT) and editing scenarios reuse a purifier; tests/test_eot.py and
    # tests/test_editing.py check those
    tagged = {p.stem for p in CATALOGUE_DIR.glob("*.yaml")
              if "purification" in (tags := load_scenario(p).tags)
              and not {"adaptive", "editing"} & set(tags)}
    assert tagged == set(PURIFICATIONS)


@pytest.mark.parametrize("name", sorted(PURIFICATIONS))
def test_purification_scenario_names_its_purifier_with_the_papers_settings(name: str) -> None:
    purifier, wanted, paper = PURIFICATIONS[name]
    s = load_scenario(CATALOGUE_DIR / f"{name}.yaml")
    assert s.id == name and s.version >= 1 and s.title and s.why.strip() and paper in s.source
    assert "smoke" not in s.tags  # the default smoke selection stays as it was
    (step,) = s.attack
    assert step.part == purifier
    resolved = TRANSFORMS.get(purifier).validate(step.params).model_dump(mode="json")
    assert {k: resolved[k] for k in wanted} == wanted


@pytest.mark.parametrize("tier", ["smoke", "paper"])
@pytest.mark.parametrize("name", sorted(PURIFICATIONS))
def test_purification_scenario_plans_a_seed_per_replicate(name: str, tier: str) -> None:
    purifier, wanted, _ = PURIFICATIONS[name]
    t = get_tier(tier)
    protection, spec = build_protection("pid", t)
    p = plan_case(
        load_scenario(CATALOGUE_DIR / f"{name}.yaml"), ProtectionInfo(spec, protection.random), t, 0
    )
    for r, run in enumerate(p.runs_for("attacked", 0)):
        step = run.chain[1]
        assert step.spec.name == purifier and {k: step.spec.params[k] for k in wanted} == wanted
        assert step.seed == p.seeds[r]  # every purifier draws noise: re-drawn per replicate
    assert not p.runs_for("control", 0)


@pytest.mark.parametrize(("name", "cap"), [("impress-glaze", 50), ("impress-photoguard", 50),
                                           ("gridpure", 2)])
def test_the_smoke_tier_caps_the_purifiers_iterations_and_the_paper_tier_does_not(
        name: str, cap: int) -> None:
    for tier, wanted in (("smoke", cap), ("paper", None)):
        t = get_tier(tier)
        protection, spec = build_protection("pid", t)
        p = plan_case(load_scenario(CATALOGUE_DIR / f"{name}.yaml"),
                      ProtectionInfo(spec, protection.random), t, 0)
        step = p.runs_for("attacked", 0)[0].chain[1]
        assert step.spec.params["max_iterations"] == wanted, tier
