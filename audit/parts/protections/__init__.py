"""Protections under audit (``none``, ``random``, ``dir:PATH``, ``pid``), registered here beside
their code. The interface and the budget checks are in ``base.py``; ``build.py`` turns a
``--protection`` value into an object."""

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
    "glaze-like", target="audit.parts.protections.glaze:GlazeLike",
    params="audit.parts.protections.glaze:GlazeLikeParams",
    description="Glaze as IMPRESS re-implemented it: Adam on δ pulling E(x+δ) to the latent of a "
                "style-transferred copy, LPIPS hinge (a style subject's protection)",
    source="Shan et al., USENIX Security 2023; IMPRESS (Cao et al., NeurIPS 2023) §3, App. B "
           "(p 0.05, α 30, lr 0.01, 500 steps)", random=True, uses_model=True,
)
