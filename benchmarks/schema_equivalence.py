"""Issue 19's typed record: the judge before (``CaseJudge.judge`` editing a dict record, at commit
0212340) and after (returning a ``Judgement`` that ``CaseRecord.apply`` takes in) write the same
record fields, value for value, on synthetic metric values for four scenarios (one variant,
attack, three prompt variants, matched control) × four tier settings (smoke; smoke with the null
baseline and the noise floor; standard with FDS available and unavailable, i.e. the fallback;
paper with FDS unavailable, i.e. the error path) × two seeds.

    ./dev python benchmarks/schema_equivalence.py   # from the repository root (needs git)
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
from audit.judge import case as new
from audit.parts.registry import PartSpec
from audit.results.records import new_record, scenario_record
from audit.run.planner import ProtectionInfo, plan_case

BEFORE = "0212340"  # the last commit before the typed record
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
         "null_baseline": 0.7}
n_checked = 0
for tier_name, overrides in (("smoke", []), ("smoke", ["controls.null_baseline=true", "controls.noise_floor=true"]),
                             ("standard", []), ("paper", [])):
    for scen_name in ("no-attack", "jpeg-q75", "prompt-mismatch", "zero-sigma"):
        for seed in (0, 1):
          for unavailable in ((False, True) if tier_name in ("standard", "paper") else (False,)):
            tier = get_tier(tier_name, parse_overrides(overrides)) if overrides else get_tier(tier_name)
            options = AuditOptions(protection="pid", tier=tier_name, seed=seed)
            scen = load_scenario(CATALOGUE_DIR / f"{scen_name}.yaml")
            plan = plan_case(scen, ProtectionInfo(PartSpec("protection", "pid", {"epsilon": 0.05})), tier, seed)
            rng = random.Random(seed * 7 + len(scen_name))
            names = ["subject_similarity", "brisque", "fds", "dlib_identity_similarity"]
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
            untrained = {name: [{"values": [0.2 + rng.gauss(0, 0.03) for _ in range(6)], "direction": "down"}
                                for _ in plan.seeds] for name in names}
            if unavailable:
                untrained["fds"] = [{"values": [], "direction": "down", "unavailable": "weights missing"} for _ in plan.seeds]
            # old
            rec_old = {"flags": ["a transform flag"], "metrics": {}, "outcome": "error", "reason": ""}
            _, vm_old = old.metric_choice(tier, 64, scen, rec_old)
            old.CaseJudge(tier, seed).judge(plan, scen, copy.deepcopy(values), vm_old, rec_old,
                                            untrained=copy.deepcopy(untrained))
            # new
            record = new_record("c", options, scenario_record(scen), "s", tier_name)
            record.flags.append("a transform flag")
            choice = new.metric_choice(tier, 64, scen)
            if choice.note is not None:
                record.verdict_metric_note = choice.note
            record.apply(new.CaseJudge(tier, seed).judge(plan, scen, copy.deepcopy(values), choice.verdict_metric,
                                                         untrained=copy.deepcopy(untrained), note=choice.note))
            got = json.loads(json.dumps(record.dump(), allow_nan=True))
            want = json.loads(json.dumps(rec_old, allow_nan=True, default=str))
            got = {k: v for k, v in got.items() if k in want}
            assert set(want) <= set(record.dump()), set(want) - set(record.dump())
            if norm(got) != norm(want):
                for k in want:
                    if norm(got.get(k)) != norm(want[k]):
                        print("DIFF", tier_name, overrides, scen_name, seed, k)
                sys.exit(1)
            n_checked += 1
            print(tier_name, overrides, scen_name, seed, unavailable, want["outcome"], sorted(want))
print("equal in", n_checked, "cases")
