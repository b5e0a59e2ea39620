"""The options of one audit (from the command line), with validation and provenance."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from audit.tiers import TierSettings, get_tier


@dataclass(frozen=True)
class AuditOptions:
    protection: str
    model: str = "tiny"
    tier: str = "smoke"
    data: Path | None = None
    results_dir: Path = Path("audit-results")
    device: str = "auto"
    seed: int = 0
    scenarios: Path | None = None
    allow_download: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    no_cache: bool = False

    @property
    def tier_settings(self) -> TierSettings:
        return get_tier(self.tier, **self.overrides)

    @property
    def non_standard(self) -> bool:
        return bool(self.overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("data", "results_dir", "scenarios"):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


def _metric_or_none(item: str, raw: str) -> str | None:
    from audit.metrics.registry import METRICS

    if raw.lower() == "none":
        return None
    if raw not in METRICS:
        raise ValueError(f"--audit-set {item!r}: unknown metric '{raw}'; use 'none' or one of: {', '.join(sorted(METRICS))}")
    return raw


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs overriding tier settings (typed by the tier's own fields)."""
    from dataclasses import fields

    known = {f.name: f.type for f in fields(TierSettings)}
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in known or key == "name":
            choices = ", ".join(k for k in known if k != "name")
            raise ValueError(f"--audit-set {item!r}: expected KEY=VALUE with KEY one of: {choices}")
        current = getattr(get_tier("smoke"), key)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1")
            elif isinstance(current, int) or key == "resolution":
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            elif isinstance(current, tuple):
                value = tuple(s.strip() for s in raw.split("|"))
            elif key == "face_metric_substitute":
                value = _metric_or_none(item, raw)
            else:
                value = raw
        except ValueError as exc:
            if str(exc).startswith("--audit-set"):
                raise
            raise ValueError(f"--audit-set {item!r}: '{raw}' is not a valid {type(current).__name__}") from None
        result[key] = value
    return result
