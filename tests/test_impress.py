"""IMPRESS (audit/parts/transforms/impress.py): the optimisation the authors' code runs, in
[0, 1] units, batched, rounded to the nearest 8-bit level, keyed by the purifier's model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audit.data.images import to_uint8
from audit.parts import TRANSFORMS
from audit.parts.registry import PartSpec
from audit.parts.transforms.context import TransformContext, TransformUnavailable, quantize
from audit.parts.transforms.impress import (
    ImpressParams,
    impress,
    impress_optimise,
    one_minus_ssim,
    vae_reconstruction,
)
from audit.run.cache import Cache
from audit.run.planner import ChainStep
from audit.run.progress import Progress
from audit.run.stages import Stages


def tiny_vae(seed: int = 0) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    from audit.diffusion.tiny import VAE_CONFIG

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG).eval()


def images(n: int = 2, side: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(n, 3, 4, 4, generator=g), size=side, mode="bilinear"
    )
    return quantize(smooth + 0.03 * torch.randn(n, 3, side, side, generator=g))


def test_the_loss_decreases_and_the_output_is_8_bit() -> None:
    x = images()
    params = ImpressParams(
        iterations=15, lr=0.01, alpha=0.1, delta=0.1, noise_std=0.05, perceptual="1-ssim"
    )
    history: list[dict[str, list[float]]] = []
    out = impress_optimise(
        x,
        vae_reconstruction(tiny_vae()),
        one_minus_ssim,
        params,
        torch.Generator().manual_seed(1),
        history,
    )
    first, last = history[0]["loss"][0], history[-1]["loss"][0]
    assert last < 0.8 * first, (first, last)
    assert out.min() >= 0 and out.max() <= 1
    ctx = TransformContext(
        SimpleNamespace(vae=tiny_vae()), torch.device("cpu"), torch.Generator().manual_seed(1)
    )
    final = impress(x, params, torch.Generator().manual_seed(1), context=ctx)
    assert torch.equal(final, torch.round(out * 255) / 255)  # nearest level, not truncation


def test_the_hinge_holds_within_delta_at_the_end() -> None:
    """A start far outside the budget (noise std 0.15 in [0,1]) is pulled back within Δ."""
    x = images(n=1, side=16)
    delta = 0.05
    params = ImpressParams(
        iterations=60, lr=0.02, alpha=10.0, delta=delta, noise_std=0.15, perceptual="1-ssim"
    )
    history: list[dict[str, list[float]]] = []
    impress_optimise(
        x,
        vae_reconstruction(tiny_vae()),
        one_minus_ssim,
        params,
        torch.Generator().manual_seed(2),
        history,
    )
    assert min(history[0]["distance"]) > 2 * delta  # the start is outside the budget
    assert max(history[-1]["distance"]) <= delta + 0.01, history[-1]["distance"]


def authors_loop(
    x_ptb: torch.Tensor,
    vae: torch.nn.Module,
    noise: torch.Tensor,
    *,
    lr: float,
    noise_std: float,
    alpha: float,
    delta: float,
    iterations: int,
) -> torch.Tensor:
    """The authors' impress.py written out in [−1, 1], one image at a time (batch 1): Adam eps
    1e-5, cosine to 1e-5, MSE(y, D(mean E(y))) + α·relu(d − Δ), clamp to [−1, 1]."""
    out = []
    for i in range(x_ptb.shape[0]):
        y_ptb = x_ptb[i : i + 1] * 2 - 1
        y = (y_ptb + noise_std * noise[i : i + 1]).requires_grad_(True)
        opt = torch.optim.Adam([y], lr=lr, eps=1e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=1e-5)
        for _ in range(iterations):
            recon = vae.decode(vae.encode(y).latent_dist.mean).sample
            dist = one_minus_ssim((y + 1) / 2, (y_ptb + 1) / 2)
            loss = torch.nn.functional.mse_loss(y, recon) + alpha * torch.relu(dist - delta).sum()
            (y.grad,) = torch.autograd.grad(loss, y)
            opt.step()
            sched.step()
            with torch.no_grad():
                y.clamp_(-1, 1)
        out.append((y.detach() + 1) / 2)
    return torch.cat(out)


def test_the_unit_range_form_is_the_authors_optimisation_in_their_range() -> None:
    """Their PhotoGuard setting (lr 0.005, noise 0.05 in [−1, 1]) equals ours with lr, noise and
    the floor halved and eps doubled, batched; so does the loss value."""
    x, vae = images(n=2, side=16), tiny_vae(3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    theirs = authors_loop(
        x, vae, noise, lr=0.005, noise_std=0.05, alpha=0.01, delta=0.1, iterations=12
    )
    params = ImpressParams(
        iterations=12,
        lr=0.0025,
        lr_floor=5e-6,
        adam_eps=2e-5,
        alpha=0.01,
        delta=0.1,
        noise_std=0.025,
        perceptual="1-ssim",
    )
    ours = impress_optimise(
        x, vae_reconstruction(vae), one_minus_ssim, params, torch.Generator().manual_seed(5)
    )
    assert (ours - x).abs().max() > 1e-3  # it moved
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_lpips_required_but_missing_is_unavailable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import audit.parts.metrics.imperceptibility as imp

    monkeypatch.setattr(
        imp, "lpips_missing", lambda: "LPIPS's VGG16 backbone (vgg16-397923af.pth) not found (...)"
    )
    ctx = TransformContext(SimpleNamespace(vae=tiny_vae()), torch.device("cpu"), torch.Generator())
    with pytest.raises(
        TransformUnavailable, match=r"^unavailable: LPIPS weights not found .*vgg16-397923af.pth"
    ):
        impress(
            images(),
            ImpressParams(iterations=1, perceptual="lpips"),
            torch.Generator(),
            context=ctx,
        )
    impress(
        images(), ImpressParams(iterations=1), torch.Generator(), context=ctx
    )  # auto: the substitute, noted
    assert ctx.notes and ctx.notes[0].startswith("IMPRESS with 1 − SSIM instead of LPIPS")


def stages(root: Path, fingerprint: str, vae: torch.nn.Module) -> Stages:
    model = SimpleNamespace(fingerprint=fingerprint, vae=vae)
    return Stages(
        Cache(root / "cache"),
        lambda: model,
        lambda: torch.device("cpu"),
        lambda: 16,
        Progress(None),
    )


def test_the_stage_is_keyed_by_the_model_and_its_note_survives_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import audit.parts.metrics.imperceptibility as imp

    monkeypatch.setattr(imp, "lpips_missing", lambda: "not here")
    params = TRANSFORMS.get("impress").validate({"iterations": 3}).model_dump()
    step = ChainStep("transform", PartSpec("transform", "impress", params), 7)
    x = to_uint8(images())
    notes_a: list[str] = []
    a = stages(tmp_path, "model-a", tiny_vae(0)).transform(step, x, notes_a)
    b = stages(tmp_path, "model-b", tiny_vae(1)).transform(step, x)
    assert not torch.equal(a, b)  # another VAE, another purification: not served model a's entry
    again = stages(tmp_path, "model-a", tiny_vae(0))
    notes_hit: list[str] = []
    assert torch.equal(again.transform(step, x, notes_hit), a)
    assert again.cache.take_events().hits == ["transform"]
    assert notes_hit == notes_a and "1 − SSIM instead of LPIPS" in notes_a[0]


def test_a_tiers_cap_limits_the_steps_and_the_schedule() -> None:
    x = images(n=1, side=8)
    history: list[dict[str, list[float]]] = []
    params = ImpressParams(iterations=3000, max_iterations=3, perceptual="1-ssim")
    impress_optimise(x, lambda v: v * 0.9, one_minus_ssim, params, torch.Generator(), history)
    assert len(history) == 3
