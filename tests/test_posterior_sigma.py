"""PID §6.4's adaptive exploiter edits the VAE posterior's σ: checked on the latents the
DreamBooth fine-tune actually trains on.

``finetune`` draws each step's latents in ``_training_batch`` (through ``draw_latents``,
z = μ + σ'·ε). These tests record what ``_training_batch`` hands to the loss during a real
fine-tune of the tiny model (stopped after its first batch), replay ε from the generator state it
was called with,
and check σ' = (z − μ)/ε against the mode: sample (σ' = σ), zero (z = μ exactly), fixed
(σ' = value), clip (σ' = min(σ, value)).

Float32 note: σ' = 1e-7 (PID Table 6) is below half an ulp of most latent means (|μ| ≳ 1 on
the tiny VAE, and SD's unscaled latents are larger), so z = μ + 1e-7·ε rounds to μ for much of
the latent: fixed or clipped σ at 1e-7 is numerically close to zero σ. The tests check z
against that rounding, and the model card should say so next to the Table 6 scenarios.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.diffusion import training
from audit.diffusion.training import FinetuneConfig, draw_latents
from audit.parts import EXPLOITS
from audit.parts.exploits.dreambooth import finetune
from audit.run.progress import Progress


def _config(**changes) -> FinetuneConfig:
    base = dict(instance_prompt="a photo of sks person", steps=2, lr=1e-4, batch_size=4,
                train_text_encoder=False)
    return FinetuneConfig(**{**base, **changes})


class _Recorded(Exception):
    """Raised by the spy once it has what it needs, so the fine-tune stops before the UNet step."""


def _seen_latents(tiny, images, monkeypatch, class_images=None, **changes) -> dict:
    """Start a real fine-tune and record the first batch ``_training_batch`` hands to the loss:
    μ, σ of its instance rows, the latents, and ε replayed from the generator state it was
    called with. The fine-tune is stopped right after (the UNet step adds nothing here)."""
    original = training.training_batch
    seen: dict = {}

    def spy(tuned, posteriors, fixed, config, idx, generator):
        state = generator.get_state()
        latents, _ = original(tuned, posteriors, fixed, config, idx, generator)
        mean, logvar = posteriors.inst_mean[idx], posteriors.inst_logvar[idx]
        eps = torch.randn(mean.shape, generator=torch.Generator().set_state(state))
        seen.update(z=latents.detach().clone(), mu=mean.clone(), std=torch.exp(0.5 * logvar),
                    eps=eps,
                    posteriors=posteriors, n=len(idx))
        raise _Recorded

    monkeypatch.setattr(training, "training_batch", spy)
    with pytest.raises(_Recorded):
        finetune(tiny, images, _config(**changes), Progress(None), class_images=class_images)
    assert seen["n"] == len(images)
    return seen


def _effective_sigma(step: dict) -> tuple[np.ndarray, np.ndarray]:
    """(σ' = (z − μ)/ε where |ε| > 0.1, the float32 rounding bound on it there).

    z = fl(μ + fl(σ'·ε)): the product is off by at most half an ulp of itself (≈ z − μ), the sum
    by half an ulp of z; both are divided by |ε| in σ'."""
    z, mu, eps = (step[k][: step["n"]].double().numpy() for k in ("z", "mu", "eps"))
    mask = np.abs(eps) > 0.1
    ulp = lambda a: np.spacing(np.abs(a).astype(np.float32)).astype(np.float64)  # noqa: E731
    bound = (ulp(z) + ulp(z - mu)) / 2 / np.abs(eps)
    return ((z - mu) / eps)[mask], bound[mask]


def test_sample_mode_trains_on_mu_plus_sigma_eps(tiny, images, monkeypatch) -> None:
    step = _seen_latents(tiny, images, monkeypatch)
    sigma_eff, bound = _effective_sigma(step)
    std = step["std"].double().numpy()[np.abs(step["eps"].numpy()) > 0.1]
    assert np.all(np.abs(sigma_eff - std) <= bound * 1.5 + 1e-15)


def test_zero_sigma_trains_on_the_mean_exactly(tiny, images, monkeypatch) -> None:
    step = _seen_latents(tiny, images, monkeypatch, posterior_sigma="zero")
    assert torch.equal(step["z"], step["mu"])


@pytest.mark.parametrize("value", [1e-2, 1e-6, 1e-7])
def test_fixed_sigma_draws_every_latent_with_that_sigma(
        tiny, images, monkeypatch, value: float) -> None:
    step = _seen_latents(tiny, images, monkeypatch, posterior_sigma="fixed", posterior_value=value)
    sigma_eff, bound = _effective_sigma(step)
    assert np.all(np.abs(sigma_eff - np.float32(value)) <= bound * 1.5 + 1e-15)
    if value >= 1e-2:  # representable: the stated σ to float32 precision
        assert np.allclose(sigma_eff, value, rtol=1e-3)
    if value == 1e-7:  # PID's value is below half an ulp of much of the latent: there z is μ
        assert 0.1 < float((step["z"] == step["mu"]).float().mean()) < 0.95


def test_clipped_sigma_keeps_small_sigmas_and_caps_large_ones(tiny, images, monkeypatch) -> None:
    """With the cap at the median σ of the tiny VAE's posterior, both branches are exercised."""
    from audit.diffusion.training import encode_posteriors

    with torch.no_grad():
        post = encode_posteriors(tiny.vae, images, None, _config(), torch.device("cpu"))
    cap = float(torch.exp(0.5 * post.inst_logvar).median())
    step = _seen_latents(tiny, images, monkeypatch, posterior_sigma="clip", posterior_value=cap)
    sigma_eff, bound = _effective_sigma(step)
    std = step["std"].double().numpy()[np.abs(step["eps"].numpy()) > 0.1]
    assert np.all(sigma_eff <= np.float32(cap) + bound * 1.5)
    assert np.all(np.abs(sigma_eff - np.minimum(std, np.float32(cap))) <= bound * 1.5 + 1e-15)
    assert (std < cap).any() and (std > cap).any()


def test_sigma_mode_applies_to_instance_latents_only(tiny, images, monkeypatch) -> None:
    """With prior preservation, the class half of each batch is still sampled (z ≠ μ)."""
    step = _seen_latents(tiny, images, monkeypatch, class_images=images.flip(-1),
                         posterior_sigma="zero",
                         prior_preservation=True)
    n = step["n"]
    assert torch.equal(step["z"][:n], step["mu"])
    class_mu = step["posteriors"].class_mean
    # each class latent differs from every class mean: it was sampled with the class σ
    diffs = (step["z"][n:, None] - class_mu[None]).flatten(2).abs().amax(-1)
    assert float(diffs.min()) > 0


@settings(max_examples=50, deadline=None)
@given(value=st.floats(1e-3, 2.0), logstd=st.floats(-6.0, 1.0), seed=st.integers(0, 2**16))
def test_draw_latents_sigma_semantics(value: float, logstd: float, seed: int) -> None:
    """draw_latents alone, in float64 so that σ' is exact: fixed → value, clip → min(σ, value)."""
    mean = torch.randn((2, 4, 5, 5), generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)
    logvar = torch.full_like(mean, 2 * logstd)
    std = math.exp(logstd)
    for mode, expected in (("fixed", value), ("clip", min(std, value)), ("sample", std)):
        g = torch.Generator().manual_seed(seed + 1)
        z = draw_latents(mean, logvar, mode, value, g)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed + 1)).double()
        assert torch.allclose(z - mean, expected * eps, rtol=1e-6, atol=1e-12), mode
    assert torch.equal(draw_latents(mean, logvar, "zero", None, torch.Generator()), mean)


@settings(max_examples=50, deadline=None)
@given(logvar=st.floats(-30.0, 20.0), seed=st.integers(0, 2**16))
def test_clipping_at_1e_7_is_fixing_at_1e_7_for_any_diffusers_posterior(
        logvar: float, seed: int) -> None:
    """diffusers clamps log σ² to [−30, 20], so σ ≥ e^−15 ≈ 3.06e-7 > 1e-7: PID Table 6's clipped σ
    at 1e-7 draws the very latents fixed σ at 1e-7 draws (the audit's two runs agree bitwise)."""
    mean = torch.randn((2, 4, 5, 5), generator=torch.Generator().manual_seed(seed))
    logvar_t = torch.full_like(mean, logvar)
    clipped = draw_latents(mean, logvar_t, "clip", 1e-7, torch.Generator().manual_seed(seed + 1))
    fixed = draw_latents(mean, logvar_t, "fixed", 1e-7, torch.Generator().manual_seed(seed + 1))
    assert torch.equal(clipped, fixed)
    assert float(torch.exp(0.5 * torch.tensor(-30.0))) > 1e-7


@pytest.mark.parametrize(
    ("name", "mode", "value"),
    [("zero-sigma", "zero", None), ("clipped-sigma-1e-7", "clip", 1e-7),
     ("clipped-sigma-1e-6", "clip", 1e-6),
     ("fixed-sigma-1e-7", "fixed", 1e-7), ("fixed-sigma-1e-6", "fixed", 1e-6)],
)
def test_sigma_family_scenarios_reach_the_fine_tune_config(name: str, mode: str, value: float
                                                           | None) -> None:
    """Each σ scenario edits the standard exploit (whichever --exploit names) and nothing else."""
    scenario = load_scenario(CATALOGUE_DIR / f"{name}.yaml")
    assert scenario.attack == [] and scenario.exploit.part == "standard"
    assert "adaptive" in scenario.tags
    # the default smoke selection is unchanged
    assert ("smoke" in scenario.tags) == (name == "zero-sigma")
    assert "PID §6.4" in scenario.source
    assert scenario.exploit.params == {"posterior": {"sigma": mode,
                                                     **({} if value is None else {"value": value})}}
    config = EXPLOITS.get("dreambooth").validate(scenario.exploit.params).config(seed=0)
    assert (config.posterior_sigma, config.posterior_value) == (mode, value)
