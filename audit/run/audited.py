"""One protection under audit: built once per audit (and subject kind), with its code fingerprint
and judged budget.

An audit may list several protections (``--protection=pid,photoguard-encoder,random``); the
session (``audit/run/session.py``) keeps one ``AuditedProtection`` per item and shares
everything else (model, cache, subjects, workers) between them, so the runs that do not involve
the protection — the clean fine-tunes, the untrained reference, the null baseline at an equal
budget — are computed once and served from the cache to every protection's cases.
"""

from __future__ import annotations

from typing import Any

from audit.config.tiers import Tier
from audit.data.kinds import PERSON, SubjectKind
from audit.parts.protections.base import Protection
from audit.parts.protections.build import budget as protection_budget
from audit.parts.protections.build import build_protection
from audit.parts.registry import PartSpec
from audit.run.fingerprint import CodeFingerprint, code_fingerprint
from audit.run.planner import ProtectionInfo


class AuditedProtection:
    """A ``--protection`` item: the protection object and its resolved spec, built on first use;
    its code fingerprint and ℓ∞ budget, each taken once."""

    def __init__(self, spec: str, tier: Tier, epsilon: float | None,
                 kind: SubjectKind = PERSON) -> None:
        self.spec = spec
        self.tier = tier
        self.epsilon = epsilon
        self.kind = kind  # the subjects' kind: it sets a prompt-dependent protection's prompts
        self._built: tuple[Protection, PartSpec] | None = None
        self._code: CodeFingerprint | None = None
        self._budget: dict[str, Any] | None = None

    @property
    def protection(self) -> Protection:
        if self._built is None:
            self._built = build_protection(self.spec, self.tier, self.epsilon, self.kind)
        return self._built[0]

    @property
    def part_spec(self) -> PartSpec:
        self.protection  # noqa: B018 -- builds it
        return self._built[1]  # type: ignore[index]

    @property
    def info(self) -> ProtectionInfo:
        """What the planner needs to know of it."""
        return ProtectionInfo.of(self.protection, self.part_spec)

    @property
    def code(self) -> CodeFingerprint:
        """The fingerprint of the protection's code (``audit/run/fingerprint.py``): its classes,
        its instance functions and, for ``module:factory``, the factory's module."""
        if self._code is None:
            spec = self.spec
            factory = spec if ":" in spec and not spec.startswith("dir:") else None
            self._code = code_fingerprint(self.protection, factory=factory)
        return self._code

    @property
    def budget(self) -> dict[str, Any]:
        """The ℓ∞ budget judged on every replicate's output and where it came from
        (``audit/parts/protections/build.py``: ``--epsilon`` for every kind of protection)."""
        if self._budget is None:
            self._budget = protection_budget(self.spec, self.protection, self.tier, self.epsilon)
        return self._budget

    def record(self) -> dict[str, Any]:
        """The case record's ``protection``: "epsilon" is the budget judged (--epsilon when
        given, for every kind of protection); "budget" says where it came from and what the
        protection itself declares."""
        p = self.protection
        budget = self.budget
        epsilon = budget["epsilon"] if budget["epsilon"] is not None else p.epsilon
        return {"name": p.name, "spec": self.spec, "epsilon": epsilon,
                "epsilon_255": round(epsilon * 255, 4), "budget": dict(budget),
                "params": p.params(self.tier),
                "random": p.random, "has_objective": p.has_objective,
                "code": self.code.to_dict()}
