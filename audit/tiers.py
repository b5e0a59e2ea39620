"""Tiers: how much compute an audit spends, from the CI gate to the papers' own settings.

``paper`` is what the papers ran (PID §6.1 and App. A; REFERENCE.md "Exploits used to
evaluate"); ``standard`` keeps the papers' recipe with fewer steps; ``smoke`` is the CPU gate
on the built-in tiny model — its numbers are real effects on a small model, not a claim about
Stable Diffusion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

# PID App. A.1: generation prompts, 50-step DDPM sampling and the negative prompt.
PID_EVAL_PROMPTS = ("a photo of sks person", "a selfie of sks person", "a dslr portrait of sks person")
PID_NEGATIVE_PROMPT = "noisy, low quality, artifacts, poorly drawn face"
# PID §3 / App. A.5: the protector's prompt c_prot.
PROTECTOR_PROMPT = "a photo of sks person"
CLASS_PROMPT = "a photo of person"


@dataclass(frozen=True)
class TierSettings:
    name: str
    resolution: int | None  # None: the model's native resolution
    pgd_steps: int  # protection iterations (PID: PGD-1000)
    finetune_steps: int  # DreamBooth steps (PID Table 8: 1000, SD1.5, frozen TE)
    finetune_lr: float  # PID Table 8: 2e-6
    finetune_batch_size: int  # PID Table 8: 1
    train_text_encoder: bool  # PID Table 3 "frozen" column is the default
    prior_preservation: bool  # PID/Anti-DreamBooth: weight 1, 200 class images
    num_class_images: int
    prior_loss_weight: float
    images_per_prompt: int  # PID: 20 × 3 prompts
    inference_steps: int  # PID: 50 DDPM steps
    guidance_scale: float  # 7.5 (Anti-DreamBooth, PhotoGuard)
    bootstrap_resamples: int
    eval_prompts: tuple[str, ...] = PID_EVAL_PROMPTS
    negative_prompt: str = PID_NEGATIVE_PROMPT
    protector_prompt: str = PROTECTOR_PROMPT
    class_prompt: str = CLASS_PROMPT
    finetune_lr_schedule: str = "constant"  # diffusers' DreamBooth default (PID Table 8)
    # Where faces are below the face metrics' working size, a scenario verdict on a face metric
    # is decided on this metric instead (the face metric is still computed and reported).
    face_metric_substitute: str | None = None
    # Exploit noise floor: also fine-tune on the clean images with an imperceptible ±1/255 change
    # and flag a verdict whose protective effect is not well above the shift that causes.
    noise_floor_control: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TIERS: dict[str, TierSettings] = {
    "smoke": TierSettings(
        name="smoke",
        resolution=64,
        pgd_steps=100,
        # The trained tiny model learns the subject only when it nearly memorises the four
        # images: each step sees all four (batch 4, as one epoch of diffusers' shuffled loader),
        # at 3e-3 decayed to 0 by a cosine so that the outcome depends on the data rather than on
        # the last few noisy steps. Measured (model card, benchmarks/bench_tiny_effects.py):
        # subject similarity 0.10 untrained → ~0.5 after 450 steps; with batch 1 at a constant
        # 2e-3 for 1000 steps it reached 0.36 and the outcome moved by ±0.04 under any ±1/255
        # change of the data, drowning PID's effect. A property of a 3-M-parameter model, not
        # of the papers' recipe (SD: batch 1, 1000 steps at a constant 2e-6).
        finetune_steps=450,
        finetune_lr=3e-3,
        finetune_batch_size=4,
        finetune_lr_schedule="cosine",
        train_text_encoder=False,
        prior_preservation=False,
        num_class_images=0,
        prior_loss_weight=1.0,
        images_per_prompt=8,  # 24 paired generations: generation is cheap next to fine-tuning
        inference_steps=10,
        guidance_scale=7.5,
        bootstrap_resamples=1000,
        # 64-px faces: dlib/MTCNN detect nothing below ~80 px (see audit/metrics/subject.py).
        face_metric_substitute="subject_similarity",
        # The tiny model's DreamBooth outcome moves by 0.013 ± 0.012 subject_similarity for a
        # ±1/255 change of its training images (model card); PID's effect is 0.05.
        noise_floor_control=True,
    ),
    "standard": TierSettings(
        name="standard",
        resolution=None,
        pgd_steps=200,
        finetune_steps=400,
        finetune_lr=2e-6,
        finetune_batch_size=1,
        train_text_encoder=False,
        prior_preservation=True,
        num_class_images=50,
        prior_loss_weight=1.0,
        images_per_prompt=8,
        inference_steps=50,
        guidance_scale=7.5,
        bootstrap_resamples=2000,
    ),
    "paper": TierSettings(
        name="paper",
        resolution=None,
        pgd_steps=1000,
        finetune_steps=1000,
        finetune_lr=2e-6,
        finetune_batch_size=1,
        train_text_encoder=False,
        prior_preservation=True,
        num_class_images=200,
        prior_loss_weight=1.0,
        images_per_prompt=20,
        inference_steps=50,
        guidance_scale=7.5,
        bootstrap_resamples=2000,
    ),
}


def get_tier(name: str, **overrides: Any) -> TierSettings:
    """The named tier, with optional overrides (an overridden tier is flagged non-standard)."""
    if name not in TIERS:
        raise ValueError(f"unknown tier '{name}'; choose one of: {', '.join(TIERS)} (--tier)")
    return replace(TIERS[name], **overrides) if overrides else TIERS[name]
