"""The embedded trained tiny pipeline: pinned weights, and the effects the smoke tier must see.

What is checked here holds on the shipped weights (model card, "What the smoke tier shows"):
PID distorts the trained VAE's posterior where random noise of the same budget does not, and on
a reduced smoke audit (one seed, three cases) DreamBooth on the clean subject comes far closer
to it than the untrained model, and PID's protected images pull the exploit's outcome away from
that while random noise does not. The 3-seed numbers are measured by
``benchmarks/bench_tiny_effects.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from audit.diffusion import load_model
from audit.diffusion.tiny import CHECKSUMS, WEIGHT_FILES, tiny_weights_path, verify_weights
from audit.errors import ModelError

# SHA-256 of audit/models/weights/tiny/SHA256SUMS (which lists every weight file's SHA-256).
PINNED_WEIGHTS_HASH = "58469fbb474166281dc8a31d0c3a079c4b426993a0e3f939319eae73407c1c90"


def test_shipped_weights_match_the_pinned_hash_and_the_model_card(tiny) -> None:
    folder = tiny_weights_path()
    assert verify_weights(folder) == PINNED_WEIGHTS_HASH
    listed = [line.split("  ")[1] for line in (folder / CHECKSUMS).read_text().splitlines()]
    assert listed == list(WEIGHT_FILES)
    assert PINNED_WEIGHTS_HASH in (folder / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert tiny.fingerprint == PINNED_WEIGHTS_HASH and tiny.revision == "trained-v1"
    size = sum((folder / name).stat().st_size for name in WEIGHT_FILES)
    assert size < 10_000_000
    assert all(p.dtype == torch.float32 for p in tiny.unet.parameters())


def test_modified_weights_are_refused_with_the_file_and_the_fix(
        tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_weights_path(), copy)
    target = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr("audit.diffusion.tiny.tiny_weights_path", lambda variant="tiny": copy)
    with pytest.raises(ModelError, match=r"unet/diffusion_pytorch_model.safetensors: SHA-256 "
                                         r"differs.*train_tiny.py"):
        load_model("tiny")


def test_trained_vae_reconstructs_the_unseen_subject(tiny, images: torch.Tensor) -> None:
    import piq

    with torch.no_grad():
        recon = (tiny.vae.decode(tiny.vae.encode(images * 2 - 1).latent_dist.mean).sample + 1) / 2
    psnr = float(piq.psnr(recon.clamp(0, 1), images, data_range=1.0))
    assert psnr > 22.0, f"VAE reconstruction of the (unseen) subject at {psnr:.1f} dB"


def test_pid_distorts_the_trained_posterior_and_random_noise_does_not(
        tiny, images: torch.Tensor) -> None:
    """PID's mechanism on a trained VAE (PID §4): μ moves far more than under random noise."""
    import piq

    from audit.config.tiers import get_tier
    from audit.parts.protections.base import ProtectionContext
    from audit.parts.protections.build import build_protection
    from audit.run.progress import Progress

    smoke = get_tier("smoke")
    ctx = ProtectionContext(tiny, torch.device("cpu"), 0, smoke, Progress(None))
    with torch.no_grad():
        clean = tiny.vae.encode(images * 2 - 1).latent_dist.mean
    shift, decoded = {}, {}
    for name in ("pid", "random"):
        protection = build_protection(name, smoke)[0]  # the smoke tier's settings (PID: PGD-100)
        assert name != "pid" or protection.steps == 100
        protected = protection.protect(images.clone(), ctx).images
        protected = protected.float() / 255 if protected.dtype == torch.uint8 else protected
        with torch.no_grad():
            mean = tiny.vae.encode(protected * 2 - 1).latent_dist.mean
            image = ((tiny.vae.decode(mean).sample + 1) / 2).clamp(0, 1)
        shift[name] = float((mean - clean).pow(2).mean().sqrt())
        decoded[name] = float(piq.ssim(image, images, data_range=1.0))
    assert shift["pid"] > 5 * shift["random"], shift
    assert decoded["random"] - decoded["pid"] > 0.04, decoded


def test_smoke_audit_separates_pid_from_random_noise(tmp_path: Path) -> None:
    """Issue 4's ordering on the real engine at the smoke tier, seed 0 (three 450-step fine-tunes:
    minutes on CPU).

    One replicate (``replicates=1``: the image-bootstrap verdict, flagged as such) keeps this
    at three fine-tunes; the tier's three replicates would triple it. This pins the engine's
    numbers on seed 0, a seed on which PID's effect shows (0.08); over seeds it does not reliably
    (+0.016 ± 0.040 over 6 seeds, so with K = 3 the smoke audit usually reads "no effect at
    baseline": model card, ``benchmarks/results/bench-verdicts.json``).

    DreamBooth on the clean subject comes far closer to it than the untrained model (the
    verdict's untrained reference: learned margin 0.41); PID at ε = 0.05 pulls the exploit's
    outcome below the clean outcome by a real effect (+0.046 [+0.018, +0.076]), but that is 11 %
    of what the exploit learned, [4.7 %, 17.3 %], below the 10 % effect-size minimum at its lower
    bound, so ``no-attack`` reads "no meaningful effect at baseline" (flagged inconclusive: its
    interval reaches the minimum); on Stable Diffusion PID removes ≥ 42 % (PID Table 3). Random
    noise of the same budget does not move it (share 0.6 %), so ``no-attack`` reads "no effect at
    baseline". (Scenario effects — JPEG, zero σ — vary in sign across seeds on this model, so
    they are measured by the benchmark, not asserted here; model card.)
    """
    from audit.config.options import AuditOptions
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.diffusion.sampling import generate
    from audit.parts.metrics.build import get_metric
    from audit.run.progress import Progress
    from audit.run.session import AuditSession
    from audit.run.stages import generation_config

    def session(protection: str) -> AuditSession:
        options = AuditOptions(
            protection=protection, model="tiny", tier="smoke", data=None, results_dir=tmp_path,
            device="cpu",
            seed=0, scenarios=None, allow_download=False, overrides={}, no_cache=False,
            replicates=1,
        )
        return AuditSession(options, Progress(None))

    records = {}
    for protection, scenario in (("pid", "no-attack"), ("random", "no-attack")):
        s = session(protection)
        records[protection, scenario] = s.run_case(
            load_scenario(CATALOGUE_DIR / f"{scenario}.yaml"), "astronaut",
            f"{protection}-{scenario}"
        ).dump()  # as written to the results file
    subject = s.subject("astronaut")
    base = generate(s.model, s.model.unet, s.model.text_encoder,
                    generation_config(s.tier.generation, 0), s.resolution,
                    s.progress)
    untrained = get_metric("subject_similarity").compute(base, subject.images).mean

    pid, rnd = (records[k]["metrics"]["subject_similarity"] for k in records)
    clean = pid["m_c"]["value"]
    assert rnd["m_c"]["value"] == clean  # one clean exploit, shared through the cache
    assert clean > untrained + 0.25, (untrained, clean)
    # The verdict's untrained reference is this generation (replicate 1's seed, base model), and it
    # learned.
    # (to 8-bit rounding: the engine measures the saved 8-bit generations, this check the float
    # ones)
    assert (pid["m_u"]["value"] == pytest.approx(untrained, abs=5e-3) and pid["learned"]["value"]
            > 0.25)
    pid_effect, random_effect = pid["effect"]["value"], rnd["effect"]["value"]
    assert pid_effect > 0.04 and pid_effect > random_effect + 0.04, (pid_effect, random_effect)
    assert (pid["effect"]["ci_low"] > 0 and pid["share"]["ci_low"] < 0.1
            <= pid["share"]["ci_high"]), pid["share"]
    assert pid["share"]["value"] > rnd["share"]["value"] + 0.05, (pid["share"], rnd["share"])
    assert records["pid", "no-attack"]["outcome"] == "no meaningful effect at baseline"
    assert any(f.startswith("inconclusive") and "effect share" in f
               for f in records["pid", "no-attack"]["flags"])
    assert records["random", "no-attack"]["outcome"] == "no effect at baseline"
    for record in records.values():
        assert record["plan"]["replicates"] == 1 and any("single replicate" in f
                                                         for f in record["flags"])
        # no-attack's attacked run is the protected run: one exploit, not two.
        exploits = record["exploits"]
        assert exploits["attacked[0] r0"]["cache_key"] == exploits["protected r0"]["cache_key"]
