"""The terminal summary of an audit (rich), and the worst case per subject.

Worst case (AutoAttack's cascade view): per subject, the scenario that left the least
retained protection, and one audit-level answer — the protection holds against every scenario
run, or breaks under which.
"""

from __future__ import annotations

import math
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from audit.judge.outcomes import OUTCOMES
from audit.results.leaderboard import leaderboard, protection_of
from audit.results.schema import CaseRecord, Estimate, MetricEntry, RunInfo

STYLE = {o.label: o.terminal for o in OUTCOMES}  # rich colour of each outcome


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def verdict_entry(case: CaseRecord) -> MetricEntry:
    """The deciding metric's entry of a case (empty where it was not measured)."""
    return case.verdict_entry


def _ci(estimate: Estimate | None, digits: int = 2) -> str:
    if estimate is None:
        return "—"
    return (f"{_fmt(estimate.value, digits)} [{_fmt(estimate.ci_low, digits)}, "
            f"{_fmt(estimate.ci_high, digits)}]")


def worst_cases(cases: list[CaseRecord]) -> list[dict[str, Any]]:
    """Per subject (and per protection, in an audit of several): the case with the lowest
    retained protection (point estimate) on its verdict metric, among cases that reached a
    verdict; subjects with none say why. ``retained`` is the estimate as a dict (the report
    shows it as written)."""
    several = len({protection_of(c) for c in cases}) > 1
    groups: dict[tuple[str, str], list[CaseRecord]] = {}
    for case in cases:
        key = (protection_of(case) if several else "", str(case.subject.name))
        groups.setdefault(key, []).append(case)
    rows: list[dict[str, Any]] = []
    for (protection, subject), group in sorted(groups.items()):
        judged = [(c, r) for c in group if (r := c.verdict_entry.retained) is not None
                  and math.isfinite(float(r.value))]
        if not judged:
            outcomes = sorted({c.outcome for c in group})
            rows.append({"protection": protection or None, "subject": subject, "scenario": None,
                         "retained": None, "outcome": ", ".join(outcomes), "cases": len(group)})
            continue
        case, retained = min(judged, key=lambda cr: float(cr[1].value))
        rows.append({"protection": protection or None, "subject": subject,
                     "scenario": case.scenario.id, "retained": retained.dump(),
                     "outcome": case.outcome, "case_id": case.case_id, "cases": len(group)})
    return rows


def exploiter_best_lines(cases: list[CaseRecord]) -> list[str]:
    """One line per case with several exploit variants: the one the verdict took, i.e. the
    exploiter's best (prompt mismatch: the winning prompt), and its retained protection."""
    lines = []
    for case in sorted(cases, key=lambda c: c.case_id):
        best = case.exploiter_best
        if best is None:
            continue
        retained = (f"retained {_fmt(best.retained, 2)}" if best.retained is not None
                    else best.basis)
        lines.append(f"exploiter's best variant in {case.case_id}: '{best.label}' "
                     f"({best.exploit}; {retained})")
    return lines


def adaptive_lines(cases: list[CaseRecord]) -> list[str]:
    """One line per adaptive case: the adaptive protection's retained protection beside the
    protection's as it is under the same attack, and the answer to "does adapting help?"."""
    lines = []
    for case in sorted(cases, key=lambda c: c.case_id):
        entry = case.adaptive
        if entry is None:
            continue
        lines.append(f"adaptive protector in {case.case_id}: retained "
                     f"{_ci(entry.adaptive.retained)} adapted vs "
                     f"{_ci(entry.non_adaptive.retained)} as it is — {entry.answer}")
    return lines


def null_baseline_line(cases: list[CaseRecord]) -> str | None:
    """The null baseline (``controls.null_baseline``) once per audit: it is the same runs for every
    case (the clean images under uniform noise of the protection's budget, standard exploit)."""
    for case in sorted(cases, key=lambda c: c.case_id):
        null = case.null_baseline
        if null is None:
            continue
        size = f", share {_ci(null.share, 2)}" if null.share is not None else ""
        return (f"noise baseline (uniform noise, ε {_fmt(null.epsilon, 4)}): {null.metric} "
                f"effect {_ci(null.effect, 4)}{size} — what any perturbation of the protection's "
                "budget does; compare each case's effect and share")
    return None


def over_budget(case: CaseRecord) -> bool:
    """Whether a case failed because the protection's output exceeds its ℓ∞ budget."""
    return case.over_budget


def audit_answer(cases: list[CaseRecord], interrupted: bool = False, not_run: int = 0) -> str:
    """One sentence: holds against every scenario run, or breaks under which."""
    if not cases:
        return "No case finished." + (" The audit was interrupted." if interrupted else "")
    specs = list(dict.fromkeys(protection_of(c) for c in cases))
    if len(specs) > 1:  # an audit of several protections: one answer each
        tail = f" Interrupted: {not_run} selected case(s) did not run." if interrupted else ""
        return " ".join(f"{spec}: {audit_answer([c for c in cases if protection_of(c) == spec])}"
                        for spec in specs) + tail
    over = sorted({c.scenario.id or c.case_id for c in cases if c.over_budget})
    broken = sorted({c.scenario.id or c.case_id for c in cases
                     if c.outcome == "fail" and not c.over_budget})
    no_effect = [c for c in cases if c.outcome == "no effect at baseline"]
    small = [c for c in cases if c.outcome == "no meaningful effect at baseline"]
    not_learned = [c for c in cases if c.outcome == "exploit did not learn the subject"]
    errors = [c for c in cases if c.outcome == "error"]
    tail = f" Interrupted: {not_run} selected case(s) did not run." if interrupted else ""
    if over:  # a budget violation is no robustness result: said first, and apart from any break
        also = f" It also breaks under {', '.join(broken)}." if broken else ""
        return ("Exceeds its budget: the protection's output is over the ℓ∞ budget (in "
                f"{', '.join(over)}), so it was not judged for robustness there; fix the "
                f"protection's projection or the budget.{also}{tail}")
    if broken:
        return f"Does not hold: breaks under {', '.join(broken)}.{tail}"
    if not_learned and len(not_learned) == len(cases):
        return ("No verdict: the exploit did not learn the subject (its clean fine-tune is no "
                "better than the untrained model), so no protection can be judged; fine-tune "
                f"longer or at another lr.{tail}")
    if no_effect and len(no_effect) == len(cases):
        return f"No protective effect at baseline: there was nothing to retain.{tail}"
    if (no_effect or small) and len(no_effect) + len(small) == len(cases):
        return ("No meaningful protective effect at baseline: the protection removed less of what "
                f"the exploit learned than the minimum (verdict.min_effect) in {len(small)} "
                f"case(s), nothing measurable in {len(no_effect)}.{tail}")
    if errors or no_effect or small or not_learned:
        return (f"No scenario broke it, but {len(errors)} case(s) errored, {len(not_learned)} had "
                f"an exploit that did not learn the subject, {len(no_effect)} showed no effect at "
                f"baseline and {len(small)} no meaningful effect: not a full answer.{tail}")
    return f"Holds against every scenario run ({len(cases)} case(s)).{tail}"


def cache_counts(cases: list[CaseRecord]) -> dict[str, int]:
    """Stages served from the cache, computed, and rebuilt from a corrupt entry, over the cases."""
    hits, misses, corrupt = (sum(len(getattr(c.cache, k)) for c in cases)
                             for k in ("hits", "misses", "corrupt"))
    return {"hits": hits, "misses": misses, "corrupt": corrupt, "stages": hits + misses}


def _value(estimate: Estimate | None) -> str:
    return _fmt(estimate.value if estimate is not None else None)


def _row(case: CaseRecord) -> tuple[str, ...]:
    """One case's cells: id, outcome (coloured, ⚑ when flagged), metric, K, the means, share and
    retained with their CIs, time."""
    entry = case.verdict_entry
    outcome = case.outcome
    flagged = " ⚑" if case.flags else ""
    return (
        escape(case.case_id),
        f"[{STYLE.get(outcome, 'white')}]{escape(outcome)}[/]{flagged}",
        escape(case.deciding_metric),
        str(case.plan.replicates) if case.plan is not None else "—",
        _value(entry.m_u), _value(entry.m_c), _value(entry.m_p), _value(entry.m_a),
        _ci(entry.share, 2) if entry.share is not None else "—",
        _ci(entry.retained, 2) if entry.retained is not None else "—",
        f"{case.seconds:.1f}s",
    )


def summary_table(cases: list[CaseRecord], options: Any, file: IO[str], color: bool = False,
                  run: RunInfo | None = None) -> None:
    """One row per case: outcome, verdict metric, m_c / m_p / m_a and retained with its CI."""
    exploit = f" · exploit {options.exploit}" if getattr(options, "exploit", None) else ""
    table = Table(title=escape(f"protection '{options.protection}' · model {options.model} · tier "
                               f"{options.tier} · seed {options.seed}{exploit}"))
    for column in ("case", "outcome", "metric", "K", "m_u", "m_c", "m_p", "m_a", "share [95% CI]",
                   "retained [95% CI]", "time"):
        table.add_column(column,
                         justify="left" if column in ("case", "outcome", "metric") else "right")
    for case in sorted(cases, key=lambda c: c.case_id):
        table.add_row(*_row(case))
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
    console = Console(file=file, force_terminal=color, no_color=not color, width=160)
    console.print(table)
    console.print(escape(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no cases"))
    for row in worst_cases(cases):
        r = row["retained"]
        of = f"{row['protection']} on " if row.get("protection") else ""
        if r is None:
            console.print(escape(f"worst case for {of}subject {row['subject']}: no verdict "
                                 f"({row['outcome']})"))
        else:
            console.print(escape(f"worst case for {of}subject {row['subject']}: {row['scenario']} "
                                 f"— retained {_fmt(r['value'], 2)} [{_fmt(r['ci_low'], 2)}, "
                                 f"{_fmt(r['ci_high'], 2)}] ({row['outcome']})"))
    leaderboard_table(cases, console)
    for line in exploiter_best_lines(cases) + adaptive_lines(cases):
        console.print(escape(line))
    noise = null_baseline_line(cases)
    if noise:
        console.print(escape(noise))
    cache = cache_counts(cases)
    console.print(escape(f"cache: {cache['hits']} of {cache['stages']} stages served from the cache"
                         + (" (--no-audit-cache recomputes every stage)" if cache["hits"] else "")))
    interrupted, not_run = (run.interrupted, run.not_run) if run is not None else (False, [])
    console.print(escape("answer: " + audit_answer(cases, interrupted, len(not_run))))
    if interrupted:
        console.print(escape(f"INTERRUPTED: {len(not_run)} selected case(s) did not run: "
                             + ", ".join(not_run)))
    flagged = [c for c in cases if c.flags]
    if flagged:
        console.print(f"⚑ {len(flagged)} case(s) flagged as less reliable (details in the results "
                      "JSON, 'flags'):")
        for case in flagged:
            for flag in case.flags:
                console.print(escape(f"  {case.case_id}: {flag}"))


def leaderboard_table(cases: list[CaseRecord], console: Console) -> None:
    """The leaderboard (``audit/results/leaderboard.py``) in an audit of several protections:
    retained protection [95% CI] per protection × scenario and each protection's worst case."""
    board = leaderboard(cases)
    if len(board.rows) < 2:
        return
    table = Table(title="leaderboard: retained protection [95% CI], best worst case first")
    for column in ("protection", *board.columns, "worst case"):
        table.add_column(escape(column), justify="left" if column == "protection" else "right")
    for row in board.rows:
        texts = []
        for cell in (*(row.cells.get(c) for c in board.columns), row.worst):
            if cell is None:
                texts.append("—")
                continue
            text = (f"{_fmt(cell.value, 2)} [{_fmt(cell.ci_low, 2)}, {_fmt(cell.ci_high, 2)}]"
                    if cell.measured else cell.short)
            texts.append(f"[{STYLE.get(cell.outcome, 'white')}]{escape(text)}[/]")
        if row.worst is not None:
            texts[-1] += escape(f" {row.worst.scenario}")
        table.add_row(escape(row.protection), *texts)
    console.print(table)
