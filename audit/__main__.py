"""``python -m audit``: list the parts, validate a scenario folder, print a case's plan.

    python -m audit ls [transforms|protections|exploits|metrics|scenarios]
    python -m audit validate [DIR]
    python -m audit plan [--tier smoke] [--protection pid[,random,...]] [--replicates K]
    [--audit-set KEY=VALUE] [DIR|FILE ...]

``ls`` and ``validate`` are thin wrappers over the registry and the scenario loader (as
lm-evaluation-harness's ``ls``/``validate`` are over its task manager): ``validate`` gives
exactly the errors the pytest plugin would, without running anything. ``plan`` prints every
run a case needs, by role × replicate, without a model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
