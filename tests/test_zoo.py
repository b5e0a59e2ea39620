"""The protection zoo (Mist, FSMG, ASPL, PID's hybrids, PhotoGuard's diffusion attack): each
raises its own objective far above uniform noise of the same budget on the tiny model, never
exceeds its budget after 8-bit rounding, and the hybrids' objective is the base one plus
λ·PID's L_add-log. Short runs on 1-2 images, one thread."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config.tiers import get_tier, parse_overrides
from audit.data.images import from_uint8
from audit.parts import PROTECTIONS
from audit.parts.protections.antidreambooth import ADB_EPSILON
from audit.parts.protections.aspl import ASPL
from audit.parts.protections.base import ProtectionContext, check_budget
from audit.parts.protections.build import build_protection
from audit.parts.protections.fsmg import FSMG
from audit.parts.protections.mist import Mist, target_pattern
from audit.parts.protections.photoguard_diffusion import PhotoGuardDiffusion
from audit.parts.protections.pid import pid_objective, posterior
from audit.parts.protections.pid_hybrids import ASPLPID, FSMGPID
from audit.parts.protections.simple import RandomNoise
from audit.run.progress import Progress

# The surrogate's fine-tune as the smoke tier runs it (tiny model: lr 1e-3, batch 2, no prior).
TINY_SURROGATE = {"lr": 1e-3, "batch_size": 2, "prior_preservation": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quick(protection):
    """A protection whose run reports its objective over 2 draws (16 by default): tests measure
    the objective themselves."""
    protection.info_draws = 2
    return protection


def ctx(model, seed: int = 0) -> ProtectionContext:
    return ProtectionContext(model, torch.device("cpu"), seed, get_tier("smoke"), Progress())


def noise_of(eps: float, x: torch.Tensor, model) -> torch.Tensor:
    return from_uint8(RandomNoise(eps).protect(x, ctx(model)).images)


def test_mist_raises_its_objective_far_above_random_noise(tiny, images) -> None:
    """Measured: 10 iterations, 2 images: +296 / +232 (textural −160 / −175, semantic +0.014 /
    +0.006); uniform noise of 16/255: +15 / +18."""
    x = images[:2]
    mist = quick(Mist(steps=6))
    out = mist.protect(x, ctx(tiny))
    assert check_budget(x, out.images, 16 / 255, "mist") <= 16 / 255
    gain = mist.objective_value(tiny, x, from_uint8(out.images), draws=4)
    noise = mist.objective_value(tiny, x, noise_of(16 / 255, x, tiny), draws=4)
    assert float(gain["objective"].min()) > 4 * float(noise["objective"].abs().max())
    assert float(gain["textural"].max()) < 0 and float(gain["semantic"].min()) > 0


def test_fsmg_raises_the_fixed_surrogates_loss_far_above_random_noise(tiny, images) -> None:
    x = images[:2]
    fsmg = quick(FSMG(steps=6, surrogate_steps=10, **TINY_SURROGATE))
    surrogate = fsmg.surrogate(x, ctx(tiny))
    assert not torch.equal(next(surrogate.unet.parameters()), next(tiny.unet.parameters()))
    out = fsmg.craft(x, ctx(tiny), surrogate)
    assert check_budget(x, out.images, ADB_EPSILON, "fsmg") <= 6 / 255
    gain = fsmg.objective_value(surrogate, x, from_uint8(out.images), draws=6)
    noise = fsmg.objective_value(surrogate, x, noise_of(ADB_EPSILON, x, tiny), draws=6)
    assert float(gain.min()) > 0.002
    assert float(gain.min()) > 10 * float(noise.abs().max())


def test_aspl_raises_the_last_surrogates_loss_far_above_random_noise(tiny, images) -> None:
    x = images[:2]
    aspl = quick(ASPL(rounds=2, surrogate_steps=2, pgd_steps=4, **TINY_SURROGATE))
    out, surrogate = aspl.craft(x, ctx(tiny))
    assert check_budget(x, out.images, ADB_EPSILON, "aspl") <= 6 / 255
    assert len(out.info["objective_trace"]) == 8
    gain = aspl.objective_value(surrogate, x, from_uint8(out.images), draws=6)
    noise = aspl.objective_value(surrogate, x, noise_of(ADB_EPSILON, x, tiny), draws=6)
    assert float(gain.min()) > 0.002
    assert float(gain.min()) > 10 * float(noise.abs().max())


def test_aspl_without_surrogate_steps_is_one_pgd_continued_across_rounds(tiny, images) -> None:
    """With no fine-tuning, 2 rounds × 2 PGD steps are FSMG's 4 steps against the base model:
    δ carries over between rounds and the draws continue one seeded stream."""
    x = images[:1]
    aspl = quick(ASPL(rounds=2, surrogate_steps=0, pgd_steps=2, step_size=2 / 255,
                      **TINY_SURROGATE))
    fsmg = quick(FSMG(steps=4, surrogate_steps=0, step_size=2 / 255, **TINY_SURROGATE))
    assert torch.equal(aspl.protect(x, ctx(tiny)).images, fsmg.protect(x, ctx(tiny)).images)


def test_photoguard_diffusion_pulls_the_edit_to_gray_far_beyond_noise(tiny, images) -> None:
    x = images[:1]
    guard = quick(PhotoGuardDiffusion(steps=4, grad_reps=1))
    out = guard.protect(x, ctx(tiny))
    assert check_budget(x, out.images, 16 / 255, "photoguard-diffusion") <= 16 / 255
    closed = guard.objective_value(tiny, x, from_uint8(out.images), draws=2)
    by_noise = guard.objective_value(tiny, x, noise_of(16 / 255, x, tiny), draws=2)
    assert float(closed.min()) > 0.02
    assert float(closed.min()) > 4 * max(float(by_noise.abs().max()), 0.005)


def test_photoguard_diffusion_checkpointing_changes_memory_not_the_gradient(tiny, images) -> None:
    """Checkpointed steps recompute with the same pre-drawn noise: the same gradient."""
    x = images[:1]

    def gradient(checkpointing: bool) -> torch.Tensor:
        guard = PhotoGuardDiffusion(checkpointing=checkpointing, denoising_steps=2)
        xa = x.clone().requires_grad_(True)
        loss = guard.distance(tiny, xa, guard.embeddings(tiny, 1), torch.Generator().manual_seed(3))
        return torch.autograd.grad(loss.sum(), xa)[0]

    plain, checkpointed = gradient(False), gradient(True)
    assert torch.allclose(plain, checkpointed, rtol=1e-4, atol=1e-7)
    assert float(plain.abs().max()) > 0


def test_hybrid_objective_is_the_base_plus_lambda_times_pids_add_log(tiny, images) -> None:
    """PID eq. 12 on one draw: λ = 0 is FSMG's objective exactly, λ = 0.05 adds 0.05·L_add-log."""
    x, xp = images[:2], from_uint8(RandomNoise(0.05).protect(images[:2], ctx(tiny)).images)

    def value(protection) -> torch.Tensor:
        with torch.no_grad():
            return protection.bound_objective(tiny, x, torch.Generator().manual_seed(7))(xp)

    base, zero, hybrid = value(FSMG()), value(FSMGPID(pid_weight=0.0)), value(FSMGPID())
    with torch.no_grad():
        addlog = pid_objective(*posterior(tiny.vae, xp), *posterior(tiny.vae, x))
    assert torch.equal(base, zero)
    assert torch.allclose(hybrid, base + 0.05 * addlog, rtol=1e-5)
    assert float(addlog.min()) > 0 and not torch.allclose(hybrid, base)
    assert value(ASPLPID(pid_weight=0.0)).equal(value(ASPL()))


def test_a_hybrid_at_lambda_zero_crafts_the_base_protections_images(tiny, images) -> None:
    x = images[:1]
    settings = {"steps": 2, "surrogate_steps": 1, **TINY_SURROGATE}
    surrogate = FSMG(**settings).surrogate(x, ctx(tiny))
    base = quick(FSMG(**settings)).craft(x, ctx(tiny), surrogate).images
    zero = quick(FSMGPID(pid_weight=0.0, **settings)).craft(x, ctx(tiny), surrogate).images
    hybrid = quick(FSMGPID(**settings)).craft(x, ctx(tiny), surrogate)
    assert torch.equal(base, zero)
    assert hybrid.info["pid_weight"] == 0.05 and "0.05·L_add-log" in hybrid.info[
        "objective_meaning"]


def test_names_with_a_plus_work_in_every_place_a_name_goes() -> None:
    """--protection=aspl+pid, --audit-set aspl+pid.rounds=2 and the smoke tier's section."""
    protection, spec = build_protection("aspl+pid")
    assert isinstance(protection, ASPLPID) and spec.params["pid_weight"] == 0.05
    assert spec.params["rounds"] == 50 and spec.params["epsilon"] == ADB_EPSILON
    tier = get_tier("smoke", parse_overrides(["aspl+pid.rounds=2", "fsmg+pid.pid_weight=0.1"]))
    smoke, _ = build_protection("aspl+pid", tier)
    assert isinstance(smoke, ASPLPID) and smoke.aspl.rounds == 2
    assert build_protection("fsmg+pid", tier)[0].pid_weight == 0.1


def test_prior_preservation_without_class_images_is_refused_by_name() -> None:
    from audit.errors import ProtectionError

    with pytest.raises(ProtectionError, match="num_class_images"):
        build_protection("aspl", get_tier("smoke", parse_overrides(
            ["aspl.prior_preservation=true", "aspl.num_class_images=0"])))


@pytest.mark.parametrize("name", ["mist", "fsmg", "aspl", "fsmg+pid", "aspl+pid",
                                  "photoguard-diffusion"])
def test_registered_with_uses_model_and_capped_on_the_smoke_tier(name: str) -> None:
    part = PROTECTIONS.get(name)
    assert part.uses_model and part.random
    full, _ = build_protection(name)
    capped, _ = build_protection(name, get_tier("smoke"))
    assert capped.steps < full.steps


def test_mists_target_pattern_is_a_fixed_dense_binary_texture() -> None:
    a, b = target_pattern(64, 64), target_pattern(64, 64)
    assert a.shape == (3, 64, 64) and torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert 0.3 < float(a.mean()) < 0.7
    assert float((a[:, :, 1:] != a[:, :, :-1]).float().mean()) > 0.1  # many edges: a texture


def _tiny_settings(name: str):
    return {
        "mist": lambda eps, step: Mist(eps, step, steps=1),
        "fsmg": lambda eps, step: FSMG(epsilon=eps, step_size=step, steps=1, surrogate_steps=0,
                                       **TINY_SURROGATE),
        "aspl+pid": lambda eps, step: ASPLPID(epsilon=eps, step_size=step, rounds=1,
                                              surrogate_steps=0, pgd_steps=1, **TINY_SURROGATE),
        "photoguard-diffusion": lambda eps, step: PhotoGuardDiffusion(
            epsilon=eps, step_size=step, steps=1, grad_reps=1, denoising_steps=1),
    }[name]


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["mist", "fsmg", "aspl+pid", "photoguard-diffusion"]),
       eps=st.floats(0.0, 0.1), step=st.floats(0.001, 0.05), seed=st.integers(0, 100))
def test_output_within_budget_after_rounding(tiny, name: str, eps: float, step: float,
                                            seed: int) -> None:
    image = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    protection = quick(_tiny_settings(name)(eps, step))
    out = protection.protect(image, ctx(tiny, seed=seed)).images
    assert check_budget(image, out, eps, name) <= eps
