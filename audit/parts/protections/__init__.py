"""Protections under audit (``none``, ``random``, ``dir:PATH``, ``pid``, PhotoGuard, AdvDM, Mist,
Anti-DreamBooth and PID's hybrids), registered here beside their code. The interface and the
budget checks are in ``base.py``; ``build.py`` turns a ``--protection`` value into an object."""

from __future__ import annotations

from audit.parts.registry import Registry

PROTECTIONS = Registry("protection")

PROTECTIONS.register(
    "none", target="audit.parts.protections.simple:NoProtection",
    params="audit.parts.protections.simple:NoProtectionParams",
    description="the clean images as they are (pipeline check: every case reports no effect)",
    source="—",
)
PROTECTIONS.register(
    "random", target="audit.parts.protections.simple:RandomNoise",
    params="audit.parts.protections.simple:RandomNoiseParams",
    description="uniform noise in [−ε, ε] of the same budget: the null baseline",
    source="PID Table 1 'Random'; PhotoGuard §5", random=True,
)
PROTECTIONS.register(
    "dir", target="audit.parts.protections.folder:ProtectedFolder",
    params="audit.parts.protections.folder:ProtectedFolderParams",
    description="a folder of already-protected images (--protection=dir:PATH), paired by file name "
                "with the clean ones",
    source="DESIGN 'Protections' (apps and services without code: Glaze, Mist, ...)",
)
PROTECTIONS.register(
    "pid", target="audit.parts.protections.pid:PID", params="audit.parts.protections.pid:PIDParams",
    description="PID: ℓ∞ PGD on the VAE encoder's posterior (add-log objective), "
                "prompt-independent",
    source="Li et al., ICML 2024, §5.1 eq. 10", random=True, uses_model=True,
)
_PG = "audit.parts.protections.photoguard"
PROTECTIONS.register(
    "photoguard-encoder", target=f"{_PG}:PhotoGuardEncoder",
    params=f"{_PG}:PhotoGuardEncoderParams",
    description="PhotoGuard's encoder attack: ℓ∞ PGD pulling E(x+δ) to a gray image's latent "
                "(paper setting)",
    source="Salman et al., ICML 2023, §4 eq. 4, Alg. 1, Table 9 (ε 16/255, step 2/255, 200 it)",
    uses_model=True,
)
PROTECTIONS.register(
    "photoguard-encoder-code", target=f"{_PG}:PhotoGuardEncoderCode",
    params=f"{_PG}:PhotoGuardEncoderCodeParams",
    description="PhotoGuard's encoder attack as the authors' img2img notebook runs it (zero "
                "latent, 7.65/255, decaying step, 1000 it)",
    source="Salman et al., ICML 2023; public notebook demo_simple_attack_img2img", random=True,
    uses_model=True,
)
PROTECTIONS.register(
    "advdm", target="audit.parts.protections.advdm:AdvDM",
    params="audit.parts.protections.advdm:AdvDMParams",
    description="AdvDM: ℓ∞ PGD ascending the denoising loss through VAE and UNet (+ 0.05·latent-"
                "mean shift, as in PID's comparison)",
    source="Liang et al., ICML 2023; PID Tables 3-7 (ε 0.05, step ε/10, 100 it)", random=True,
    uses_model=True,
)
PROTECTIONS.register(
    "mist", target="audit.parts.protections.mist:Mist",
    params="audit.parts.protections.mist:MistParams",
    description="Mist v1 (fused): ℓ∞ PGD pulling the latent to a moiré pattern's (textural) while "
                "ascending 10⁴× the denoising loss (semantic)",
    source="Liang & Wu 2023 (Mist), public code v1.2: ε 16/255, step 1/255, 100 it, rate 1e4",
    random=True, uses_model=True,
)
_ADB = "Van Le et al., ICCV 2023 (Anti-DreamBooth)"
PROTECTIONS.register(
    "fsmg", target="audit.parts.protections.fsmg:FSMG",
    params="audit.parts.protections.fsmg:FSMGParams",
    description="Anti-DreamBooth FSMG: ℓ∞ PGD on the denoising loss of a fixed DreamBooth "
                "surrogate fine-tuned on the clean images",
    source=f"{_ADB} §4.2 eq. 4; scripts: ε 0.05 in [-1,1] (6.375/255), 100 steps, surrogate "
           "1000 steps", random=True, uses_model=True,
)
PROTECTIONS.register(
    "aspl", target="audit.parts.protections.aspl:ASPL",
    params="audit.parts.protections.aspl:ASPLParams",
    description="Anti-DreamBooth ASPL: rounds of surrogate steps on clean images, PGD against it, "
                "surrogate steps on the perturbed images",
    source=f"{_ADB} §4.3 Alg. 1; scripts: 50 rounds × (3 + 6 PGD + 3), ε 6.375/255",
    random=True, uses_model=True,
)
_HYB = "audit.parts.protections.pid_hybrids"
PROTECTIONS.register(
    "fsmg+pid", target=f"{_HYB}:FSMGPID", params=f"{_HYB}:FSMGPIDParams",
    description="FSMG whose objective adds λ·PID's L_add-log (λ 0.05)",
    source="Li et al., ICML 2024 (PID) §6.2 eq. 12, Table 4", random=True, uses_model=True,
)
PROTECTIONS.register(
    "aspl+pid", target=f"{_HYB}:ASPLPID", params=f"{_HYB}:ASPLPIDParams",
    description="ASPL whose objective adds λ·PID's L_add-log (λ 0.05)",
    source="Li et al., ICML 2024 (PID) §6.2 eq. 12, Table 4", random=True, uses_model=True,
)
_PGD = "audit.parts.protections.photoguard_diffusion"
PROTECTIONS.register(
    "photoguard-diffusion", target=f"{_PGD}:PhotoGuardDiffusion",
    params=f"{_PGD}:PhotoGuardDiffusionParams",
    description="PhotoGuard's diffusion attack: ℓ∞ PGD through a 4-step img2img edit (guidance "
                "7.5, empty prompt, EoT over 10 noise draws) towards a gray image",
    source="Salman et al., ICML 2023, §4 eq. 5, Alg. 2, Table 9 (ε 16/255, step 2/255, 200 it)",
    random=True, uses_model=True,
)
PROTECTIONS.register(
    "glaze-like", target="audit.parts.protections.glaze:GlazeLike",
    params="audit.parts.protections.glaze:GlazeLikeParams",
    description="Glaze as IMPRESS re-implemented it: Adam on δ pulling E(x+δ) to the latent of a "
                "style-transferred copy, LPIPS hinge (a style subject's protection)",
    source="Shan et al., USENIX Security 2023; IMPRESS (Cao et al., NeurIPS 2023) §3, App. B "
           "(p 0.05, α 30, lr 0.01, 500 steps)", random=True, uses_model=True,
)
