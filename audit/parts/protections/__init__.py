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
