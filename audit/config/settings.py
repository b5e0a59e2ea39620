"""The settings a tier gives that belong to no single part: generation, verdict, controls.

Each is a pydantic model with the papers' values as defaults and stated ranges, so a tier, a
scenario or ``--audit-set`` that sets a value out of range is refused before anything runs.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from audit.parts.registry import Params

# PID App. A.1: generation prompts, 50-step DDPM sampling and the negative prompt.
PID_EVAL_PROMPTS = ("a photo of sks person", "a selfie of sks person",
                    "a dslr portrait of sks person")
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
    style_metric_substitute: str | None = Field(
        None, description="decides instead of the style kind's metric (clip_style_similarity) on "
                          "a style subject, where the tier cannot use CLIP (smoke)")
    fallback_metric: str | None = Field(
        None, description="decides where the verdict metric is unavailable (its weights missing); "
                          "the record says so and the case is flagged. None: such a case is an "
                          "error")
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000, description="image bootstrap, shown "
            "for reference only")
    # The three conditions of a pass (audit/judge/verdict.py): the exploit learned, the protection
    # removed a meaningful share of what it learned, and the attack left enough of that.
    #
    # min_learned — in the metric's own units, on the margin d·(m_u − m_c) by which the clean
    # fine-tune beats the untouched base model (its lower 95 % bound must exceed it). 0.05 is
    # set for the similarities that decide in the catalogue (cosines and SSIM: fds,
    # subject_similarity, dlib_identity_similarity): the smoke exploit gains 0.37
    # subject_similarity over the untrained model (0.475 vs 0.103, README), the papers' clean
    # FDS is 0.48–0.57 (PID Table 3); 0.05 is about twice the between-replicate sd of m_c on the
    # smoke tier (0.025–0.032), so a "gain" within one fine-tune's noise of the base model is
    # not taken as learning, and it is far below any gain a working exploit shows.
    min_learned: float = Field(0.05, ge=0, allow_inf_nan=False,
                               description="minimum learned margin d·(m_u − m_c), metric units; "
                                           "its lower bound must exceed it")
    # min_effect — on the share (m_c − m_p)/(m_c − m_u) of what the exploit learned that the
    # protection removed (lower 95 % bound ≥ it). From PID Table 3 (FDS, CelebA-HQ): the
    # untrained model's FDS is not reported, and FDS ≥ 0 (a generation without a face counts
    # 0), so m_u = 0 gives the *smallest* share consistent with the table, (m_c − m_p)/m_c:
    # SD 1.5, frozen TE:   c_prot = c_explo (0.482 − 0.205)/0.482 = 0.57; ≠: (0.482 − 0.254)/0.482 =
    # 0.47
    # SD 1.5, unfrozen TE: (0.557 − 0.257)/0.557 = 0.54;                 ≠: (0.557 − 0.303)/0.557 =
    # 0.46
    # SD 2.1, frozen TE:   (0.494 − 0.255)/0.494 = 0.48;                 ≠: (0.494 − 0.285)/0.494 =
    # 0.42
    # SD 2.1, unfrozen TE: (0.565 − 0.288)/0.565 = 0.49;                 ≠: (0.565 − 0.288)/0.565 =
    # 0.49
    # so PID removes at least 42–57 % of the FDS the exploit gains (more if m_u > 0); the
    # weakest defence in the table (AdvDM, SD 1.5 frozen, c_prot ≠ c_explo: (0.482 − 0.378)/0.482)
    # at least 22 %, while uniform noise of the same budget removes 0.2 % (PID Table 1: 0.480 →
    # 0.479). 0.1 is a quarter of PID's smallest share and half the weakest defence's, so a
    # protection that works as the papers' do passes it with room for the interval's width,
    # and one that removes less than a tenth of what the exploit learned does not.
    min_effect: float = Field(0.1, ge=0, le=1, allow_inf_nan=False,
                              description="minimum share of what the exploit learned that the "
                                          "protection removes (lower 95% bound); a scenario may "
                                          "set its own")

    @field_validator("face_metric_substitute", "style_metric_substitute", "fallback_metric",
                     mode="before")
    @classmethod
    def _known_metric(cls, value: object) -> str | None:
        if value is None or (isinstance(value, str)
                             and value.strip().lower() in ("", "none", "null")):
            return None
        from audit.parts import METRICS, renamed_metric
        from audit.parts.registry import did_you_mean

        if renamed_metric(value):
            raise ValueError(f"{renamed_metric(value)}")
        if value not in METRICS:
            raise ValueError("unknown metric "
                             f"'{value}'{did_you_mean(str(value), METRICS.names())}; use none or "
                             f"one of: {', '.join(METRICS.names())}")
        return str(value)


class ControlSettings(Params):
    """Extra exploit runs that test the verdict itself."""

    matched: bool = Field(True, description="exploit the clean images under a scenario's changed "
                                            "exploit")
    purified: bool = Field(False, description="also exploit the clean images under a scenario's "
                                              "attack (its purifier or transform chain, the same "
                                              "seeds): what the attack alone does to the clean "
                                              "outcome, beside retained protection")
    noise_floor: bool = Field(False, description="also exploit the clean images ±1/255 (replicate "
                                                 "1 only)")
    null_baseline: bool = Field(False, description="also exploit the images under uniform noise of "
                                                   "the protection's budget (the 'random' "
                                                   "protection, K replicates) and show its effect "
                                                   "beside the protection's (PID Table 1, "
                                                   "PhotoGuard)")


class CoreSettings(Params):
    """Resolution and replicates: the settings every run shares."""

    resolution: int | None = Field(None, ge=32, le=2048, description="None: the model's native "
            "resolution")
    replicates: int = Field(3, ge=1, le=100, description="independent replicates of every random "
                                                         "stage")
