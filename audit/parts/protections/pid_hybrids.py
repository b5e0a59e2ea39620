"""PID's hybrids (Li et al., ICML 2024, §6.2, eq. 12, Table 4): an Anti-DreamBooth protection
whose objective also pushes the VAE posterior away, as PID does:

    L_combo(θ, c, x + δ) = T(θ, c, x + δ) + λ · L_add-log(x + δ),   T ∈ {FSMG, ASPL},  λ* = 0.05

L_add-log is PID's objective as ``pid.py`` computes it (MSE of log σ² plus MSE of μ against
the clean image's posterior), evaluated on the posterior the denoising term samples from, so
the hybrid costs no extra encoder pass. Everything else — surrogate, schedule, budget (ε 0.05
in Anti-DreamBooth's [−1, 1] units, 6.375/255) — is the base protection's; λ = 0 is the base
protection exactly. The registry names are ``fsmg+pid`` and ``aspl+pid`` (a ``+`` is an
ordinary character of a name in ``--protection``, ``--audit-set aspl+pid.rounds=…`` and
scenario YAML).
"""

from __future__ import annotations

from audit.parts.protections.antidreambooth import HybridParams
from audit.parts.protections.aspl import ASPL, ASPLParams
from audit.parts.protections.fsmg import FSMG, FSMGParams


class FSMGPIDParams(FSMGParams, HybridParams):
    """FSMG's settings plus PID's λ (Table 4: 0.05)."""


class ASPLPIDParams(ASPLParams, HybridParams):
    """ASPL's settings plus PID's λ (Table 4: 0.05)."""


class FSMGPID(FSMG):
    """FSMG + λ·PID (PID Table 4, 'FSGM + λ*PID')."""

    name = "fsmg+pid"
    Settings = FSMGPIDParams


class ASPLPID(ASPL):
    """ASPL + λ·PID (PID Table 4, 'ASPL + λ*PID')."""

    name = "aspl+pid"
    Settings = ASPLPIDParams
