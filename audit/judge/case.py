"""Judging one case: the verdict per exploit variant and metric, the worst variant for the
protector, the deciding metric (or the tier's declared fallback), and the case's validity flags."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from audit.config.scenario import Scenario
from audit.config.tiers import Tier
from audit.data.kinds import PERSON, SubjectKind
from audit.judge import checks
from audit.judge.adaptive import adaptive_comparison
from audit.judge.verdict import MetricVerdict, decide, worst_variant
from audit.parts import FACE_METRICS
from audit.parts.metrics.build import exploit_metric_names
from audit.results.schema import (
    AdaptiveComparison,
    EditBaseline,
    ExploiterBest,
    Judgement,
    MetricEntry,
    NoiseFloor,
    NullBaseline,
    VariantRecord,
    VerdictFallback,
)
from audit.run.planner import CasePlan


class MetricChoice(NamedTuple):
    """The metrics a case computes, the one that decides, and why it is not the scenario's."""

    names: list[str]
    verdict_metric: str
    note: str | None


def metric_choice(tier: Tier, resolution: int, scenario: Scenario, kind: SubjectKind = PERSON,
                  metrics: tuple[str, ...] | None = None) -> MetricChoice:
    """The metrics to compute and the one that decides (the tier's substitute, said why); on an
    artist's style a face metric gives way to the style kind's metric. ``metrics``: the
    exploit's own (the exploit protocol's ``metrics``; None: the toolkit's)."""
    names = list(metrics) if metrics is not None else exploit_metric_names(kind.name)
    verdict_metric = scenario.verdict.metric
    substitute = tier.verdict.face_metric_substitute
    note = None
    if kind.verdict_metric and verdict_metric in FACE_METRICS:
        chosen = tier.verdict.style_metric_substitute or kind.verdict_metric
        note = (
            f"subject kind '{kind.name}': decides on {chosen} instead of the scenario's "
            f"{verdict_metric} (a face metric means nothing on an artist's works)"
            + (f"; tier '{tier.name}' uses {chosen} for {kind.verdict_metric} (its weights are "
               "not assumed there)" if chosen != kind.verdict_metric else ""))
        verdict_metric = chosen
    elif substitute and verdict_metric in FACE_METRICS:
        note = (
            f"tier '{tier.name}' decides on {substitute} instead of the scenario's "
            f"{verdict_metric}: faces at {resolution} px are below the face metrics' working size "
            f"(model card); {verdict_metric} is still reported"
        )
        verdict_metric = substitute
    fallback = tier.verdict.fallback_metric
    for name in (verdict_metric, fallback):
        if name and name not in names:
            names = [*names, name]
    return MetricChoice(names, verdict_metric, note)


@dataclass(frozen=True)
class CaseJudge:
    """The verdict settings of an audit (its tier, its seed for the bootstrap fallback)."""

    tier: Tier
    seed: int

    def verdict_minimums(self, scenario: Scenario) -> dict[str, dict[str, Any]]:
        """min_learned and min_effect with where each came from: the tier (or its default) <
        the scenario's ``verdict.min_effect`` < ``--audit-set verdict.…``."""
        resolved = self.tier.resolve_section("verdict")
        settings = resolved.params
        out = {key: {"value": float(getattr(settings, key)),
                     "origin": resolved.origin.get(key, "default")}
               for key in ("min_learned", "min_effect")}
        if scenario.verdict.min_effect is not None and out["min_effect"]["origin"] != "--audit-set":
            out["min_effect"] = {"value": float(scenario.verdict.min_effect), "origin": "scenario"}
        return out

    def fallback(self, verdict_metric: str, values: dict[str, dict[tuple, dict[str, Any]]],
                 flags: list[str]) -> tuple[str, VerdictFallback | None, str | None]:
        """The metric that decides: the verdict metric, or — where it is unavailable (its weights
        are missing) — the tier's declared fallback, said (the fallback and a note) and flagged
        (a verdict on a fallback is never shown as a clean one)."""
        def why(name: str) -> str | None:
            return next((r["unavailable"] for r in values.get(name, {}).values()
                         if r.get("unavailable")), None)

        fallback = self.tier.verdict.fallback_metric
        unavailable = why(verdict_metric)
        if (unavailable is None or not fallback or fallback == verdict_metric
                or why(fallback) is not None):
            return verdict_metric, None, None
        note = (f"{verdict_metric} is unavailable ({unavailable}); tier '{self.tier.name}' falls "
                f"back to {fallback}, as it declares (verdict.fallback_metric): this is "
                f"{fallback}'s verdict, not {verdict_metric}'s")
        flags.append(
            f"verdict on a fallback metric: {verdict_metric} is unavailable, so tier "
            f"'{self.tier.name}' decided on {fallback}; provide {verdict_metric}'s weights for the "
            "paper's metric")
        return fallback, VerdictFallback(metric=verdict_metric, fallback=fallback,
                                         unavailable=unavailable), note

    def settings(self, plan: CasePlan, scenario: Scenario,
                 untrained: bool) -> tuple[dict[str, Any], dict[str, float]]:
        """The verdict's settings with where each came from, and the minimums ``decide`` takes."""
        minimums = self.verdict_minimums(scenario)
        threshold = scenario.verdict.retained_at_least
        settings = {**minimums, "retained_at_least": {"value": threshold, "origin": "scenario"},
                    "untrained_reference": untrained,
                    "null_baseline": bool(plan.runs_for("null_baseline"))}
        limits = {"min_learned": minimums["min_learned"]["value"],
                  "min_effect": minimums["min_effect"]["value"]}
        return settings, limits

    def judge(self, plan: CasePlan, scenario: Scenario,
              values: dict[str, dict[tuple, dict[str, Any]]],
              verdict_metric: str, untrained: dict[str, list[dict[str, Any]]] | None = None,
              note: str | None = None, editing: bool = False) -> Judgement:
        """Per variant and metric verdicts; the scenario's is the worst variant on its verdict
        metric. ``untrained``: each metric's results on the untrained reference, per replicate
        (a fine-tuning case always gives them: a pass needs the exploit to have learned and a
        meaningful effect size); ``note``: why the verdict metric is not the scenario's
        (``metric_choice``); ``editing``: the values compare edits with the clean edits, and
        the baseline is the null baseline's (``editing_baseline``)."""
        flags: list[str] = []
        threshold = scenario.verdict.retained_at_least
        verdict_metric, fallback, fallback_note = self.fallback(verdict_metric, values, flags)
        settings, limits = self.settings(plan, scenario, untrained is not None)
        baseline, edit_baseline = editing_baseline(plan, flags) if editing else ("clean", None)
        per_variant = [{name: self._verdict(plan, v, name, by_run, threshold, flags,
                                            (untrained or {}).get(name) if untrained is not None
                                            else None, limits, baseline)
                        for name, by_run in values.items()} for v in range(len(plan.variants))]
        worst = worst_variant([verdicts.get(verdict_metric) for verdicts in per_variant])
        metrics = {name: self._metric(plan, worst, name, by_run, per_variant[worst].get(name),
                                      (untrained or {}).get(name), name == verdict_metric, flags)
                   for name, by_run in values.items()}
        flags.extend(checks.replicates(plan))
        flags.extend(checks.non_standard(self.tier))
        decisive = per_variant[worst].get(verdict_metric)
        for i, verdicts in enumerate(per_variant):
            if (chosen := verdicts.get(verdict_metric)) is not None:
                flags.extend(checks.control_shift(chosen, plan.variants[i].label))
        fields: dict[str, Any] = dict(
            verdict_settings=settings, worst_variant=worst,
            exploiter_best=exploiter_best(plan, worst, per_variant[worst].get(verdict_metric)),
            variants=[variant_record(plan, i, verdicts) for i, verdicts in enumerate(per_variant)],
            metrics=metrics, verdict_metric=verdict_metric, threshold=threshold, flags=flags,
            verdict_fallback=fallback,
            verdict_metric_note="; ".join(n for n in (note, fallback_note) if n) or None,
            edit_baseline=edit_baseline)
        if decisive is None:
            return Judgement(**fields, outcome="error", reason=(
                f"verdict metric '{verdict_metric}' is unavailable: "
                f"{metrics[verdict_metric].unavailable}"))
        flags.extend(checks.unbounded(decisive) + checks.inconclusive(decisive))
        prefix = (EDIT_WORDS[baseline] if editing else "") + (
            f"worst of {len(plan.variants)} exploit variants: '{plan.variants[worst].label}'; "
            if len(plan.variants) > 1 else "")
        return Judgement(**fields, outcome=decisive.outcome, reason=prefix + decisive.sentence,
                         noise_floor=self._noise_floor(plan, values.get(verdict_metric, {}),
                                                       decisive, flags),
                         null_baseline=self._null_baseline(plan, decisive, flags),
                         adaptive=self._adaptive(plan, values.get(verdict_metric, {}), worst,
                                                 decisive, flags, limits,
                                                 (untrained or {}).get(verdict_metric)))

    @staticmethod
    def _metric(plan: CasePlan, worst: int, name: str, by_run: dict[tuple, dict[str, Any]],
                verdict: MetricVerdict | None, untrained: list[dict[str, Any]] | None,
                deciding: bool, flags: list[str]) -> MetricEntry:
        """One metric's entry: the decisive variant's values and verdict, and its flags."""
        entry = metric_entry(plan, worst, by_run, verdict, untrained=untrained)
        # Slots left out for being undefined in some exploit, and a metric's own caution
        # (FID on few images): said with the metric, and flagged where it decides.
        entry["flags"] = checks.slots_left_out(name, verdict) + checks.metric_caution(name, entry)
        # Coverage of the deciding metric bears on the verdict (a flag); another metric's is
        # shown with that metric (its 'unavailable' and 'notes'), not as a flag on the case.
        if deciding:
            flags.extend(checks.metric_coverage(name, entry) + entry["flags"])
        return MetricEntry.model_validate(entry)

    def _verdict(self, plan: CasePlan, variant: int, name: str, by_run: dict[tuple, dict[str, Any]],
                 threshold: float, flags: list[str],
                 untrained: list[dict[str, Any]] | None = None,
                 limits: dict[str, float] | None = None,
                 baseline: str = "clean") -> MetricVerdict | None:
        roles = {"clean": plan.runs_for(baseline), "protected": plan.runs_for("protected"),
                 "attacked": plan.runs_for("attacked", variant),
                 "control": plan.runs_for("control", variant),
                 "null_baseline": plan.runs_for("null_baseline") if baseline == "clean" else []}
        results = {role: [by_run[r.identity] for r in runs] for role, runs in roles.items()}
        results["untrained"] = list(untrained or [])
        if any(x.get("unavailable") for rs in results.values() for x in rs):
            return None
        per = {role: [x["values"] for x in rs] for role, rs in results.items()}
        try:
            return decide(name, results["clean"][0]["direction"], per["clean"], per["protected"],
                          per["attacked"],
                          threshold, alpha=self.tier.verdict.alpha, control=per["control"] or None,
                          untrained=per["untrained"] or None, null=per["null_baseline"] or None,
                          **(limits or {}),
                          resamples=self.tier.verdict.bootstrap_resamples, seed=self.seed)
        except ValueError as exc:  # e.g. a metric undefined on every image of a replicate
            flags.append(f"{name}: no verdict ({exc})")
            return None

    def _noise_floor(self, plan: CasePlan, by_run: dict[tuple, dict[str, Any]],
                     verdict: MetricVerdict, flags: list[str]) -> NoiseFloor | None:
        floor = plan.runs_for("noise_floor")
        values = [v for v in by_run[floor[0].identity].get("values") or [] if v is not None
                  and math.isfinite(v)] if floor else []
        if not values:
            return None
        info, floor_flags = checks.noise_floor(verdict, sum(values) / len(values))
        flags.extend(floor_flags)
        return NoiseFloor.model_validate(info)

    def _adaptive(self, plan: CasePlan, by_run: dict[tuple, dict[str, Any]], worst: int,
                  verdict: MetricVerdict, flags: list[str], limits: dict[str, float],
                  untrained: list[dict[str, Any]] | None) -> AdaptiveComparison | None:
        """An adaptive scenario's matched comparison with the protection as it is
        (``audit/judge/adaptive.py``)."""
        if plan.adaptation is None:
            return None
        try:
            entry = adaptive_comparison(
                plan, by_run, worst, verdict, alpha=self.tier.verdict.alpha,
                resamples=self.tier.verdict.bootstrap_resamples, seed=self.seed, limits=limits,
                untrained=untrained)
        except ValueError as exc:
            flags.append(f"adaptive comparison: none ({exc})")
            return None
        return AdaptiveComparison.model_validate(entry) if entry is not None else None

    def _null_baseline(self, plan: CasePlan, verdict: MetricVerdict,
                       flags: list[str]) -> NullBaseline | None:
        """The null baseline beside the protection's effect (``controls.null_baseline``), and its
        flag."""
        runs = plan.runs_for("null_baseline")
        if verdict.null_baseline is None or not runs:
            return None
        null = verdict.null_baseline
        flags.extend(checks.null_baseline(verdict))
        return NullBaseline.model_validate({
            "metric": verdict.metric, "protection": "random",
            "epsilon": runs[0].chain[0].spec.params["epsilon"],
            "m_null": null.m_null.to_dict(), "effect": null.effect.to_dict(),
            "share": null.share.to_dict() if null.share is not None else None,
            "protection_effect": verdict.effect.to_dict(),
            "protection_share": verdict.share.to_dict() if verdict.share is not None else None,
            "same_runs_as_protected": [r.identity for r in runs]
            == [r.identity for r in plan.runs_for("protected")],
        })


# What an editing verdict's m_c is, said before its sentence.
EDIT_WORDS = {
    "null_baseline": "editing exploit, judged against the null baseline: m_c below is the "
                     "similarity to the clean edits of the edits of uniformly noised images "
                     "('random' at the protection's ε), not of the clean edits themselves; ",
    "clean": "editing exploit, judged against the clean edits themselves (no null baseline: the "
             "protection declares no ε), so any perturbation counts as an effect; ",
}


def editing_baseline(plan: CasePlan, flags: list[str]) -> tuple[str, EditBaseline]:
    """The role an editing verdict's effect is measured from, and the record's entry saying so.

    An edit learns nothing, and the clean run compared with itself is 1 on every similarity (the
    same images, prompts and seeds give the same edits): measured from there, any perturbation,
    however small, is an "effect". PhotoGuard's own baseline is uniform noise of the same
    intensity (§5, Table 6: the random-noise row), so the editing verdict's baseline is the null
    baseline: effect = d·(m_p − m_null), the protected edits' distance from the clean edits
    beyond that of noise of the same budget, with its interval over the replicates (the
    replicate spread); retained = (m_a − m_null)/(m_p − m_null), the share of that excess the
    attack leaves. Auditing ``random`` itself, its protected runs are the null baseline's runs:
    its effect is 0 by construction ("no effect at baseline"). Conditions 1 and the effect share
    of a fine-tuning verdict (learned margin, min_effect against the untrained model) have no
    counterpart here and are not checked (``decide`` without an untrained reference)."""
    baseline = "null_baseline" if plan.runs_for("null_baseline") else "clean"
    entry = EditBaseline(
        role=baseline,
        what=("uniform noise of the protection's ε ('random', K replicates): effect = "
              "d·(m_p − m_null), retained = (m_a − m_null)/(m_p − m_null), every value a "
              "similarity to the clean edits of the same replicate, slot by slot"
              if baseline == "null_baseline" else
              "the clean edits themselves (no budget declared, no null baseline)"))
    if baseline == "clean":
        flags.append("editing verdict without a null baseline (the protection declares no ε): "
                     "measured from the clean edits, any perturbation is an effect")
    return baseline, entry


def variant_record(plan: CasePlan, i: int,
                   verdicts: dict[str, MetricVerdict | None]) -> VariantRecord:
    v = plan.variants[i]
    return VariantRecord.model_validate({
        "label": v.label, "instance_prompt": v.exploit.params.get("instance_prompt"),
        "posterior": v.exploit.params.get("posterior"), "matched_control": v.changes_exploit,
        "exploit": plan.exploit_label(v.exploit),
        "verdicts": {n: vd.to_dict() for n, vd in verdicts.items() if vd is not None}})


def exploiter_best(plan: CasePlan, worst: int,
                   verdict: MetricVerdict | None) -> ExploiterBest | None:
    """The variant the verdict took — the exploiter's best, the protector's worst — named by its
    label (prompt mismatch: the winning prompt), with its exploit and instance prompt; None for
    a scenario with one variant."""
    if len(plan.variants) < 2:
        return None
    v = plan.variants[worst]
    retained = (verdict.retained.value if verdict is not None and verdict.retained is not None
                else None)
    return ExploiterBest(
        variant=worst, label=v.label, exploit=plan.exploit_label(v.exploit),
        instance_prompt=v.exploit.params.get("instance_prompt"), retained=retained,
        basis=("lowest retained protection on the verdict metric" if retained is not None else
               "no variant retained a protective effect to compare: the first variant is shown"))


def metric_entry(plan: CasePlan, worst: int, by_run: dict[tuple, dict[str, Any]],
                 verdict: MetricVerdict | None,
                 untrained: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    roles = {"clean": plan.runs_for("clean"), "protected": plan.runs_for("protected"),
             "attacked": plan.runs_for("attacked", worst),
             "null_baseline": plan.runs_for("null_baseline")}
    results = {role: [by_run[r.identity] for r in runs] for role, runs in roles.items() if runs}
    if untrained:
        results["untrained"] = list(untrained)
    first = results["clean"][0]
    entry: dict[str, Any] = {
        "direction": first.get("direction"),
        "implementation": first.get("implementation"),
        "level": first.get("level", "image"),
        "caution": next((x["caution"] for rs in results.values() for x in rs if x.get("caution")),
                        None),
        "unavailable": next((x["unavailable"] for rs in results.values() for x in rs
                             if x.get("unavailable")), None),
        "values": {role: [v for x in rs for v in x.get("values", [])] for role,
                   rs in results.items()},
        "per_replicate": {role: [x.get("values", []) for x in rs] for role, rs in results.items()},
        "missing": {role: sum(x.get("missing", 0) for x in rs) for role, rs in results.items()},
        "notes": first.get("notes", []),
    }
    if verdict is not None:
        entry.update(verdict.to_dict())
    return entry
