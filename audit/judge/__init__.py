"""Judging a case: replicate-level intervals, the verdict's three conditions, validity flags."""
