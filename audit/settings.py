"""The settings a tier gives that belong to no single part: generation, verdict, controls.

Each is a pydantic model with the papers' values as defaults and stated ranges, so a tier, a
scenario or ``--audit-set`` that sets a value out of range is refused before anything runs.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from audit.registry import Params

# PID App. A.1: generation prompts, 50-step DDPM sampling and the negative prompt.
PID_EVAL_PROMPTS = ("a photo of sks person", "a selfie of sks person", "a dslr portrait of sks person")
PID_NEGATIVE_PROMPT = "noisy, low quality, artifacts, poorly drawn face"
# PID §3 / App. A.5: the protector's prompt c_prot, and DreamBooth's class prompt.
PROTECTOR_PROMPT = "a photo of sks person"
CLASS_PROMPT = "a photo of person"


class GenerationSettings(Params):
    """Generation after fine-tuning (PID App. A.1: 20 images × 3 prompts, 50 DDPM steps,
    guidance 7.5, negative prompt). Image slot i of every exploit shares its prompt and
    initial noise, so clean, protected and attacked generations are compared slot by slot."""

    prompts: tuple[str, ...] = Field(PID_EVAL_PROMPTS, min_length=1)
    images_per_prompt: int = Field(20, ge=1, le=1000)
    steps: int = Field(50, ge=1, le=1000, description="DDPM sampling steps")
    guidance_scale: float = Field(7.5, ge=0, le=50)
    negative_prompt: str = PID_NEGATIVE_PROMPT
    sampler: str = Field("DDPM", pattern="^DDPM$")


class VerdictSettings(Params):
    """How a case is judged (DESIGN "Verdict"): confidence level, the verdict metric's
    substitute where faces are below the face metrics' working size (smoke tier), and the
    metric that decides where the verdict metric cannot be computed (its weights are missing)."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 − confidence of every interval")
    face_metric_substitute: str | None = None
    fallback_metric: str | None = Field(
        None, description="decides where the verdict metric is unavailable (its weights missing); the record says "
                          "so and the case is flagged. None: such a case is an error")
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000, description="image bootstrap, shown for reference only")

    @field_validator("face_metric_substitute", "fallback_metric", mode="before")
    @classmethod
    def _known_metric(cls, value: object) -> str | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        from audit.parts import METRICS, renamed_metric
        from audit.registry import did_you_mean

        if renamed_metric(value):
            raise ValueError(f"{renamed_metric(value)}")
        if value not in METRICS:
            raise ValueError(f"unknown metric '{value}'{did_you_mean(str(value), METRICS.names())}; "
                             f"use none or one of: {', '.join(METRICS.names())}")
        return str(value)


class ControlSettings(Params):
    """Extra exploit runs that test the verdict itself."""

    matched: bool = Field(True, description="exploit the clean images under a scenario's changed exploit")
    noise_floor: bool = Field(False, description="also exploit the clean images ±1/255 (replicate 1 only)")


class CoreSettings(Params):
    """Resolution and replicates: the settings every run shares."""

    resolution: int | None = Field(None, ge=32, le=2048, description="None: the model's native resolution")
    replicates: int = Field(3, ge=1, le=100, description="independent replicates of every random stage")
