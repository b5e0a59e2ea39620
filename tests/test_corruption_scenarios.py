"""The corruption scenarios (PID §6.5 Table 7; IMPRESS §5.1; DiffShortcut App. C.1; MetaCloak):
each file names its transform with the papers' parameters, plans on every tier with them, and
its attack chain runs on the bundled subject. None joins the default smoke selection.
"""

from __future__ import annotations

import math

import pytest
import torch

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier
from audit.parts import TRANSFORMS
from audit.parts.protections.build import build_protection
from audit.run.planner import ProtectionInfo, plan_case

# scenario id -> (transform, the parameters it resolves to, a paper its source cites)
CORRUPTIONS = {
    "jpeg-q75": ("jpeg", {"quality": 75}, "DiffShortcut"),
    "jpeg-q15": ("jpeg", {"quality": 15}, "IMPRESS"),
    "blur-sigma5": ("gaussian_blur", {"sigma_px": 5.0, "kernel_size": None}, "DiffShortcut"),
    "blur-k7-sigma0.1-2": ("random_gaussian_blur", {"kernel_size": 7, "sigma_px": [0.1, 2.0]},
                           "MetaCloak"),
    "gaussian-noise-var0.15": ("gaussian_noise", {"std": math.sqrt(0.15), "variance": 0.15},
                               "IMPRESS"),
    "uniform-noise-0.05": ("uniform_noise", {"amplitude": 0.05}, "PID §6.5"),
    "resize-half": ("resize", {"factor": 0.5}, "IMPRESS"),
    "crop-scale0.08-1": ("random_resized_crop", {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]},
                         "PID §6.5"),
    "crop-scale0.5-1": ("random_resized_crop", {"scale": [0.5, 1.0], "ratio": [0.75, 4 / 3]},
                        "PID §6.5"),
    "denoise-gaussian-jinv": ("denoise_gaussian", {"max_sigma_px": 2.0, "steps": 21}, "PID §6.5"),
    "denoise-wavelet": ("denoise_wavelet", {"wavelet": "db1", "levels": None}, "PID §6.5"),
    "denoise-nlmeans": ("denoise_nl_means", {"h_factor": 0.8, "patch_size": 5, "patch_distance": 6},
                        "PID §6.5"),
    "tvm": ("tvm", {"work_size": 64, "drop_rate": 0.02, "tv_weight": 0.01, "iterations": 1000},
            "DiffShortcut"),
}


def test_the_corruption_catalogue_is_complete() -> None:
    # the adaptive (EoT) and editing scenarios reuse a corruption; tests/test_eot.py and
    # tests/test_editing.py check those
    tagged = {p.stem for p in CATALOGUE_DIR.glob("*.yaml")
              if "corruption" in (tags := load_scenario(p).tags)
              and not {"adaptive", "editing"} & set(tags)}
    assert tagged == set(CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_scenario_names_its_transform_with_the_papers_parameters(name: str) -> None:
    transform, resolved, paper = CORRUPTIONS[name]
    s = load_scenario(CATALOGUE_DIR / f"{name}.yaml")
    assert s.id == name and s.version >= 1 and s.title and s.why.strip()
    assert paper in s.source
    assert "corruption" in s.tags
    # the default smoke selection stays as it was
    assert ("smoke" in s.tags) == (name == "jpeg-q75")
    assert s.exploit.part == "standard" and s.exploit.params == {}  # the exploit is the audit's own
    assert not s.variants
    (step,) = s.attack
    assert step.part == transform
    assert TRANSFORMS.get(transform).validate(step.params).model_dump(mode="json") == resolved
    reference = load_scenario(CATALOGUE_DIR / "jpeg-q75.yaml").verdict
    assert s.verdict == reference


@pytest.mark.parametrize("tier", ["smoke", "paper"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_scenario_plans_with_its_parameters_and_replicate_seeds(
        name: str, tier: str) -> None:
    transform, resolved, _ = CORRUPTIONS[name]
    t = get_tier(tier)
    protection, spec = build_protection("pid", t)
    p = plan_case(load_scenario(CATALOGUE_DIR / f"{name}.yaml"),
                  ProtectionInfo(spec, protection.random), t, 0)
    part = TRANSFORMS.get(transform)
    for r, run in enumerate(p.runs_for("attacked", 0)):
        step = run.chain[1]
        assert step.spec.name == transform and step.spec.params == resolved
        # A random corruption is re-drawn per replicate; a deterministic one carries no seed.
        assert step.seed == (p.seeds[r] if part.random else None)
        assert run.exploit == p.standard_exploit
    assert not p.runs_for("control", 0)  # the exploit is unchanged: no matched control needed
    assert f"{transform}(" in p.table()


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_scenario_attack_runs_on_the_subject(name: str, images: torch.Tensor) -> None:
    s = load_scenario(CATALOGUE_DIR / f"{name}.yaml")
    (step,) = s.attack
    part = TRANSFORMS.get(step.part)
    out = part.load()(images, part.validate(step.params), torch.Generator().manual_seed(0))
    assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # Every corruption changes the images (TVM at 64 px: the 2 % dropped values are refilled).
    assert float((out - images).abs().max()) > 1 / 255
