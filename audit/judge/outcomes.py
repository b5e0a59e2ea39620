"""The outcomes a case can end with, each once: its label (as the record writes it), its rank
(weakest first: the report lists cases in this order), where the report's counts show it, and
its colours in the terminal summary and in the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# The labels as types: a verdict's outcome, and a case record's (a case can also be skipped).
Label = Literal["error", "exploit did not learn the subject", "fail", "no effect at baseline",
                "no meaningful effect at baseline", "pass"]
RecordLabel = Literal[Label, "skipped"]


@dataclass(frozen=True)
class Outcome:
    label: str  # as written in the record's "outcome" and shown
    rank: int  # weakest first: errors, exploits that did not learn, fails, ..., passes
    shown: int  # the order of the report's counts (passes first)
    terminal: str  # rich colour of the summary table
    colour: str  # the report's plots
    css: str  # the report's class (its stylesheet holds the colour)


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("error", 0, 5, "magenta", "#6b21a8", "o-error"),
    Outcome("exploit did not learn the subject", 1, 4, "blue", "#475569", "o-notlearned"),
    Outcome("fail", 2, 1, "red", "#c62828", "o-fail"),
    Outcome("no effect at baseline", 3, 3, "yellow", "#b7791f", "o-noeffect"),
    Outcome("no meaningful effect at baseline", 4, 2, "dark_orange", "#a16207", "o-small"),
    Outcome("pass", 5, 0, "green", "#2e7d32", "o-pass"),
)
BY_LABEL = {o.label: o for o in OUTCOMES}
LABELS: tuple[str, ...] = tuple(o.label for o in OUTCOMES)  # weakest first
SHOWN: tuple[str, ...] = tuple(o.label for o in sorted(OUTCOMES, key=lambda o: o.shown))
if set(LABELS) != set(get_args(Label)):
    raise AssertionError("audit/judge/outcomes.py: OUTCOMES and Label name different outcomes")
