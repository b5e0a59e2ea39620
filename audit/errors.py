"""Errors the toolkit raises for bad input; each names the culprit and the fix."""

from __future__ import annotations


class AuditError(Exception):
    """Base class: a one-paragraph, user-facing message naming the culprit and the fix."""


class DataError(AuditError):
    """A subject folder or image that cannot be used (empty folder, corrupt file, ...)."""


class ScenarioError(AuditError):
    """A scenario file that does not load or validate (names file and field)."""


class ModelError(AuditError):
    """A model that cannot be loaded or that produced invalid output (NaNs)."""


class ProtectionError(AuditError):
    """An unknown protection, or one that broke its own contract (budget, shape)."""


class BudgetExceeded(ProtectionError):
    """A protection whose 8-bit output lies outside its ℓ∞ budget."""


class MetricUnavailable(AuditError):
    """A metric whose weights or inputs are missing; reported as "unavailable: <why>"."""
