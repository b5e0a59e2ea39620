"""The one test function every scenario case runs as (parametrized by the plugin).

Cases are ordinary ``pytest.Function`` items, so fixtures, markers, ``-k``, ``-x``, ``--lf``
and xdist behave as for any test (plain custom Items get no fixtures: pytest#3639, #5715).
"""

from __future__ import annotations

import pytest


def test_scenario(audit_case, audit_run) -> None:
    """Run one protection × scenario × subject case and fail unless the protection holds."""
    record = audit_run.run(audit_case)
    if record.outcome == "skipped":
        pytest.skip(record.reason)
    if record.outcome != "pass":
        pytest.fail(f"[{record.outcome}] {record.reason}", pytrace=False)
