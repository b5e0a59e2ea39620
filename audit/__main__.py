"""``python -m audit``: list the parts, validate a scenario folder, print a case's plan.

    python -m audit ls [transforms|protections|exploits|metrics|scenarios]
    python -m audit validate [DIR]
    python -m audit plan [--tier smoke] [--protection pid[,random,...]] [--replicates K]
    [--audit-set KEY=VALUE] [DIR|FILE ...]
    python -m audit plan --estimate [--tier paper --full-catalogue --model ...] [--results-dir]

``ls`` and ``validate`` are thin wrappers over the registry and the scenario loader (as
lm-evaluation-harness's ``ls``/``validate`` are over its task manager): ``validate`` gives
exactly the errors the pytest plugin would, without running anything. ``plan`` prints every
run a case needs, by role × replicate, without a model; ``plan --estimate`` what the audit
still needs after cache hits and its GPU-hours on this device (``audit/run/estimate.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit.errors import AuditError
from audit.parts.registry import InvalidParams

KINDS = {"transforms": "transform", "protections": "protection", "exploits": "exploit",
         "metrics": "metric"}


def _ls(what: str | None) -> int:
    """Names, descriptions and sources from the registry and the scenario files' headers; no
    part is imported (no torch): ``validate`` is the command that checks the files."""
    import yaml

    from audit.config.scenario import catalogue_files
    from audit.parts import REGISTRIES

    for plural, kind in KINDS.items():
        if what in (None, plural):
            legend = (" (↑/↓: the way a value means better protection · implementation)" if kind
                      == "metric" else "")
            print(f"{plural}:{legend}")
            for part in REGISTRIES[kind]:
                print(f"  {part.listing()}")
    if what in (None, "scenarios"):
        print("scenarios:")
        for path in catalogue_files():
            head = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            tags = ", ".join(map(str, head.get("tags") or []))
            print(f"  {path.stem:<28} {head.get('title', '?')} — {head.get('source', '?')} [tags: "
                  f"{tags}]")
    return 0


def _validate(folder: str | None) -> int:
    from audit.config.scenario import catalogue_files, load_scenario

    files = catalogue_files(Path(folder) if folder else None)
    if not files:
        print(f"{folder}: no scenario files (*.yaml not starting with '_')", file=sys.stderr)
        return 1
    errors = 0
    for path in files:
        try:
            scenario = load_scenario(path)
            print(f"ok     {path.name}  ({scenario.id} v{scenario.version}, "
                  f"{len(scenario.resolved_variants())} variant(s))")
        except AuditError as exc:
            errors += 1
            print(f"ERROR  {exc}")
    print(f"{len(files) - errors} of {len(files)} scenario files valid")
    return 1 if errors else 0


def _plan(args: argparse.Namespace) -> int:
    from audit.config.options import AuditOptions
    from audit.config.scenario import catalogue_files, load_scenario
    from audit.config.tiers import parse_overrides, validate_overrides
    from audit.parts.protections.build import build_protection
    from audit.run.planner import ProtectionInfo, plan_case

    options = AuditOptions(protection=args.protection, tier=args.tier, replicates=args.replicates,
                           overrides=parse_overrides(args.audit_set), seed=args.seed,
                           model=args.model,
                           exploit=args.exploit)
    tier = options.tier_settings
    validate_overrides(tier)
    infos = []
    for item in options.protections:  # --protection may list several (comma-separated)
        protection, spec = build_protection(item, tier, args.epsilon)
        infos.append(ProtectionInfo.of(protection, spec))
    paths: list[Path] = []
    for target in args.paths or [None]:
        p = Path(target) if target else None
        paths.extend([p] if p is not None and p.is_file() else catalogue_files(p))
    if args.estimate:
        return _estimate(args, options, paths)
    total: set[tuple] = set()
    alone = 0  # the distinct exploits of each protection audited on its own, summed
    for info in infos:
        own: set[tuple] = set()
        for path in paths:
            plan = plan_case(load_scenario(path), info, tier, args.seed)
            own.update(r.identity for r in plan.runs)
            print(plan.table(), end="\n\n")
        total |= own
        alone += len(own)
    what = f"{len(infos)} protections × " if len(infos) > 1 else ""
    shared = (f"; {alone} when each protection is audited on its own: the clean runs and "
              "matched controls are shared by the protections too" if len(infos) > 1 else "")
    print(f"{what}{len(paths)} scenario(s), {len(total)} distinct exploits in all (clean and "
          f"protected runs are shared by the scenarios{shared})")
    return 0


def _estimate(args: argparse.Namespace, options: Any, paths: list[Path]) -> int:
    """The work the audit still needs after cache hits and its GPU-hours (``audit/run/
    estimate.py``): the plugin's selection (the tier's tag unless --full-catalogue) × subjects."""
    import dataclasses

    from audit.config.scenario import load_scenario
    from audit.data.subjects import discover_subjects
    from audit.run.estimate import estimate
    from audit.run.progress import Progress
    from audit.run.session import AuditSession

    options = dataclasses.replace(
        options, results_dir=Path(args.results_dir).expanduser().resolve(), device=args.device,
        data=Path(args.data).expanduser().resolve() if args.data else None,
        full_catalogue=args.full_catalogue)
    tier = options.tier_settings
    tag = None if args.full_catalogue or args.paths else tier.data.get("catalogue_tag")
    scenarios = [s for s in map(load_scenario, paths) if not tag or tag in s.tags]
    subjects = discover_subjects(options.data)
    session = AuditSession(options, Progress(lambda line: print(line, file=sys.stderr)))
    cases = [(s, subject, item) for item in options.protections for s in scenarios
             for subject in subjects]
    several = (f"{len(options.protections)} protections × "
               if len(options.protections) > 1 else "")
    print(f"{several}{len(scenarios)} scenario(s) × {len(subjects)} subject(s) = {len(cases)} "
          "case(s) on "
          f"tier '{options.tier}' ({'every scenario' if not tag else f'tag {tag!r}'})")
    gpus = args.gpus or max(1, torch_gpus())
    for line in estimate(session, cases, run_calibration=not args.no_calibrate, gpus=gpus)[2]:
        print(line)
    return 0


def torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list registered parts and the bundled scenarios")
    ls.add_argument("what", nargs="?", choices=[*KINDS, "scenarios"])
    val = sub.add_parser("validate", help="check a scenario folder without running anything")
    val.add_argument("folder", nargs="?")
    plan = sub.add_parser("plan", help="print the runs each case needs (no model needed)")
    plan.add_argument("paths", nargs="*")
    plan.add_argument("--tier", default="smoke")
    plan.add_argument("--protection", default="pid",
                      help="a protection, or a comma-separated list of them")
    plan.add_argument("--replicates", type=int, default=None)
    plan.add_argument("--epsilon", type=float, default=None)
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument("--audit-set", action="append", default=[])
    plan.add_argument("--model", default="tiny", help="the model by name or folder (not loaded): "
                                                      "its family picks the tier's rows, e.g. PID "
                                                      "Table 8's SD 1.5 or 2.1 settings")
    plan.add_argument("--exploit", default=None, help="the standard exploit, e.g. lora or 'lora: "
                                                      "{rank: 32}'")
    plan.add_argument("--estimate", action="store_true",
                      help="instead of the tables: the protection crafts, fine-tunes and "
                           "generations the audit still needs after cache hits, and their "
                           "GPU-hours from a short calibration run on this device (cached)")
    plan.add_argument("--results-dir", default="audit-results",
                      help="with --estimate: the results folder whose cache is consulted")
    plan.add_argument("--data", default=None, help="with --estimate: the subjects' folder")
    plan.add_argument("--device", default="auto", help="with --estimate: the device calibrated")
    plan.add_argument("--full-catalogue", action="store_true",
                      help="with --estimate: every scenario, not the tier's default selection")
    plan.add_argument("--no-calibrate", action="store_true",
                      help="with --estimate: use a cached calibration only, never measure one")
    plan.add_argument("--gpus", type=int, default=None,
                      help="with --estimate: GPUs the runs spread over (default: visible ones)")
    args = parser.parse_args(argv)
    try:
        if args.command == "ls":
            return _ls(args.what)
        if args.command == "validate":
            return _validate(args.folder)
        return _plan(args)
    except (AuditError, InvalidParams, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
