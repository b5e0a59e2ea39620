"""The options of one audit (from the command line), with validation and provenance."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.config.tiers import Tier, get_tier, parse_exploit


@dataclass(frozen=True)
class AuditOptions:
    protection: str
    model: str = "tiny"  # the protector's model: the protection is crafted on it
    transfer_model: str | None = None  # --transfer-model: the exploiter's other model (PID §6.3)
    tier: str = "smoke"
    data: Path | None = None
    results_dir: Path = Path("audit-results")
    device: str = "auto"
    seed: int = 0
    scenarios: Path | None = None
    allow_download: bool = False
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # --audit-set, by section
    no_cache: bool = False
    replicates: int | None = None  # --replicates: the tier's K otherwise
    epsilon: float | None = None  # --epsilon: the budget a dir: protection is judged against
    # --full-catalogue: every scenario, not the tier's default selection
    full_catalogue: bool = False
    # --exploit-workers: processes for exploit runs (default: one per core on CPU)
    exploit_workers: int | None = None
    # --exploit: the standard exploit, 'NAME' or 'NAME: {params}' (default dreambooth)
    exploit: str | None = None
    # --subject-kind: person or style for every subject (default: each folder's subject.yaml)
    subject_kind: str | None = None

    @property
    def tier_settings(self) -> Tier:
        overrides = copy.deepcopy(self.overrides)
        if self.replicates is not None:
            overrides.setdefault("", {})["replicates"] = self.replicates
        return get_tier(self.tier, overrides, exploit=parse_exploit(self.exploit),
                        models={"protector": self.model, "transfer": self.transfer_model_spec})

    @property
    def non_standard(self) -> bool:
        """--audit-set changed the tier's settings (fewer replicates than the tier's count too)."""
        return self.tier_settings.non_standard

    @property
    def transfer_model_spec(self) -> str | None:
        """The transfer model: --transfer-model, or on an embedded model the other one (tiny ↔
        tiny-2)."""
        if self.transfer_model:
            return self.transfer_model
        return {"tiny": "tiny-2", "tiny-2": "tiny"}.get(self.model)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data", "results_dir", "scenarios"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data
