"""The report's view model: what each section shows, computed from merged results records.

The template only lays this out; every number shown here comes from the results records
unchanged (rounded for display, with full values in tooltips and the provenance section).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from jinja2 import Undefined

from audit.judge.outcomes import BY_LABEL, SHOWN
from audit.results.leaderboard import Cell, leaderboard, protection_of
from audit.results.schema import CaseRecord, Estimate, NullBaseline
from audit.results.summary import (
    audit_answer,
    cache_counts,
    null_baseline_line,
    worst_cases,
)
from reports.images import ImageStore
from reports.load import Merged, SourcedCase, SourcedRun
from reports.plots import OUTCOME_COLOURS, RetainedRow, distribution_plot, retained_plot

# The counts show the outcomes in this order; cases are ranked weakest first
# (audit/judge/outcomes.py holds both orders).
OUTCOMES = SHOWN
OUTCOME_RANK = {label: outcome.rank for label, outcome in BY_LABEL.items()}
STRIPS = (
    ("clean", "clean subject images"),
    ("protected", "protected images (what the protector publishes)"),
    ("attacked_input", "attacked input (after the scenario's image-space steps; the exploiter "
                       "trains on these)"),
    ("generated_clean", "generations after DreamBooth on the clean images"),
    ("generated_protected", "generations after DreamBooth on the protected images"),
    ("generated_attacked", "generations after the scenario's exploit on the attacked images"),
    ("generated_control", "matched control: the scenario's exploit on the clean images"),
    ("generated_untrained", "untrained reference: the base model's generations, same prompts and "
                            "seeds, no fine-tune (m_u)"),
    ("generated_null_baseline", "null baseline: DreamBooth on the images under uniform noise of "
                                "the same budget"),
)
SMOKE_CAVEAT = (
    "This is a smoke-tier audit on the embedded tiny model (64 px, a few million parameters, "
    "trained on a dozen bundled photographs; see its model card). Its numbers show whether the "
    "protection's mechanism changes what this small latent-diffusion pipeline learns from the "
    "subject, and whether each scenario weakens that change, relative to the same model's clean "
    "outcome. They do not estimate the protection's strength on Stable Diffusion at 512 px: "
    "absolute metric values are not comparable with the papers' tables, face metrics work only "
    "through their documented fallbacks at this resolution, and a pass here is a regression gate "
    "for protection code, not a robustness claim. Run --tier standard or --tier paper on a real "
    "model for that."
)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or isinstance(value, Undefined):
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(number)
    return f"{number:.{digits}f}"


def fmt_ci(estimate: Estimate | dict[str, Any] | None, digits: int = 3) -> str:
    if not estimate or isinstance(estimate, Undefined):
        return "—"
    if isinstance(estimate, Estimate):
        estimate = estimate.dump()
    return (f"{fmt(estimate.get('value'), digits)} [{fmt(estimate.get('ci_low'), digits)}, "
            f"{fmt(estimate.get('ci_high'), digits)}]")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def stamp(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(epoch)))


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _dump(record: Any) -> Any:
    """A typed record as the dict the template reads (None stays None)."""
    return record.dump() if record is not None else None


def weakness_key(case: SourcedCase) -> tuple[int, float, str]:
    """Weakest first (audit/judge/outcomes.py: errors, exploits that did not learn, fails, no
    effect, no meaningful effect, passes); within each, lowest retained lower bound."""
    record = case.record
    retained = record.verdict_entry.retained
    low = float(retained.ci_low) if retained is not None else math.inf
    low = low if math.isfinite(low) else math.inf
    return (OUTCOME_RANK.get(record.outcome, 0), low, record.case_id)


def _scenario_label(case: CaseRecord, several: bool = False) -> str:
    """'scenario · subject', led by the protection in an audit of several."""
    label = case.scenario.id or case.case_id
    label = f"{protection_of(case)} · {label}" if several else label
    return f"{label} · {case.subject.name}" if case.subject.name else label


def _board_cell(cell: Cell | None, anchors: dict[str, str]) -> dict[str, Any] | None:
    if cell is None:
        return None
    return {
        "outcome": cell.outcome, "anchor": anchors.get(cell.case_id), "scenario": cell.scenario,
        "value": fmt(cell.value, 2) if cell.measured else cell.short,
        "ci": f"[{fmt(cell.ci_low, 2)}, {fmt(cell.ci_high, 2)}]" if cell.measured else "",
        "sort": cell.value if cell.measured else "",
        "title": (f"{cell.case_id}: {cell.outcome}; retained protection on {cell.metric}"
                  + (f" {fmt(cell.value, 3)} [{fmt(cell.ci_low, 3)}, {fmt(cell.ci_high, 3)}]"
                     if cell.measured else " not measured")),
    }


def _protection_record(cases: list[CaseRecord], spec: str) -> dict[str, Any]:
    """The protection record of a ``--protection`` item (from a case that ran it, if any)."""
    mine = [c.protection for c in cases if protection_of(c) == spec]
    return next((p.dump() for p in mine if p.epsilon is not None), None) or {"name": spec}


def leaderboard_view(cases: list[CaseRecord],
                     views: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The leaderboard section (``audit/results/leaderboard.py``), shown for two protections or
    more (with one it would repeat the matrix's verdict column)."""
    board = leaderboard(cases)
    if len(board.rows) < 2:
        return None
    anchors = {str(v["case_id"]): str(v["anchor"]) for v in views}
    rows = []
    for position, row in enumerate(board.rows):
        rows.append({
            "position": position + 1, "protection": row.protection, "name": row.name,
            "epsilon_255": round(row.epsilon * 255, 2) if row.epsilon is not None else None,
            "cells": [_board_cell(row.cells.get(c), anchors) for c in board.columns],
            "worst": _board_cell(row.worst, anchors), "passed": row.passed,
            "n": len(row.cells),
        })
    return {"columns": board.columns, "rows": rows}


def build_context(merged: Merged, sources: list[str]) -> dict[str, Any]:
    sourced = sorted(merged.cases, key=weakness_key)
    cases = [c.record for c in sourced]
    runs = [r.run for r in merged.runs]
    store = ImageStore()
    options = runs[0].options
    protection = next((_dump(c.protection) for c in cases if c.protection.epsilon is not None),
                      None)
    protection = protection or (_dump(cases[0].protection) if cases
                                else {"name": options.get("protection")})
    model = next((_dump(c.model) for c in cases if c.model is not None),
                 None) or {"id": options.get("model")}
    counts = {name: sum(1 for c in cases if c.outcome == name) for name in OUTCOMES}
    for c in cases:
        if c.outcome not in OUTCOMES:
            counts[c.outcome] = counts.get(c.outcome, 0) + 1

    metric_names: list[str] = []
    for c in cases:
        vm = c.deciding_metric
        if vm and vm not in metric_names:
            metric_names.append(vm)
    for c in cases:
        for name in c.metrics:
            if name not in metric_names:
                metric_names.append(name)

    several = len({protection_of(c) for c in cases}) > 1
    case_views = [_case_view(c, i, metric_names, store, several) for i, c in enumerate(sourced)]
    measured = [v for v in case_views if v["retained"] is not None]
    weakest = min(measured, key=lambda v: (float(v["retained"].get("ci_low")
                                                 or 0), v["case_id"])) if measured else None

    wall = [float(r.finished) - float(r.started) for r in runs if r.finished and r.started]
    headline, headline_outcome = _headline(case_views)
    tier = options.get("tier") or (cases[0].tier if cases else None)
    rows = []
    for v in case_views:
        retained = v["retained"] or {}
        rows.append(RetainedRow(v["label"], v["outcome"], retained.get("value"),
                                retained.get("ci_low"),
                                retained.get("ci_high"), v["threshold"]))
    board = leaderboard_view(cases, case_views)
    title = (", ".join(r["protection"] for r in board["rows"]) if board
             else protection.get("name") or options.get("protection"))
    return {
        "title": f"Robustness report: {title}",
        "leaderboard": board,
        "summary": {
            "protection": protection,
            # every protection's record, in an audit of several (the leaderboard's order)
            "protections": [_protection_record(cases, r["protection"])
                            for r in (board or {}).get("rows", [])],
            "spec": options.get("protection"),
            "model": model,
            "tier": tier,
            "seed": options.get("seed"),
            "n_cases": len(cases),
            "counts": counts,
            "weakest": weakest,
            "wall_seconds": sum(wall) if wall else None,
            "case_seconds": sum(float(c.seconds) for c in cases),
            "cache": cache_counts(cases),
            "caveat": SMOKE_CAVEAT if tier == "smoke" and model.get("id") == "tiny" else None,
            "non_standard": any(r.non_standard for r in runs),
            "headline": headline,
            "headline_outcome": headline_outcome,
            "n_runs": len(runs),
            "n_flagged": sum(1 for c in cases if c.flags),
            "noise_baseline": null_baseline_line(cases),
            "answer": audit_answer(cases, any(r.interrupted for r in runs),
                                   sum(len(r.not_run) for r in runs)),
            "worst": [{**row,
                       "anchor": next((v["anchor"] for v in case_views if v["case_id"]
                                       == row.get("case_id")), None)}
                      for row in worst_cases(cases)],
            "interrupted": any(r.interrupted for r in runs),
            "not_run": [c for r in runs for c in r.not_run],
            "left_out": sorted({s for r in runs for s in r.left_out_scenarios}),
            "selection": next((r.selection for r in runs if r.selection), None),
            "replicates": sorted({c.plan.replicates for c in cases if c.plan is not None}),
        },
        "metric_names": metric_names,
        "cases": case_views,
        "retained_svg": retained_plot(rows),
        "runs": [_run_view(r) for r in merged.runs],
        "sources": sources,
        "colours": OUTCOME_COLOURS,
        "image_css": store.css(),
        "full_views": store.full_views(),
        "generated": stamp(time.time()),
    }


def _headline(views: list[dict[str, Any]]) -> tuple[str, str]:
    if not views:
        return "No cases were recorded.", "error"
    over = [v["label"] for v in views if v.get("over_budget")]
    failed = [v["label"] for v in views if v["outcome"] == "fail" and not v.get("over_budget")]
    no_effect = [v["label"] for v in views if v["outcome"] == "no effect at baseline"]
    small = [v for v in views if v["outcome"] == "no meaningful effect at baseline"]
    not_learned = [v for v in views if v["outcome"] == "exploit did not learn the subject"]
    errors = [v["label"] for v in views if v["outcome"] == "error"]
    passed = [v for v in views if v["outcome"] == "pass"]
    parts = []
    if over:
        parts.append(f"Exceeds its ℓ∞ budget in {len(over)} of {len(views)} cases "
                     f"({', '.join(over)}): a budget violation, not judged for robustness.")
    if failed:
        parts.append(f"Does not hold against {len(failed)} of {len(views)} scenarios: "
                     f"{', '.join(failed)}.")
    if no_effect:
        parts.append(
            f"No measurable protective effect at baseline in {len(no_effect)} case(s) "
            f"({', '.join(no_effect)}): the exploit learned as well from the protected images as "
            "from the clean ones."
        )
    if small:
        shares = ", ".join(f"{v['label']} ({v['share_text']})" for v in small)
        parts.append(
            f"No meaningful protective effect at baseline in {len(small)} case(s): the protection "
            "removed less of what the exploit learned than the minimum (share of m_c − m_u "
            f"removed [95% CI]: {shares})."
        )
    if not_learned:
        parts.append(
            f"The exploit did not learn the subject in {len(not_learned)} case(s) "
            f"({', '.join(v['label'] for v in not_learned)}): its clean fine-tune is no better "
            "than the untrained model, so no protection can be judged there — fine-tune longer or "
            "at another learning rate."
        )
    if errors:
        parts.append(f"{len(errors)} case(s) errored and have no verdict: {', '.join(errors)}.")
    flagged = sum(1 for v in views if v["flags"])
    caution = (f" ⚑ {flagged} of {len(views)} verdicts are flagged as less reliable (see each "
               "case)." if flagged else "")
    if passed and not parts:
        return f"Holds in all {len(views)} scenarios.{caution}", "pass"
    if passed:
        parts.append(f"Holds in {len(passed)} of {len(views)}.")
    parts.append(caution.strip())
    outcome = ("fail" if failed or over else "exploit did not learn the subject" if not_learned
               else "no effect at baseline"
               if no_effect else "no meaningful effect at baseline" if small else "error")
    return " ".join(parts), outcome


def _metric_cells(case: CaseRecord, metric_names: list[str]) -> list[dict[str, Any]]:
    """The matrix row of a case: each metric's retained protection, or why there is none."""
    cells = []
    for name in metric_names:
        m = case.metrics.get(name)
        if m is None:
            cells.append({"metric": name, "outcome": None, "text": "—", "value": "—", "ci": "",
                          "title": "not measured in this case"})
            continue
        if m.unavailable:
            cells.append({"metric": name, "outcome": "error", "text": "unavailable",
                          "value": "unavailable", "ci": "", "title": str(m.unavailable)})
            continue
        text = fmt_ci(m.retained, 2) if m.retained is not None else {
            "no effect at baseline": "no effect",
            "no meaningful effect at baseline": f"share {fmt_ci(m.share, 2)}",
            "exploit did not learn the subject": "not learned",
        }.get(m.outcome or "", "—")
        value, _, ci = text.partition(" [")  # two lines in the matrix: estimate, then its CI
        cells.append({"metric": name, "outcome": m.outcome, "text": text,
                      "value": value, "ci": f"[{ci}" if ci else "", "title": m.sentence or ""})
    return cells


def _metric_rows(case: CaseRecord) -> list[dict[str, Any]]:
    """Every metric of a case with its estimates, verdict and distribution plot."""
    return [{
        "name": name,
        "verdict": name == case.deciding_metric,
        "direction": m.direction,
        "implementation": m.implementation,
        "unavailable": m.unavailable,
        "m_u": fmt_ci(m.m_u, 4),
        "m_c": fmt_ci(m.m_c, 4),
        "m_p": fmt_ci(m.m_p, 4),
        "m_a": fmt_ci(m.m_a, 4),
        "learned": fmt_ci(m.learned, 4),
        "effect": fmt_ci(m.effect, 4),
        "share": fmt_ci(m.share, 3),
        "retained": fmt_ci(m.retained, 3),
        "threshold": m.threshold,
        "outcome": m.outcome,
        "sentence": m.sentence,
        "notes": m.notes,
        "missing": m.missing,
        "svg": distribution_plot(m.values, name, m.direction) if m.values else None,
    } for name, m in case.metrics.items()]


def _strips(case: CaseRecord, roots: list[Path], store: ImageStore) -> list[dict[str, Any]]:
    """The case's image strips (its artifacts), each image embedded once."""
    strips = []
    artifacts = case.artifacts or {}
    subject_files = case.subject.files
    for key, caption in STRIPS:
        paths = artifacts.get(key) or []
        if not paths:
            continue
        images = [store.add(p, roots) for p in paths]
        names = (subject_files if key in ("clean", "protected", "attacked_input")
                 and len(subject_files) == len(images) else None)
        strips.append({"key": key, "caption": caption, "images": images, "names": names})
    return strips


def _case_view(
        sourced: SourcedCase, index: int, metric_names: list[str],
        store: ImageStore, several: bool = False) -> dict[str, Any]:
    case = sourced.record
    scenario = _dump(case.scenario)
    entry = case.verdict_entry
    threshold = case.threshold if case.threshold is not None else (
        case.scenario.verdict.retained_at_least if case.scenario.verdict is not None else None)
    return {
        "anchor": f"case-{index}",
        "case_id": case.case_id,
        "label": _scenario_label(case, several),
        "outcome": case.outcome,
        "over_budget": case.over_budget,
        "reason": case.reason,
        "flags": case.flags,
        "scenario": scenario,
        "attack": scenario.get("attack") or [],
        "exploit": scenario.get("exploit") or {},
        "verdict": scenario.get("verdict") or {},
        "protection": _dump(case.protection),
        "subject": _dump(case.subject),
        "model": _dump(case.model) or {},
        "transfer_model": _dump(case.transfer_model),
        "inpainting_unet": _inpainting_unet(case),
        "device": case.device,
        "seed": case.seed,
        "verdict_metric": case.deciding_metric,
        "verdict_metric_note": case.verdict_metric_note,
        "noise_floor": _dump(case.noise_floor),
        "threshold": threshold,
        "retained": _dump(entry.retained),
        "m_u": fmt_ci(entry.m_u, 4),
        "m_c": fmt_ci(entry.m_c, 4),
        "m_p": fmt_ci(entry.m_p, 4),
        "m_a": fmt_ci(entry.m_a, 4),
        "learned_text": fmt_ci(entry.learned, 4),
        "effect_text": fmt_ci(entry.effect, 4),
        "share_text": fmt_ci(entry.share, 3),
        "min_learned": entry.min_learned,
        "min_effect": entry.min_effect,
        "verdict_settings": _dump(case.verdict_settings) or {},
        "null_baseline": _null_view(case.null_baseline),
        "adaptive": _adaptive_view(_dump(case.adaptive)),
        "retained_text": fmt_ci(entry.retained, 3),
        "cells": _metric_cells(case, metric_names),
        "metric_rows": _metric_rows(case),
        "variants": [v.dump() for v in case.variants],
        "replicate_rows": _replicate_rows(case),
        "control": _dump(entry.control),
        "plan_text": case.plan.text if case.plan is not None else None,
        "worst_variant": case.worst_variant,
        "exploiter_best": _dump(case.exploiter_best),
        "strips": _strips(case, sourced.roots, store),
        "timings": [(t.stage, duration(t.seconds)) for t in case.timings],
        "seconds": duration(case.seconds),
        "cache_hits": case.cache.hits,
        "cache_misses": case.cache.misses,
        "cache_corrupt": case.cache.corrupt,
        "error": _dump(case.error),
        "protection_run": _dump(case.protection_run),
        "imperceptibility": case.imperceptibility or {},
        "exploits": {k: v.dump() for k, v in (case.exploits or {}).items()},
        "source_file": sourced.source,
        "params_json": pretty({
            "protection": _dump(case.protection),
            "scenario": scenario,
            "exploits": ({k: v.dump() for k, v in case.exploits.items()}
                         if case.exploits is not None else None),
        }),
    }


def _adaptation_label(adaptation: dict[str, Any]) -> str:
    """'EoT over jpeg(quality=75), 1 sample(s), gradient auto' from the record's adaptation."""
    steps = []
    for step in adaptation.get("transform") or []:
        for name, params in step.items():
            args = ", ".join(f"{k}={v}" for k, v in (params or {}).items())
            steps.append(f"{name}({args})")
    return (f"EoT over {' → '.join(steps) or '?'}, {adaptation.get('samples', '?')} sample(s), "
            f"gradient {adaptation.get('gradient', '?')}")


def _adaptive_view(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """An adaptive case's matched comparison: the adaptive protection and the protection as it
    is, under the same attack (``audit/judge/adaptive.py``)."""
    if not entry:
        return None
    sides = {name: entry.get(name) or {} for name in ("adaptive", "non_adaptive")}
    return {
        "metric": entry.get("metric"), "answer": entry.get("answer"),
        "adaptation": _adaptation_label(entry.get("adaptation") or {}),
        "gain": fmt_ci(entry.get("gain_after_attack"), 4),
        **{f"{name}_{k}": fmt_ci(side.get(k), 3 if k == "retained" else 4)
           for name, side in sides.items() for k in ("retained", "effect", "m_p", "m_a")},
        "non_adaptive_outcome": sides["non_adaptive"].get("outcome"),
    }


def _null_view(null: NullBaseline | None) -> dict[str, Any] | None:
    """The null baseline of a case, formatted beside the protection's effect and share."""
    if null is None:
        return None
    return {
        "metric": null.metric, "epsilon": null.epsilon,
        "m_null": fmt_ci(null.m_null, 4), "effect": fmt_ci(null.effect, 4),
        "share": fmt_ci(null.share, 3),
        "protection_effect": fmt_ci(null.protection_effect, 4),
        "protection_share": fmt_ci(null.protection_share, 3),
        "same_runs": null.same_runs_as_protected,
    }


def _replicate_rows(case: CaseRecord) -> list[dict[str, Any]]:
    """The verdict metric's mean per replicate and role (each replicate is its own fine-tune)."""
    means = case.verdict_entry.replicates or {}
    seeds = case.plan.seeds if case.plan is not None else []
    k = max((len(v) for v in means.values()), default=0)
    return [{"replicate": r + 1, "seed": seeds[r] if r < len(seeds) else None,
             **{role: fmt(values[r], 4) if r < len(values) else "—" for role,
                values in means.items()}}
            for r in range(k)]


def _run_view(sourced: SourcedRun) -> dict[str, Any]:
    run = sourced.run
    tier_settings = run.tier_settings
    return {
        "run_id": run.run_id,
        "source": sourced.source,
        "command_line": run.command_line,
        "invocation_dir": run.invocation_dir,
        "reproduce": run.reproduce,
        "toolkit_version": run.toolkit_version,
        "git_commit": run.git_commit,
        "versions": run.versions,
        "platform": run.platform,
        "cpu": _dump(run.cpu) or {},
        "options": run.options,
        "tier_settings": tier_settings,
        "non_standard": run.non_standard,
        "started": stamp(run.started),
        "finished": stamp(run.finished),
        "wall": duration(float(run.finished) - float(run.started)) if run.finished
        and run.started else "—",
        "tier_json": pretty(tier_settings),
        "options_json": pretty(run.options),
    }


def _inpainting_unet(case: CaseRecord) -> dict[str, Any] | None:
    """The inpainting UNet an inpainting case edited with, where it is not the model's own."""
    for run in (case.exploits or {}).values():
        if "inpainting_unet" in run.info:
            return dict(run.info["inpainting_unet"])
    return None
