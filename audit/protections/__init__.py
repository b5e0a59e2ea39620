"""Protections under audit: ``none``, ``random`` and ``pid`` built in."""

from audit.protections.base import (
    Protection,
    ProtectionContext,
    ProtectionOutput,
    budget_levels,
    check_budget,
    quantize_within_budget,
)
from audit.protections.registry import PROTECTIONS, get_protection

__all__ = [
    "PROTECTIONS",
    "Protection",
    "ProtectionContext",
    "ProtectionOutput",
    "budget_levels",
    "check_budget",
    "get_protection",
    "quantize_within_budget",
]
