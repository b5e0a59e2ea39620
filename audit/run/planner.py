"""The plan of one case: which runs it needs, by role × replicate (DESIGN "The flow of one case").

A pure function of (scenario, protection, tier, seed): no model, no images. Each run is an
image chain applied to the subject (protection, then the scenario's attack steps) and an
exploit with fully resolved parameters, repeated for replicates r = 0..K−1 with the
replicate's own seed for every random stage:

    role         image chain                          exploit
    clean        subject                              standard
    protected    subject → protection                 standard
    attacked[v]  subject → protection → attack_v      the scenario's (variant v)
    control[v]   subject                              variant v's, where it is not the standard one
                 (controls.purified: subject → attack_v, the same seeds, for every attack)
    noise_floor  subject → level_jitter ±1/255        standard (replicate 0 only; tier controls)
    null_baseline subject → random noise of ε          standard (controls.null_baseline)

An adaptive scenario (``adaptive:``) crafts the protection through the exploiter's transform
(EoT, ``audit/parts/protections/eot.py``): its protected and attacked runs start from the
*adaptive* protection — its own protect step, whose cache key includes the adaptation — and two
more roles hold the protection as it is, under the same attack, for the matched comparison
("does adapting help against this attack?"):

    non_adaptive_protected  subject → protection            standard
    non_adaptive_attacked[v] subject → protection → attack_v the scenario's (variant v)

Both are the same runs as every other scenario's protected runs and as the plain scenario's
attacked runs (``adaptive-jpeg-q75`` shares them with ``jpeg-q75`` through the cache).

The null baseline is PID Table 1's and PhotoGuard's reference: the ``random`` protection
(uniform noise in [−ε, ε]) at the audited protection's budget, re-drawn per replicate with the
replicate's seed — so auditing ``random`` itself, its protected runs *are* the null baseline,
and an audit of ``random`` into the same results folder leaves every null-baseline run cached.
Beside the runs, the verdict needs the **untrained reference**: the base model's generations
with each replicate's prompts and seed, no fine-tune (``Stages.untrained``; not a run).

An editing scenario (its exploit is img2img or inpainting, ``audit/parts/exploits/editing.py``)
makes that exploit the case's standard one — the clean run's edits are what every other run's
edits are compared with — and always runs the null baseline: the editing verdict is measured
from it (``audit/judge/case.py``: ``editing_baseline``). Edits cost seconds, so this is cheap.

Two runs with the same chain, exploit and seed are the same run: a scenario without an attack
and with the standard exploit shares its attacked runs with the protected ones, and every
scenario of an audit shares the clean and protected runs (through the cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audit.config.scenario import STANDARD_EXPLOIT, Scenario, Step
from audit.config.tiers import Tier
from audit.data.kinds import PERSON, SubjectKind
from audit.errors import ScenarioError
from audit.parts import EXPLOITS, PROTECTIONS, TRANSFORMS
from audit.parts.exploits import trains
from audit.parts.registry import PartSpec

ROLES = ("clean", "protected", "attacked", "control", "noise_floor", "null_baseline",
         "non_adaptive_protected", "non_adaptive_attacked")
REPLICATE_SEED_STRIDE = 1_000_003  # a prime: replicate seeds never collide with base seeds 0..10^6


def replicate_seed(base_seed: int, replicate: int) -> int:
    """Replicate 0 keeps the audit's seed (``--seed``); replicate r its own."""
    return base_seed + REPLICATE_SEED_STRIDE * replicate


@dataclass(frozen=True)
class Adaptation:
    """The adaptive protector of a scenario, resolved: the transform chain the protection is
    crafted through, the EoT samples per PGD iteration (1 for a deterministic chain, where one
    sample is exact), the samples the scenario asked for, and the gradient rule."""

    transform: tuple[PartSpec, ...]
    samples: int
    requested_samples: int
    gradient: str

    @property
    def random(self) -> bool:
        return any(TRANSFORMS.get(s.name).random for s in self.transform)

    def to_dict(self) -> dict[str, Any]:
        """What the adapted protect step's cache key and the record carry."""
        return {"transform": [s.to_dict() for s in self.transform], "samples": self.samples,
                "gradient": self.gradient}

    def label(self) -> str:
        chain = " → ".join(s.label() for s in self.transform)
        return f"EoT over {chain}, {self.samples} sample(s), gradient {self.gradient}"

    def crafted_through(self) -> list[str]:
        """How each step is crafted through (``eot.transform_sample``'s rule, without loading)."""
        out = []
        for s in self.transform:
            has_form = TRANSFORMS.get(s.name).differentiable
            if self.gradient == "auto" and has_form:
                out.append(f"{s.name}: its differentiable form")
            elif self.gradient == "bpda-surrogate" and has_form:
                out.append(f"{s.name}: BPDA, real forward, its differentiable form backward")
            else:
                out.append(f"{s.name}: BPDA, real forward, identity backward")
        return out


@dataclass(frozen=True)
class ChainStep:
    """One image-space step: the protection or a transform, with the seed it draws from; a
    protection step of an adaptive scenario carries its ``adapt``ation."""

    kind: str  # "protection" | "transform"
    spec: PartSpec
    seed: int | None  # None: deterministic (no seed in its cache key)
    adapt: Adaptation | None = None

    def label(self) -> str:
        adapted = f" adapted ({self.adapt.label()})" if self.adapt is not None else ""
        return self.spec.label() + adapted + (f" @seed {self.seed}" if self.seed is not None
                                              else "")

    def key(self) -> tuple[Any, ...]:
        """The step's part of a run's identity."""
        base = (self.kind, self.spec.name, _frozen(self.spec.params), self.seed)
        return base if self.adapt is None else (*base, _frozen(self.adapt.to_dict()))


@dataclass(frozen=True)
class Run:
    role: str
    variant: int | None  # index into the case's variants (attacked / control)
    replicate: int
    chain: tuple[ChainStep, ...]
    exploit: PartSpec
    seed: int  # fine-tuning and generation seed of this replicate

    @property
    def identity(self) -> tuple[Any, ...]:
        """Runs with equal identity are computed once."""
        chain = tuple(s.key() for s in self.chain)
        return (chain, self.exploit.name, _frozen(self.exploit.params), self.seed)

    def label(self) -> str:
        v = f"[{self.variant}]" if self.variant is not None else ""
        return f"{self.role}{v} r{self.replicate}"


@dataclass(frozen=True)
class VariantPlan:
    label: str
    attack: tuple[PartSpec, ...]
    exploit: PartSpec
    changes_exploit: bool  # the exploit differs from the standard one: a matched control is run
    origin: dict[str, str] = field(default_factory=dict)  # exploit params: key -> layer


@dataclass(frozen=True)
class CasePlan:
    scenario: str
    protection: PartSpec
    replicates: int
    seeds: tuple[int, ...]
    standard_exploit: PartSpec
    variants: tuple[VariantPlan, ...]
    runs: tuple[Run, ...]
    notes: tuple[str, ...] = ()
    # standard exploit params: key -> layer
    standard_origin: dict[str, str] = field(default_factory=dict)
    adaptation: Adaptation | None = None  # the adaptive protector (scenario ``adaptive:``)

    def unique_runs(self) -> list[Run]:
        """One run per identity, in plan order (the first role that needs it names it)."""
        seen: dict[tuple[Any, ...], Run] = {}
        for run in self.runs:
            seen.setdefault(run.identity, run)
        return list(seen.values())

    def runs_for(self, role: str, variant: int | None = None) -> list[Run]:
        """The runs of one role (and variant), in replicate order."""
        return sorted((r for r in self.runs if r.role == role and r.variant == variant),
                      key=lambda r: r.replicate)

    def exploit_label(self, exploit: PartSpec) -> str:
        """'standard', or the exploit's parameters that differ from the standard one (another
        exploit: its parameters that the standard one lacks or sets otherwise)."""
        if exploit == self.standard_exploit:
            return "standard"
        base = dict(_flat(self.standard_exploit.params))
        diff = {k: v for k, v in _flat(exploit.params) if base.get(k, object()) != v}
        return f"{exploit.name}(" + ", ".join(f"{k}={v}" for k, v in diff.items()) + ")"

    def table(self) -> str:
        """A human-readable plan: one line per run, shared runs marked."""
        lines = [
            f"scenario {self.scenario} · protection {self.protection.label()} · {self.replicates} "
            f"replicate(s), seeds {', '.join(map(str, self.seeds))}",
            f"  standard exploit: {self.standard_exploit.label()}",
            *_origin_lines(self.standard_origin, "    "),
        ]
        for i, v in enumerate(self.variants):
            control = " · matched control" if v.changes_exploit or any(
                r.role == "control" and r.variant == i for r in self.runs) else ""
            attack = " → ".join(s.label() for s in v.attack) or "no attack"
            lines.append(f"  variant {i} '{v.label}': {attack}; exploit "
                         f"{self.exploit_label(v.exploit)}{control}")
            if v.exploit != self.standard_exploit:
                lines.extend(_origin_lines(v.origin, "    "))
        first: dict[tuple[Any, ...], str] = {}
        for run in self.runs:
            chain = " → ".join(s.label() for s in run.chain) or "subject"
            shared = f"   (= {first[run.identity]})" if run.identity in first else ""
            first.setdefault(run.identity, run.label())
            lines.append(f"  {run.label():<16} {chain} ⇒ {self.exploit_label(run.exploit)} @seed "
                         f"{run.seed}{shared}")
        unique = len(self.unique_runs())
        if trains(self.standard_exploit.name):
            lines.append("  untrained reference: the base model's generations at seeds "
                         f"{', '.join(map(str, self.seeds))} (no fine-tune; the verdict's learned "
                         "margin and effect size)")
            lines.append(
                f"  {len(self.runs)} runs, {unique} distinct exploits (fine-tune + generation)")
        else:
            lines.append("  editing exploit: every run's edits are compared with the clean run's "
                         "edits of its replicate; the verdict's baseline is the null baseline")
            lines.append(f"  {len(self.runs)} runs, {unique} distinct exploits (edits, nothing "
                         "trained)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _origin_lines(origin: dict[str, str], indent: str) -> list[str]:
    """Where the exploit's settings came from, one line per layer (tier rows name their source)."""
    by_layer: dict[str, list[str]] = {}
    for key, layer in origin.items():
        by_layer.setdefault(layer, []).append(key)
    return [f"{indent}{', '.join(keys)} ← {layer}" for layer, keys in by_layer.items()]


def _flat(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        out.extend(_flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                   else [(f"{prefix}{key}", value)])
    return out


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@dataclass(frozen=True)
class ProtectionInfo:
    """What the planner needs to know of the protection under audit."""

    spec: PartSpec
    random: bool = True  # re-crafted per replicate with the replicate's seed
    shared_across_replicates: bool = False  # a folder of protected files: one set for all

    @classmethod
    def of(cls, protection: Any, spec: PartSpec) -> ProtectionInfo:
        """From a protection's declared contract (``Protection.random`` and
        ``shared_across_replicates``)."""
        return cls(spec, protection.random, protection.shared_across_replicates)


def null_baseline_spec(protection: PartSpec) -> PartSpec | None:
    """The ``random`` protection at the audited protection's budget (its ``epsilon``); None when
    the protection declares none."""
    epsilon = protection.params.get("epsilon")
    if epsilon is None:
        return None
    params = PROTECTIONS.get("random").validate({"epsilon": float(epsilon)}).model_dump()
    return PartSpec("protection", "random", params)


def resolve_exploit(tier: Tier, name: str, params: dict[str, Any] | None,
                    kind: SubjectKind = PERSON) -> tuple[PartSpec, dict[str, str]]:
    """An exploit's parameters through the layers (``Tier.resolve_part``); a subject kind other
    than ``person`` sets its prompts above the tier."""
    part = EXPLOITS.get(name)
    layer = None
    if kind is not PERSON:
        layer = (f"subject kind '{kind.name}'",
                 kind.exploit_params(set(part.params_model().model_fields)))
    resolved = tier.resolve_part(part, params, kind=layer)
    return PartSpec("exploit", name, resolved.to_dict()), resolved.origin


def editing_exploit(scenario: Scenario) -> Step | None:
    """The editing exploit a scenario names (img2img, inpainting), or None for a fine-tuning
    scenario. An editing scenario's exploit is the case's standard exploit: its clean run is the
    reference its metrics compare with, so every variant must name that one exploit with the
    same parameters (a different one would need its own clean edits)."""
    exploits = [exploit for _, _, exploit in scenario.resolved_variants()]
    edits = [e for e in exploits if e.part != STANDARD_EXPLOIT and not trains(e.part)]
    if not edits:
        return None
    if len(edits) != len(exploits) or any(e != edits[0] for e in edits):
        raise ScenarioError(
            f"scenario '{scenario.id}': an editing exploit ({edits[0].part}) is compared with its "
            "own clean edits, so every variant must name the same editing exploit with the same "
            "parameters; vary the attack instead, or write one scenario per exploit setting")
    return edits[0]


def _control(variant: VariantPlan, v: int, r: int, chain: tuple[ChainStep, ...], seed: int,
             purified: bool) -> list[Run]:
    """Variant v's matched control in replicate r: its changed exploit on the clean images, and
    with ``controls.purified`` the clean images through the same attack (a purifier's own damage
    to the subject is not protection the attack left); none where neither applies."""
    control_chain = chain if purified else ()
    if variant.changes_exploit or control_chain:
        return [Run("control", v, r, control_chain, variant.exploit, seed)]
    return []


def plan_case(scenario: Scenario, protection: ProtectionInfo, tier: Tier, seed: int,
              default_exploit: str | None = None, kind: SubjectKind = PERSON) -> CasePlan:
    """Every run the case needs, with its role, replicate, image chain and exploit.

    The standard exploit is ``default_exploit`` or the tier's (``--exploit``, DreamBooth by
    default); a scenario's ``standard`` exploit is that one with the scenario's changes, a
    named one stays itself. Either way, one that resolves to other parameters than the
    standard exploit's gets a matched control. The subject's ``kind`` sets the exploits'
    prompts (``audit/data/kinds.py``).
    """
    k = tier.replicates
    seeds = tuple(replicate_seed(seed, r) for r in range(k))
    editing = editing_exploit(scenario)
    standard_name = editing.part if editing else default_exploit or tier.exploit
    standard, standard_origin = resolve_exploit(tier, standard_name,
                                                editing.params if editing else None, kind)
    variants = resolve_variants(scenario, tier, standard_name, standard, kind)

    adaptation, notes = resolve_adaptation(scenario, tier)
    runs: list[Run] = []
    for r, s in enumerate(seeds):
        prot_seed = seeds[0] if protection.shared_across_replicates else s
        protect = ChainStep("protection", protection.spec, prot_seed if protection.random else None)
        # The adaptive protection draws its EoT samples from the replicate's seed.
        crafted = protect if adaptation is None else ChainStep(
            "protection", protection.spec,
            prot_seed if protection.random or adaptation.random else None, adaptation)
        runs.append(Run("clean", None, r, (), standard, s))
        runs.append(Run("protected", None, r, (crafted,), standard, s))
        for v, variant in enumerate(variants):
            chain = tuple(ChainStep("transform", a, s if TRANSFORMS.get(a.name).random else None)
                          for a in variant.attack)
            runs.append(Run("attacked", v, r, (crafted, *chain), variant.exploit, s))
            runs.extend(_control(variant, v, r, chain, s, tier.controls.purified))
            if adaptation is not None:
                runs.append(Run("non_adaptive_attacked", v, r, (protect, *chain), variant.exploit,
                                s))
        if adaptation is not None:
            runs.append(Run("non_adaptive_protected", None, r, (protect,), standard, s))
    if tier.controls.noise_floor:
        jitter = PartSpec("transform", "level_jitter", {"levels": 1})
        runs.append(Run("noise_floor", None, 0, (ChainStep("transform", jitter, seeds[0] + 7919),),
                        standard, seeds[0]))
    if tier.controls.null_baseline or editing:  # an edit's verdict is judged against it
        null = null_baseline_spec(protection.spec)
        if null is None:
            notes.append("null baseline: the protection declares no budget ε (a folder without "
                         "--epsilon), so there is no noise of the same budget to compare with; not "
                         "run")
        elif null.params["epsilon"] > 0:  # 'none' (ε = 0): the noise would be the clean images
            for r, s in enumerate(seeds):
                runs.append(Run("null_baseline", None, r, (ChainStep("protection", null, s),),
                                standard, s))
    if k == 1:
        notes.append("one replicate: no interval covers what a rerun would give (set --replicates "
                     "≥ 2)")
    return CasePlan(scenario.id, protection.spec, k, seeds, standard, tuple(variants), tuple(runs),
                    tuple(notes),
                    standard_origin, adaptation)


def resolve_variants(scenario: Scenario, tier: Tier, standard_name: str,
                     standard: PartSpec, kind: SubjectKind = PERSON) -> list[VariantPlan]:
    """Each variant's attack steps and exploit, resolved (part default < tier < scenario); one
    whose exploit differs from the standard one gets a matched control."""
    variants = []
    for label, attack, exploit in scenario.resolved_variants():
        steps = tuple(PartSpec("transform", s.part,
                               tier.resolve_part(TRANSFORMS.get(s.part), s.params).to_dict())
                      for s in attack)
        name = standard_name if exploit.part == STANDARD_EXPLOIT else exploit.part
        spec, origin = resolve_exploit(tier, name, exploit.params, kind)
        changes = spec != standard and tier.controls.matched
        variants.append(VariantPlan(label, steps, spec, changes, origin))
    return variants


def resolve_adaptation(scenario: Scenario, tier: Tier) -> tuple[Adaptation | None, list[str]]:
    """The scenario's adaptive protector with its transform steps resolved (part default < tier
    < scenario), and the plan's notes on it. A chain without a random step gives the same draw
    every time: one EoT sample is then exact, and more would compute the same term again."""
    if scenario.adaptive is None:
        return None, []
    spec = scenario.adaptive
    steps = tuple(PartSpec("transform", s.part,
                           tier.resolve_part(TRANSFORMS.get(s.part), s.params).to_dict())
                  for s in spec.transform)
    random = any(TRANSFORMS.get(s.name).random for s in steps)
    samples = spec.samples if random else 1
    adaptation = Adaptation(steps, samples, spec.samples, spec.gradient)
    notes = [f"adaptive protector: {adaptation.label()}; "
             + "; ".join(adaptation.crafted_through())]
    if samples != spec.samples:
        notes.append(f"adaptive protector: the chain is deterministic, so one EoT sample is exact "
                     f"(the scenario asked for {spec.samples}; the same term is not recomputed)")
    return adaptation, notes
