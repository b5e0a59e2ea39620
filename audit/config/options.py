"""The options of one audit (from the command line), with validation and provenance."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.config.tiers import Tier, get_tier, parse_exploit

LIST_SEPARATOR = ","


def split_protections(spec: str) -> tuple[str, ...]:
    """The protections of ``--protection``: one name, or a comma-separated list
    (``pid,photoguard-encoder,random``) audited in one run. A ``dir:PATH`` whose folder exists is
    one protection even when its path holds a comma. Empty or repeated items are refused by
    name (``ValueError``), since either is a typo, not a second protection."""
    if LIST_SEPARATOR not in spec or (spec.startswith("dir:")
                                      and Path(spec[4:]).expanduser().is_dir()):
        return (spec,)
    items = [item.strip() for item in spec.split(LIST_SEPARATOR)]
    if any(not item for item in items):
        raise ValueError(f"--protection={spec}: an empty item in the list (a doubled or trailing "
                         "comma); give the names separated by single commas, e.g. "
                         "--protection=pid,photoguard-encoder,random.")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"--protection={spec}: {', '.join(repeated)} is listed more than once; "
                         "give each protection once.")
    return tuple(items)


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
    # --runs-per-gpu: exploit runs side by side on one GPU (audit/run/placement.py)
    runs_per_gpu: int = 1
    # --executor: where pending exploit runs are computed: 'local' (this machine's worker
    # pool) or 'ray' (a Ray cluster, audit/run/ray_executor.py)
    executor: str = "local"
    # --ray-address: the Ray cluster to join (default: a local Ray started for the run)
    ray_address: str | None = None
    # --subject-kind: person or style for every subject (default: each folder's subject.yaml)
    subject_kind: str | None = None

    @property
    def protections(self) -> tuple[str, ...]:
        """The protections audited (``--protection`` may list several, comma-separated)."""
        return split_protections(self.protection)

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
