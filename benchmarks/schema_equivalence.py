"""Issue 19's typed record: the judge before (``CaseJudge.judge`` editing a dict record) and after
(returning a ``Judgement`` that ``CaseRecord.apply`` takes in) write the same record fields, value
for value, on synthetic metric values: seven scenarios (one variant, attack, three prompt
variants, matched control, an editing exploit, two adaptive protectors) × five tier settings
(smoke; smoke with the null baseline and the noise floor; standard with FDS available and
unavailable, i.e. the fallback; paper with FDS unavailable, i.e. the error path) × two seeds,
and a style subject (the style kind's metric decides).

    ./dev python benchmarks/schema_equivalence.py [BEFORE]   # from the repository root (git)

BEFORE: the commit whose judge is compared (default c0d2eea, main just before the typed record
was merged; 0212340 was the commit the typed record was first written against).
"""
import copy
import importlib.util
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from audit.config.options import AuditOptions
from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_overrides
from audit.data.kinds import PERSON, STYLE
from audit.judge import case as new
from audit.parts import PROTECTIONS
from audit.parts.registry import PartSpec
from audit.results.records import new_record, scenario_record
from audit.run.planner import ProtectionInfo, plan_case

BEFORE = sys.argv[1] if len(sys.argv) > 1 else "c0d2eea"
old_source = subprocess.run(["git", "show", f"{BEFORE}:audit/judge/case.py"], capture_output=True,
                            text=True, check=True).stdout
old_path = Path(tempfile.mkdtemp()) / "old_judge_case.py"
old_path.write_text(old_source)
spec = importlib.util.spec_from_file_location("old_judge_case", old_path)
old = importlib.util.module_from_spec(spec)
sys.modules["old_judge_case"] = old
spec.loader.exec_module(old)


def norm(x):
    if isinstance(x, float) and math.isnan(x):
        return "NaN"
    if isinstance(x, dict):
        return {k: norm(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [norm(v) for v in x]
    return x


LEVEL = {"clean": 0.8, "protected": 0.3, "attacked": 0.5, "control": 0.78, "noise_floor": 0.79,
         "null_baseline": 0.7, "non_adaptive_protected": 0.32, "non_adaptive_attacked": 0.6}
SCENARIOS = ("no-attack", "jpeg-q75", "prompt-mismatch", "zero-sigma", "edit-no-attack",
             "adaptive-jpeg-q75", "adaptive-impress-photoguard")
TIERS = (("smoke", []), ("smoke", ["controls.null_baseline=true", "controls.noise_floor=true"]),
         ("standard", []), ("paper", []))


def info() -> ProtectionInfo:
    params = PROTECTIONS.get("pid").validate({}).model_dump()
    return ProtectionInfo(PartSpec("protection", "pid", params))


def synthetic(plan, names, rng, unavailable):
    values = {}
    for name in names:
        values[name] = {}
        for run in plan.unique_runs():
            lvl = LEVEL[run.role] + (0.3 if run.variant == 1 else 0) * (run.role == "attacked")
            vals = [lvl + rng.gauss(0, 0.03) for _ in range(6)]
            if name == "brisque" and run.role == "protected" and run.replicate == 1:
                vals[2] = None
            r = {"values": vals, "direction": "down", "implementation": "t", "level": "image",
                 "missing": vals.count(None), "notes": []}
            if name == "fds" and unavailable:
                r = {"values": [], "direction": "down", "unavailable": "weights missing"}
            values[name][run.identity] = r
    return values


n_checked = 0
configs = [(t, o, s, seed, u, PERSON) for t, o in TIERS for s in SCENARIOS for seed in (0, 1)
           for u in ((False, True) if t in ("standard", "paper") else (False,))]
configs += [("smoke", [], s, 0, False, STYLE) for s in ("no-attack", "jpeg-q75")]
for tier_name, overrides, scen_name, seed, unavailable, kind in configs:
    tier = get_tier(tier_name, parse_overrides(overrides)) if overrides else get_tier(tier_name)
    options = AuditOptions(protection="pid", tier=tier_name, seed=seed)
    scen = load_scenario(CATALOGUE_DIR / f"{scen_name}.yaml")
    plan = plan_case(scen, info(), tier, seed, kind=kind)
    editing = scen_name.startswith("edit-")
    rng = random.Random(seed * 7 + len(scen_name))
    metrics = ("edit_ssim",) if editing else None
    rec_old = {"flags": ["a transform flag"], "metrics": {}, "outcome": "error", "reason": ""}
    names, vm_old = old.metric_choice(tier, 64, scen, rec_old, kind, metrics)
    names = [*names, "fds", "brisque"] if not editing else names
    values = synthetic(plan, names, rng, unavailable)
    untrained = None if editing else {
        name: [{"values": [0.2 + rng.gauss(0, 0.03) for _ in range(6)], "direction": "down"}
               for _ in plan.seeds] for name in names}
    if unavailable and untrained is not None:
        untrained["fds"] = [{"values": [], "direction": "down", "unavailable": "weights missing"}
                            for _ in plan.seeds]
    old.CaseJudge(tier, seed).judge(plan, scen, copy.deepcopy(values), vm_old, rec_old,
                                    untrained=copy.deepcopy(untrained), editing=editing)
    record = new_record("c", options, scenario_record(scen), "s", tier_name)
    record.flags.append("a transform flag")
    choice = new.metric_choice(tier, 64, scen, kind, metrics)
    if choice.note is not None:
        record.verdict_metric_note = choice.note
    record.apply(new.CaseJudge(tier, seed).judge(
        plan, scen, copy.deepcopy(values), choice.verdict_metric,
        untrained=copy.deepcopy(untrained), note=choice.note, editing=editing))
    got = json.loads(json.dumps(record.dump(), allow_nan=True))
    want = json.loads(json.dumps(rec_old, allow_nan=True, default=str))
    got = {k: v for k, v in got.items() if k in want}
    assert set(want) <= set(record.dump()), set(want) - set(record.dump())
    if norm(got) != norm(want):
        for k in want:
            if norm(got.get(k)) != norm(want[k]):
                print("DIFF", tier_name, overrides, scen_name, seed, kind.name, k)
        sys.exit(1)
    n_checked += 1
    print(tier_name, overrides, scen_name, seed, unavailable, kind.name, want["outcome"],
          sorted(want))
print("equal in", n_checked, "configurations")
