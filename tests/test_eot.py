"""The adaptive protector: EoT around a protection's objective, BPDA, the adaptive scenario's
plan, cache key, skip and judgement (audit/parts/protections/eot.py, audit/judge/adaptive.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_overrides
from audit.errors import ScenarioError
from audit.parts import TRANSFORMS
from audit.parts.protections.base import Protection, ProtectionContext, ProtectionOutput
from audit.parts.protections.build import build_protection
from audit.parts.protections.eot import (
    EoT,
    adapted,
    bpda,
    build_eot,
    eot_seed,
    objective_missing,
    transform_sample,
)
from audit.parts.protections.pid import PID
from audit.parts.registry import PartSpec
from audit.run.planner import ProtectionInfo, plan_case
from audit.run.progress import Progress


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these are small tensors, and on a shared machine more threads only
    wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec(name: str, **params: object) -> PartSpec:
    part = TRANSFORMS.get(name)
    return PartSpec("transform", name, part.validate(params).model_dump())


def objective(y: torch.Tensor) -> torch.Tensor:
    """A non-linear per-image objective: its gradient depends on where it is taken."""
    return (torch.sin(7 * y) * y).flatten(1).sum(1)


# -- EoT ---------------------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(samples=st.integers(2, 5), seed=st.integers(0, 10_000),
       name=st.sampled_from(["gaussian_noise", "random_gaussian_blur", "random_resized_crop"]))
def test_eot_gradient_is_the_mean_of_distinct_per_sample_gradients(samples: int, seed: int,
                                                                   name: str) -> None:
    params = {"gaussian_noise": {"std": 0.1}, "random_gaussian_blur": {},
              "random_resized_crop": {"scale": (0.3, 1.0)}}[name]
    step, how = transform_sample(spec(name, **params), "auto", None)
    assert how == "differentiable"
    x = 0.2 + 0.6 * torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(seed))
    eot = EoT([step], samples, torch.Generator().manual_seed(seed))
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(eot(objective)(xg).sum(), xg)
    # The same draws, one at a time: the generator's stream from the same seed.
    replay = torch.Generator().manual_seed(seed)
    grads, draws = [], []
    for _ in range(samples):
        xs = x.clone().requires_grad_(True)
        y = step(xs, replay)
        draws.append(y.detach())
        grads.append(torch.autograd.grad(objective(y).sum(), xs)[0])
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-5, rtol=1e-4)
    # Distinct draws, and distinct gradients: an average, not n copies of one term.
    for i in range(samples):
        for j in range(i):
            assert not torch.equal(draws[i], draws[j])
    assert not torch.allclose(grads[0], grads[1])
    # Every call draws anew.
    assert not torch.equal(eot.transform(x), eot.transform(x))


def test_eot_is_seeded() -> None:
    x = torch.full((1, 3, 8, 8), 0.5)
    a, _ = build_eot([spec("gaussian_noise", std=0.1)], 2, "auto", 3, None)
    b, _ = build_eot([spec("gaussian_noise", std=0.1)], 2, "auto", 3, None)
    c, _ = build_eot([spec("gaussian_noise", std=0.1)], 2, "auto", 4, None)
    assert torch.equal(a.transform(x), b.transform(x))
    assert not torch.equal(a.transform(x), c.transform(x))
    assert eot_seed(3) != 3  # a stream apart from the protection's own start


# -- BPDA --------------------------------------------------------------------------------------


def test_bpda_passes_the_gradient_through_rounding_as_identity() -> None:
    x = torch.rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = bpda(lambda v: torch.round(v * 255) / 255)(x)
    assert torch.allclose(y, torch.round(x.detach() * 255) / 255, atol=1e-6)
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    (grad,) = torch.autograd.grad((weights * y).sum(), x)
    assert torch.equal(grad, weights)
    # Without BPDA, rounding has a zero gradient almost everywhere.
    (plain,) = torch.autograd.grad((weights * torch.round(x * 255) / 255).sum(), x)
    assert float(plain.abs().sum()) == 0


def test_bpda_through_real_jpeg(images: torch.Tensor) -> None:
    """``bpda``: the forward pass is libjpeg's exactly, the backward pass the identity;
    ``bpda-surrogate``: the same forward, kornia's codec's gradient."""
    jpeg = spec("jpeg", quality=75)
    real = TRANSFORMS.get("jpeg").load()(images, TRANSFORMS.get("jpeg").validate({"quality": 75}),
                                         torch.Generator())
    weights = torch.linspace(-1, 1, images.numel()).view_as(images)
    step, how = transform_sample(jpeg, "bpda", None)
    assert how == "bpda-identity"
    x = images.clone().requires_grad_(True)
    y = step(x, torch.Generator())
    assert torch.allclose(y, real, atol=1e-6)
    assert torch.equal(torch.autograd.grad((weights * y).sum(), x)[0], weights)
    step, how = transform_sample(jpeg, "bpda-surrogate", None)
    assert how == "bpda-surrogate"
    x = images.clone().requires_grad_(True)
    y = step(x, torch.Generator())
    assert torch.allclose(y, real, atol=1e-6)
    (grad,) = torch.autograd.grad((weights * y).sum(), x)
    xk = images.clone().requires_grad_(True)
    kornia = TRANSFORMS.get("jpeg").load().differentiable(
        xk, TRANSFORMS.get("jpeg").validate({"quality": 75}))
    assert torch.allclose(grad, torch.autograd.grad((weights * kornia).sum(), xk)[0])
    assert not torch.allclose(grad, weights)


def test_a_step_without_a_differentiable_form_is_bpda_under_auto() -> None:
    step, how = transform_sample(spec("denoise_wavelet"), "auto", None)
    assert how == "bpda-identity"
    x = (0.3 + 0.4 * torch.rand((1, 3, 16, 16))).requires_grad_(True)
    (grad,) = torch.autograd.grad(step(x, torch.Generator()).sum(), x)
    assert torch.equal(grad, torch.ones_like(x))


# -- the differentiable forms' forward pass ----------------------------------------------------


def test_differentiable_jpeg_and_blur_forward_close_to_the_real_transform(
        images: torch.Tensor) -> None:
    from scipy.ndimage import gaussian_filter

    jpeg = TRANSFORMS.get("jpeg")
    params = jpeg.validate({"quality": 75})
    real = jpeg.load()(images, params, torch.Generator())
    surrogate, _ = transform_sample(spec("jpeg", quality=75), "auto", None)
    close = float((surrogate(images, torch.Generator()) - real).abs().mean())
    assert close < 0.35 * float((real - images).abs().mean()) and close < 0.02
    blur, _ = transform_sample(spec("gaussian_blur", sigma_px=1.5), "auto", None)
    ours = blur(images, torch.Generator()).numpy()
    scipy = gaussian_filter(images.numpy(), sigma=(0, 0, 1.5, 1.5), truncate=4.0)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # away from the border rules
    assert np.abs(ours[inner] - scipy[inner]).max() < 1e-4


def test_impress_surrogate_is_the_noised_reconstruction(tiny, images: torch.Tensor) -> None:
    from audit.parts.transforms.context import TransformContext
    from audit.parts.transforms.impress import vae_reconstruction

    context = TransformContext(tiny, torch.device("cpu"), torch.Generator())
    step, how = transform_sample(spec("impress", noise_std=0.05), "auto", context)
    assert how == "differentiable"
    x = images[:1].clone().requires_grad_(True)
    y = step(x, torch.Generator().manual_seed(5))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = vae_reconstruction(tiny.vae)(images[:1] + 0.05 * noise).clamp(0, 1)
    assert torch.allclose(y.detach(), expected, atol=1e-5)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


# -- PID through EoT ---------------------------------------------------------------------------


def test_pid_with_eot_raises_the_eot_objective(tiny, images: torch.Tensor) -> None:
    pid = PID(epsilon=0.05, steps=5)
    ctx = ProtectionContext(tiny, torch.device("cpu"), 0, get_tier("smoke"), Progress())
    eot, through = build_eot([spec("gaussian_noise", std=0.05)], 2, "auto", 0, None)
    with adapted(pid, eot) as crafting:
        out = crafting.protect(images[:1], ctx)
    assert pid.eot is None  # the shared protection is left as it is
    assert through == ["differentiable"] and eot.calls == 5
    assert out.info["objective_last_iterate"] > 1.5 * out.info["objective_first"]


class _NotPGD(Protection):
    name = "not-pgd"

    def protect(self, images: torch.Tensor, ctx: ProtectionContext) -> ProtectionOutput:
        return ProtectionOutput(images)


def test_protections_without_an_objective_say_why() -> None:
    for name, words in (("none", "clean images"), ("random", "uniform noise")):
        reason = objective_missing(build_protection(name)[0])
        assert reason is not None and words in reason
    reason = objective_missing(_NotPGD())
    assert reason is not None and "LinfPGD" in reason
    assert objective_missing(PID()) is None
    with pytest.raises(TypeError, match="cannot be adapted"):
        with adapted(_NotPGD(), EoT([], 1, torch.Generator())):
            pass


def test_an_adaptive_case_is_skipped_with_the_reason_for_random(tmp_path: Path) -> None:
    from audit.config.options import AuditOptions
    from audit.run.session import AuditSession

    session = AuditSession(AuditOptions(protection="random", results_dir=tmp_path / "res"))
    record = session.run_case(load_scenario(CATALOGUE_DIR / "adaptive-jpeg-q75.yaml"),
                              "astronaut", "random-adaptive-jpeg-q75-astronaut").dump()
    assert record["outcome"] == "skipped"
    assert "'random' draws uniform noise" in record["reason"]
    assert record["cache"]["misses"] == []


# -- scenario grammar and plan -----------------------------------------------------------------


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "adapt.yaml"
    path.write_text("id: adapt\nversion: 1\ntitle: t\nwhy: w\nsource: s\n" + body)
    return path


def test_adaptive_grammar(tmp_path: Path) -> None:
    s = load_scenario(_write(tmp_path, "attack: [jpeg: {quality: 50}]\nadaptive: {samples: 3}\n"))
    assert s.adaptive is not None and [t.part for t in s.adaptive.transform] == ["jpeg"]
    assert s.adaptive.transform[0].params == {"quality": 50} and s.requires == ["objective"]
    with pytest.raises(ScenarioError, match="unknown field 'sample'.*did you mean 'samples'"):
        load_scenario(_write(tmp_path, "attack: [jpeg: {}]\nadaptive: {sample: 3}\n"))
    with pytest.raises(ScenarioError, match="no transform to adapt to"):
        load_scenario(_write(tmp_path, "adaptive: {samples: 3}\n"))
    with pytest.raises(ScenarioError, match="adaptive.transform"):
        load_scenario(_write(tmp_path, "adaptive: {transform: [jpg: {}]}\n"))
    # The field left every earlier definition's hash as it was (jpeg-q75's before it existed).
    assert load_scenario(CATALOGUE_DIR / "jpeg-q75.yaml").definition_hash() == "d154420542e0c16a"


def _plan(name: str, protection: str = "pid"):
    tier = get_tier("smoke", parse_overrides(["replicates=2"]))
    prot, pspec = build_protection(protection, tier)
    info = ProtectionInfo(pspec, prot.random, prot.shared_across_replicates)
    return plan_case(load_scenario(CATALOGUE_DIR / f"{name}.yaml"), info, tier, 0)


def test_the_adaptive_plan_adds_its_own_protected_runs_and_shares_the_plain_ones() -> None:
    adaptive, plain = _plan("adaptive-jpeg-q75"), _plan("jpeg-q75")
    ids = {r.identity for r in plain.runs}
    for r in range(2):
        crafted = adaptive.runs_for("protected")[r]
        assert crafted.chain[0].adapt is not None and crafted.identity not in ids
        assert adaptive.runs_for("attacked", 0)[r].identity not in ids
        # The comparison's runs are jpeg-q75's own (computed once through the cache).
        assert adaptive.runs_for("non_adaptive_protected")[r].identity == \
            plain.runs_for("protected")[r].identity
        assert adaptive.runs_for("non_adaptive_attacked", 0)[r].identity == \
            plain.runs_for("attacked", 0)[r].identity
    assert len(adaptive.unique_runs()) == len(plain.unique_runs()) + 4
    assert adaptive.adaptation is not None and adaptive.adaptation.samples == 1  # deterministic
    blur = _plan("adaptive-blur-k7-sigma0.1-2")
    assert blur.adaptation is not None and blur.adaptation.samples == 4
    assert any("differentiable form" in n for n in blur.notes)


def test_the_adapted_protect_step_has_its_own_cache_key(tiny, tmp_path: Path) -> None:
    from dataclasses import replace

    from audit.data.subjects import load_subject
    from audit.run.cache import Cache
    from audit.run.stages import Stages

    full = load_subject("astronaut", None, 64)
    subject = replace(full, images=full.images[:1], content_hash="one view")
    stages = Stages(Cache(tmp_path / "cache"), lambda: tiny, lambda: torch.device("cpu"),
                    lambda: 64, Progress())
    tier = get_tier("smoke")
    pid = PID(steps=2)
    plan = _plan("adaptive-blur-k7-sigma0.1-2")
    plain_step = plan.runs_for("non_adaptive_protected")[0].chain[0]
    adapted_step = plan.runs_for("protected")[0].chain[0]
    a, a_info = stages.protect(pid, plain_step, subject, tier)
    b, b_info = stages.protect(pid, adapted_step, subject, tier)
    assert a_info["cache_key"] != b_info["cache_key"] and not torch.equal(a, b)
    assert "adaptation" not in a_info
    assert b_info["adaptation"]["crafted_through"] == ["differentiable"]
    assert b_info["adaptation"]["eot_calls"] == 2 and b_info["adaptation"]["samples"] == 4
    again, again_info = stages.protect(pid, adapted_step, subject, tier)  # from the cache
    assert torch.equal(again, b) and again_info["cache_key"] == b_info["cache_key"]
    assert pid.eot is None


# -- judgement ---------------------------------------------------------------------------------


def test_the_matched_comparison_says_whether_adapting_helps() -> None:
    from audit.judge.adaptive import adaptive_comparison
    from audit.judge.verdict import decide

    plan = _plan("adaptive-jpeg-q75")
    # A "down" metric: lower = better protection. Clean 0.6; both protections 0.3 at baseline;
    # after JPEG the plain one is back at 0.55, the adaptive one at 0.4.
    level = {"clean": 0.6, "protected": 0.3, "attacked": 0.4, "non_adaptive_protected": 0.3,
             "non_adaptive_attacked": 0.55}
    rng = np.random.default_rng(0)
    by_run = {r.identity: {"values": list(level[r.role] + 0.01 * rng.standard_normal(6)),
                           "direction": "down"} for r in plan.runs if r.role in level}
    per = {role: [by_run[r.identity]["values"] for r in plan.runs_for(role, v)]
           for role, v in (("clean", None), ("protected", None), ("attacked", 0))}
    verdict = decide("m", "down", per["clean"], per["protected"], per["attacked"], 0.5)
    entry = adaptive_comparison(plan, by_run, 0, verdict, alpha=0.05, resamples=200, seed=0,
                                limits={"min_learned": 0.0, "min_effect": 0.0})
    assert entry is not None
    gain = entry["gain_after_attack"]
    assert gain["value"] == pytest.approx(0.15, abs=0.02) and gain["ci_low"] > 0
    assert entry["answer"].startswith("adapting helps")
    assert entry["adaptive"]["retained"]["value"] == pytest.approx(2 / 3, abs=0.05)
    assert entry["non_adaptive"]["retained"]["value"] == pytest.approx(1 / 6, abs=0.05)
    # The summary's line and the report's row say the same.
    from audit.results.summary import adaptive_lines
    from reports.context import _adaptive_view
    from tests.records import case_record

    case = case_record("pid-adaptive-jpeg-q75-astronaut", "pass", adaptive=entry)
    (line,) = adaptive_lines([case])
    assert "retained 0.6" in line and "adapting helps" in line
    view = _adaptive_view(entry)
    assert view is not None and view["adaptation"].startswith("EoT over jpeg(quality=75), 1 sample")
    assert view["gain"].startswith("0.15") or view["gain"].startswith("0.14")
