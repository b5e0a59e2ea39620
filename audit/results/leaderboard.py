"""The leaderboard of an audit of several protections: protections × scenarios, RobustBench's
table (Croce et al., NeurIPS 2021 Datasets and Benchmarks, Table 1: one row per defence, its
accuracy under each attack and the worst case) for image protections.

Each cell is one case's retained protection on its verdict metric, (m_a − m_c) / (m_p − m_c),
with its 95% interval and outcome; each row ends with the protection's worst case: its weakest
outcome (the report's order, audit/judge/outcomes.py) and, among those, the lowest lower bound
of retained protection (the conservative reading of the intervals). Rows are ranked best worst
case first, as RobustBench ranks defences by robust accuracy.

``leaderboard`` is the one place that reads case records for it: the report and the terminal
summary only lay its rows out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from audit.judge.outcomes import BY_LABEL
from audit.results.schema import CaseRecord

# A cell without retained protection says why, in a word or two (the outcome's colour says the
# rest).
SHORT_OUTCOME = {"no effect at baseline": "no effect",
                 "no meaningful effect at baseline": "small effect",
                 "exploit did not learn the subject": "not learned"}


@dataclass(frozen=True)
class Cell:
    """One case in the leaderboard: its outcome and retained protection (None: not measured,
    e.g. no effect at baseline, or an error)."""

    case_id: str
    scenario: str
    outcome: str
    metric: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def measured(self) -> bool:
        return self.ci_low is not None and math.isfinite(self.ci_low)

    @property
    def short(self) -> str:
        """The outcome in a word or two, for a cell without retained protection."""
        return SHORT_OUTCOME.get(self.outcome, self.outcome)

    def weakness(self) -> tuple[int, float, float]:
        """Weakest first, as the report orders cases (audit/judge/outcomes.py): by outcome
        (errors, exploits that did not learn, fails, no effect, no meaningful effect, passes),
        then by the lower bound of retained protection, then by its estimate."""
        rank = BY_LABEL[self.outcome].rank if self.outcome in BY_LABEL else -1
        low = float(self.ci_low) if self.measured else math.inf  # type: ignore[arg-type]
        value = self.value if self.value is not None and math.isfinite(self.value) else math.inf
        return (rank, low, value)


@dataclass(frozen=True)
class Row:
    """One protection: its cells by column and its worst case."""

    protection: str  # the --protection item (its spec)
    name: str  # the protection's own name
    epsilon: float | None  # the judged budget in [0, 1]
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def worst(self) -> Cell | None:
        return min(self.cells.values(), key=Cell.weakness, default=None)

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cells.values() if c.outcome == "pass")


@dataclass(frozen=True)
class Leaderboard:
    columns: list[str]  # 'scenario' (or 'scenario · subject' with several subjects)
    rows: list[Row]  # best worst case first


def protection_of(case: CaseRecord) -> str:
    """The ``--protection`` item a case record belongs to (its spec; its name where no spec was
    written, e.g. an input-error case)."""
    return str(case.protection.spec or case.protection.name or "?")


def _cell(case: CaseRecord, column: str) -> Cell:
    retained = case.verdict_entry.retained

    def number(key: str) -> float | None:
        value = getattr(retained, key) if retained is not None else None
        return float(value) if value is not None else None

    return Cell(case.case_id, column, case.outcome, case.deciding_metric,
                number("value"), number("ci_low"), number("ci_high"))


def leaderboard(cases: list[CaseRecord]) -> Leaderboard:
    """Protections × scenarios from the case records (skipped cases are left out: they have no
    verdict to compare)."""
    cases = [c for c in cases if c.outcome != "skipped"]
    subjects = {str(c.subject.name) for c in cases}
    columns: list[str] = []
    rows: dict[str, Row] = {}
    for case in cases:
        scenario = case.scenario.id or case.case_id
        column = f"{scenario} · {case.subject.name}" if len(subjects) > 1 else scenario
        if column not in columns:
            columns.append(column)
        spec = protection_of(case)
        epsilon = case.protection.epsilon
        if spec not in rows or (rows[spec].epsilon is None and epsilon is not None):
            cells = rows[spec].cells if spec in rows else {}
            rows[spec] = Row(spec, case.protection.name or spec,
                             float(epsilon) if epsilon is not None else None, cells)
        rows[spec].cells[column] = _cell(case, column)
    columns.sort()

    def rank(row: Row) -> tuple[float, float, float, str]:
        """Best worst case first (the reverse of ``Cell.weakness``)."""
        worst = row.worst
        rank, low, value = worst.weakness() if worst is not None else (-2, math.inf, math.inf)
        return (-rank, -low if math.isfinite(low) else math.inf,
                -value if math.isfinite(value) else math.inf, row.protection)

    return Leaderboard(columns, sorted(rows.values(), key=rank))
