"""What a metric returns: per-image values with their direction and implementation named."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch

Direction = Literal["down", "up"]


@dataclass
class MetricResult:
    name: str
    direction: Direction  # the direction in which the value means BETTER protection
    # one per image slot (None: undefined there); [] when unavailable
    values: Sequence[float | None]
    implementation: str  # exactly what computed it, with versions
    unavailable: str | None = None  # why it could not be computed at all, and the fix
    missing: int = 0  # images computed by a documented fallback (e.g. no face found)
    notes: list[str] = field(default_factory=list)
    # "image": one value per generated image, slot-paired across exploits; "set": one value for
    # the whole set (FID, precision/recall), so one per replicate
    # (audit/parts/metrics/distribution.py).
    level: Literal["image", "set"] = "image"
    # why this value means less than it seems (flagged by audit/judge/checks.py)
    caution: str | None = None

    @property
    def mean(self) -> float | None:
        """Mean over the defined slots (None where the metric is undefined is left out)."""
        defined = [v for v in self.values if v is not None and math.isfinite(v)]
        return sum(defined) / len(defined) if defined else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = self.mean
        return data


def package_version(distribution: str) -> str:
    """Installed version of a distribution, or 'missing' (named in every metric result)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "missing"


class Metric(ABC):
    """A metric of an exploit's generations, relative to the clean subject images."""

    name: ClassVar[str]
    direction: ClassVar[Direction]
    description: ClassVar[str]

    @abstractmethod
    def compute(self, generated: torch.Tensor, reference: torch.Tensor) -> MetricResult:
        """Per-image values for ``generated`` (image batch); ``reference``: clean subject images."""

    def unavailable(self, why: str) -> MetricResult:
        return MetricResult(self.name, self.direction, [], self.implementation_name(),
                            unavailable=why)

    def implementation_name(self) -> str:
        return type(self).__name__
