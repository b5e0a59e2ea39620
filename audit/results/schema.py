"""The results schema: one typed model for a case record and one for a run's results file.

The engine builds a ``CaseRecord`` (``audit/run/case.py``), writes it through ``dump`` and the
results file through ``RunFile``; the terminal summary (``audit/results/summary.py``) and the
report (``reports/``) read records back through ``load_case`` / ``RunFile.model_validate`` and
use attributes, never ``.get()`` chains. A record missing a required field, or one with a field
of the wrong type, is refused with pydantic's message naming the field.

A field that does not apply to a case (a skipped case has no plan, a case without a transfer
model no ``transfer_model``) is left out of the JSON rather than written as null: records are
dumped with ``exclude_unset``, so what is written is what the engine set, as before the schema.
Dicts that parts fill freely (a protection's params, an exploit's training info, a metric's raw
results) stay ``dict[str, Any]``; everything the toolkit itself reads is typed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from audit.judge.outcomes import Label, RecordLabel

# A number as written: an int stays an int (pydantic's float would write 1 as 1.0).
Num = int | float

SCHEMA = "protection-audit/results"
# 2: replicates (per-replicate values and plan), matched controls, interruption, per-run artifacts.
# 3: the verdict's three conditions: the untrained reference (m_u, per replicate), the learned
#    margin and the effect share with their intervals and minimums, the null baseline (uniform
#    noise of the same budget), and two outcomes ("exploit did not learn the subject", "no
#    meaningful effect at baseline").
# 4: the typed schema of this module (a record is validated when written and when read, and
#    older files are refused: rerun the audit); new since 3: the adaptive protector's comparison
#    (``adaptive``, the plan's ``adaptation``, the scenario's ``adaptive``), the editing verdict's
#    baseline (``edit_baseline``), the subject's ``kind``, and one protection record per item of
#    ``--protection`` (several protections per run).
SCHEMA_VERSION = 4


class _Record(BaseModel):
    """Unknown fields are refused: a misspelt field fails loudly instead of vanishing."""

    model_config = ConfigDict(extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The JSON-ready dict of what was set (fields that do not apply are left out)."""
        return self.model_dump(exclude_unset=True)


class _Open(_Record):
    """A record that also carries a part's own fields (a protection's run info)."""

    model_config = ConfigDict(extra="allow")


# -- the verdict ---------------------------------------------------------------------------------
class Estimate(_Record):
    """``audit.judge.intervals.Estimate``: a point estimate and its interval."""

    value: Num
    ci_low: Num
    ci_high: Num
    n_replicates: int
    n_images: int
    method: str


class MatchedControl(_Record):
    m_c_control: Estimate
    shift: Estimate
    effect_under_scenario: Estimate


class NullEstimates(_Record):
    m_null: Estimate
    effect: Estimate
    share: Estimate | None


class Verdict(_Record):
    """``audit.judge.verdict.MetricVerdict``: one metric's verdict in one exploit variant."""

    metric: str
    direction: str
    threshold: Num
    m_c: Estimate
    m_p: Estimate
    m_a: Estimate
    effect: Estimate
    retained: Estimate | None
    outcome: Label
    sentence: str
    replicates: dict[str, list[Num | None]] = Field(default_factory=dict)
    control: MatchedControl | None = None
    slots_left_out: list[int] = Field(default_factory=list)
    m_u: Estimate | None = None
    learned: Estimate | None = None
    share: Estimate | None = None
    min_learned: Num | None = None
    min_effect: Num | None = None
    null_baseline: NullEstimates | None = None


class MetricEntry(_Record):
    """One metric of a case: its values per role (the decisive variant's runs) and, where it
    reached one, its verdict's fields (``Verdict``) beside them."""

    direction: str | None = None
    implementation: str | None = None
    level: str = "image"
    caution: str | None = None
    unavailable: str | None = None
    values: dict[str, list[Num | None]] = Field(default_factory=dict)
    per_replicate: dict[str, list[list[Num | None]]] = Field(default_factory=dict)
    missing: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    # the verdict's fields, where there is one
    metric: str | None = None
    threshold: Num | None = None
    m_c: Estimate | None = None
    m_p: Estimate | None = None
    m_a: Estimate | None = None
    effect: Estimate | None = None
    retained: Estimate | None = None
    outcome: Label | None = None
    sentence: str | None = None
    replicates: dict[str, list[Num | None]] | None = None
    control: MatchedControl | None = None
    slots_left_out: list[int] | None = None
    m_u: Estimate | None = None
    learned: Estimate | None = None
    share: Estimate | None = None
    min_learned: Num | None = None
    min_effect: Num | None = None
    null_baseline: NullEstimates | None = None


class VariantRecord(_Record):
    label: str
    instance_prompt: str | None
    posterior: dict[str, Any] | None
    matched_control: bool
    exploit: str
    verdicts: dict[str, Verdict]


class ExploiterBest(_Record):
    variant: int
    label: str
    exploit: str
    instance_prompt: str | None
    retained: Num | None
    basis: str


class Setting(_Record):
    value: Num
    origin: str


class VerdictSettings(_Record):
    min_learned: Setting
    min_effect: Setting
    retained_at_least: Setting
    untrained_reference: bool
    null_baseline: bool


class VerdictFallback(_Record):
    metric: str
    fallback: str
    unavailable: str


class NoiseFloor(_Record):
    metric: str
    m_floor: Num
    shift: Num
    effect: Num
    perturbation: str


class NullBaseline(_Record):
    """The null baseline beside the protection's effect (``controls.null_baseline``)."""

    metric: str
    protection: str
    epsilon: Num
    m_null: Estimate
    effect: Estimate
    share: Estimate | None
    protection_effect: Estimate
    protection_share: Estimate | None
    same_runs_as_protected: bool


class AdaptiveSide(_Record):
    """One side of an adaptive comparison: the protection's estimates under the attack."""

    m_p: Estimate
    m_a: Estimate
    effect: Estimate
    retained: Estimate | None
    outcome: Label


class AdaptiveComparison(_Record):
    """An adaptive scenario's matched comparison (``audit.judge.adaptive``): the adaptive
    protection and the protection as it is, under the same attack and seeds."""

    metric: str
    variant: int
    adaptation: dict[str, Any]
    adaptive: AdaptiveSide
    non_adaptive: AdaptiveSide
    gain_after_attack: Estimate
    answer: str


class EditBaseline(_Record):
    """What an editing verdict's effect is measured from (``audit.judge.case.editing_baseline``)."""

    role: Literal["null_baseline", "clean"]
    what: str


# -- what the case ran on ------------------------------------------------------------------------
class CodeFingerprint(_Record):
    sha256: str | None
    files: dict[str, str] = Field(default_factory=dict)
    reason: str | None = None


class Budget(_Record):
    epsilon: Num | None
    judged: bool
    declared: Num | None
    source: str


class ProtectionRecord(_Record):
    name: str
    spec: str | None = None
    epsilon: Num | None = None
    epsilon_255: Num | None = None
    budget: Budget | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    random: bool | None = None
    has_objective: bool | None = None
    code: CodeFingerprint | None = None


class ProtectionRun(_Open):
    """One replicate's protection run: its cache key and seed, the measured ℓ∞ and the
    imperceptibility measures, beside the protection's own info (objective trace, ...)."""

    cache_key: str | None
    seed: int | None
    linf: Num
    linf_255: Num
    budget_ok: bool
    imperceptibility: dict[str, dict[str, Any]]


class StepRecord(_Record):
    part: str
    params: dict[str, Any] = Field(default_factory=dict)


class ScenarioVerdict(_Record):
    metric: str
    retained_at_least: Num
    min_effect: Num | None = None


class ScenarioRecord(_Record):
    """The scenario's validated definition (``audit.config.scenario.Scenario``) and its hash; an
    input-error case records only its id and path."""

    id: str
    version: int | None = None
    title: str | None = None
    why: str | None = None
    source: str | None = None
    tags: list[str] = Field(default_factory=list)
    attack: list[StepRecord] = Field(default_factory=list)
    exploit: StepRecord | None = None
    variants: list[dict[str, Any]] = Field(default_factory=list)
    verdict: ScenarioVerdict | None = None
    requires: list[str] = Field(default_factory=list)
    adaptive: dict[str, Any] | None = None
    path: str | None = None
    definition_hash: str | None = None


class SubjectRecord(_Record):
    name: str | None  # None in an input-error case that names no subject
    kind: str | None = None  # person or style (audit.data.kinds)
    source: str | None = None
    files: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    content_hash: str | None = None
    n_images: int | None = None
    resolution: int | None = None


class ModelRecord(_Record):
    id: str
    revision: str | None
    fingerprint: str | None
    source: str | None
    resolution: int | None


PartDict = dict[str, dict[str, Any]]  # a part as the scenario grammar writes it: {name: params}


class PlanVariant(_Record):
    label: str
    attack: list[PartDict]
    exploit: PartDict
    matched_control: bool
    exploit_params_origin: dict[str, str]


class PlanRun(_Record):
    run: str
    role: str
    variant: int | None
    replicate: int
    seed: int
    chain: list[str]
    exploit: str


class PlanRecord(_Record):
    replicates: int
    seeds: list[int]
    standard_exploit: PartDict
    variants: list[PlanVariant]
    runs: list[PlanRun]
    distinct_exploits: int
    notes: list[str]
    adaptation: dict[str, Any] | None = None  # the adaptive protector's EoT, where there is one
    text: str


class ExploitRun(_Record):
    label: str
    role: str
    variant: int | None
    replicate: int
    seed: int
    finetune: dict[str, Any]
    weights_key: str | None
    cache_key: str | None
    info: dict[str, Any]


class UntrainedRun(_Record):
    replicate: int
    seed: int
    cache_key: str | None
    what: str


class ErrorRecord(_Record):
    type: str
    message: str
    user_error: bool
    traceback: str | None


class Timing(_Record):
    stage: str
    seconds: Num
    status: str | None = None
    worker: bool | None = None  # computed in a worker process or a Ray task
    device: str | None = None  # the worker's device (audit/run/placement.py)
    node: str | None = None  # the Ray node that computed it (--executor ray)


class CacheEvents(_Record):
    hits: list[str] = Field(default_factory=list)
    misses: list[str] = Field(default_factory=list)
    corrupt: list[str] = Field(default_factory=list)


# -- one case ------------------------------------------------------------------------------------
class Judgement(_Record):
    """What judging a case gives (``audit.judge.case.CaseJudge.judge``): the verdict fields of
    the record and the flags to add; ``CaseRecord.apply`` puts it into the record."""

    verdict_settings: VerdictSettings
    worst_variant: int
    exploiter_best: ExploiterBest | None
    variants: list[VariantRecord]
    metrics: dict[str, MetricEntry]
    verdict_metric: str
    threshold: Num
    outcome: RecordLabel
    reason: str
    flags: list[str] = Field(default_factory=list)
    verdict_metric_note: str | None = None
    verdict_fallback: VerdictFallback | None = None
    noise_floor: NoiseFloor | None = None
    null_baseline: NullBaseline | None = None
    adaptive: AdaptiveComparison | None = None
    edit_baseline: EditBaseline | None = None


class CaseRecord(_Record):
    """One (protection × scenario × subject) case, as written to ``cases/<case>.json``."""

    case_id: str
    protection: ProtectionRecord
    scenario: ScenarioRecord
    subject: SubjectRecord
    tier: str
    seed: int
    toolkit_version: str | None = None  # absent from an input-error case (never started)
    outcome: RecordLabel
    reason: str
    metrics: dict[str, MetricEntry]
    variants: list[VariantRecord]
    flags: list[str]
    error: ErrorRecord | None
    started: float | None = None
    seconds: Num
    timings: list[Timing]
    cache: CacheEvents
    # set as the case runs (left out where the case ended before them)
    budget_exceeded: bool | None = None
    plan: PlanRecord | None = None
    model: ModelRecord | None = None
    transfer_model: ModelRecord | None = None
    device: str | None = None
    protection_runs: list[ProtectionRun] | None = None
    protection_run: ProtectionRun | None = None  # replicate 1's
    imperceptibility: dict[str, dict[str, Any]] | None = None  # replicate 1's
    untrained: list[UntrainedRun] | None = None
    exploits: dict[str, ExploitRun] | None = None
    verdict_metric_note: str | None = None
    verdict_fallback: VerdictFallback | None = None
    verdict_settings: VerdictSettings | None = None
    worst_variant: int | None = None
    exploiter_best: ExploiterBest | None = None
    verdict_metric: str | None = None
    threshold: Num | None = None
    noise_floor: NoiseFloor | None = None
    null_baseline: NullBaseline | None = None
    adaptive: AdaptiveComparison | None = None
    edit_baseline: EditBaseline | None = None
    artifacts: dict[str, list[str]] | None = None

    def apply(self, judgement: Judgement) -> None:
        """Put a case's judgement into the record (its flags after those already raised)."""
        for name in ("verdict_metric_note", "verdict_fallback", "noise_floor", "null_baseline",
                     "adaptive", "edit_baseline"):
            if getattr(judgement, name) is not None:
                setattr(self, name, getattr(judgement, name))
        self.verdict_settings = judgement.verdict_settings
        self.worst_variant = judgement.worst_variant
        self.exploiter_best = judgement.exploiter_best
        self.variants = judgement.variants
        self.metrics = {**self.metrics, **judgement.metrics}
        self.flags = [*self.flags, *judgement.flags]
        self.verdict_metric = judgement.verdict_metric
        self.threshold = judgement.threshold
        self.outcome = judgement.outcome
        self.reason = judgement.reason

    @property
    def deciding_metric(self) -> str:
        """The metric that decided: the recorded one, else the scenario's."""
        if self.verdict_metric:
            return self.verdict_metric
        return self.scenario.verdict.metric if self.scenario.verdict is not None else ""

    @property
    def verdict_entry(self) -> MetricEntry:
        """The deciding metric's entry (an empty one where it was not measured)."""
        return self.metrics.get(self.deciding_metric) or MetricEntry()

    @property
    def over_budget(self) -> bool:
        """Whether the case failed because the protection's output exceeds its ℓ∞ budget."""
        return bool(self.budget_exceeded) or "protection exceeds its budget" in self.flags


# -- one run -------------------------------------------------------------------------------------
class Cpu(_Record):
    model: str | None
    torch_capability: str | None


class Replicates(_Record):
    value: int
    source: str


class RunInfo(_Record):
    """The run's provenance (``audit/results/provenance.py``) and its selection."""

    toolkit_version: str
    git_commit: str | None = None
    versions: dict[str, str | None] = Field(default_factory=dict)
    platform: str | None = None
    cpu: Cpu | None = None
    options: dict[str, Any]
    tier_settings: dict[str, Any] = Field(default_factory=dict)
    non_standard: bool | None = None
    replicates: Replicates | None = None
    interrupted: bool = False
    selected_cases: list[str] = Field(default_factory=list)
    not_run: list[str] = Field(default_factory=list)
    selection: str | None = None
    left_out_scenarios: list[str] = Field(default_factory=list)
    command_line: str | None = None
    invocation_dir: str | None = None
    started: float | None = None
    finished: float | None = None
    reproduce: str | None = None
    run_id: str | None = None
    written: float | None = None


class Counts(_Record):
    cases: int
    outcomes: dict[str, int]


class RunFile(_Record):
    """A results file: the schema and its version, the run, the outcome counts, every case."""

    schema_: Literal["protection-audit/results"] = Field(alias="schema")
    schema_version: Literal[4]
    run: RunInfo
    summary: Counts
    cases: list[CaseRecord]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, by_alias=True)


def load_case(data: Any) -> CaseRecord:
    """A case record from its JSON (raises pydantic's ValidationError naming the field)."""
    return data if isinstance(data, CaseRecord) else CaseRecord.model_validate(data)
