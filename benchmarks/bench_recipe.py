"""Which smoke-tier DreamBooth recipe gives replicate-level verdicts the most power per second?

    .venv/bin/python benchmarks/bench_recipe.py [--recipes current,s250,s300] [--seeds 0-5] [--jobs 2]
        [--recipe NAME=STEPS,LR,BATCH[,SCHEDULE]] [--rows /tmp/bench-recipe-rows.jsonl]
        [--out benchmarks/results/bench-recipe.json] [--report-only]

The verdict's "protection had an effect" test (K replicates, replicate r = PID crafted with seed
r, clean and protected DreamBooth fine-tunes and generations with seed r) is a 95 % two-sided
t interval, K−1 df, on the paired replicate effects e_r = m_c,r − m_p,r (``subject_similarity``,
↓ = better protection, so effect = clean − protected), which must lie above 0. For every
candidate recipe and every seed r this runs, on the bundled subject and the embedded tiny model:

- PID (ε = 0.05, 100 PGD steps, seed r) and RandomNoise (ε = 0.05, seed r) — they do not depend
  on the recipe, so each is computed once per seed and cached under ``--cache``;
- DreamBooth (seed r) on the clean, PID-protected and random-protected images — the clean
  fine-tune once per (recipe, seed), shared by both protections, as the pairing requires;
- generation (8 images × 3 prompts × 10 DDPM steps, guidance 7.5, seed r) from each, and from
  the untrained model (the level a fine-tune must stay well above);
- ``subject_similarity`` means, hence e_r for PID and random.

Also, from the same fine-tuned models, a second generation with seed 1000·(r+1): the audit's
generation slot i uses seed ``seed + i``, so replicates with seeds r and r+1 share 23 of their
24 initial latents; the second set has disjoint latents across replicates and shows whether
that overlap changes the effects (generation is cheap next to fine-tuning).

Per recipe it reports the per-seed effects, mean, sd, mean/sd, the fraction of K-subsets of the
R seeds (K = 3, 4, 5) whose t interval lies above 0 (a power proxy for PID, a false-positive
proxy for random), the noncentral-t power at the measured mean/sd, the clean level and seconds
per fine-tune. Rows are appended to ``--rows`` (JSON lines) as units finish, so a run can be
stopped and resumed (units already there are skipped); the summary goes to ``--out``.

Threads: every worker runs ``torch.set_num_threads(1)`` (on this tiny model a second intra-op
thread gains ~10 %), and ``--jobs`` workers (default 2, one per core) run (recipe, seed) units
side by side, so the timings are single-thread timings with the other core busy with the
other worker (and, at times, with other people's jobs: the load average is recorded per unit).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC = "subject_similarity"
SUBJECT = "astronaut"
RESOLUTION = 64
EPSILON = 0.05
PGD_STEPS = 100
INSTANCE_PROMPT = "a photo of sks person"  # the smoke tier's protector / instance prompt
IMAGES_PER_PROMPT = 8
GEN_STEPS = 10
GUIDANCE = 7.5
ALT_GEN_SEED = lambda seed: 1000 * (seed + 1)  # noqa: E731 — disjoint generation slots per replicate
KS = (3, 4, 5)

from audit.config.settings import PID_EVAL_PROMPTS, PID_NEGATIVE_PROMPT  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: int
    lr: float
    batch_size: int
    schedule: str = "cosine"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "lr": self.lr, "batch_size": self.batch_size,
                "lr_schedule": self.schedule, "train_text_encoder": False, "prior_preservation": False}


RECIPES: dict[str, Recipe] = {
    "current": Recipe("current", 450, 3e-3, 4),
    "s250": Recipe("s250", 250, 4e-3, 4),
    "s300": Recipe("s300", 300, 3e-3, 4),
    "s200": Recipe("s200", 200, 5e-3, 4),
}


def parse_recipe(spec: str) -> Recipe:
    name, _, rest = spec.partition("=")
    parts = rest.split(",")
    if not name or len(parts) not in (3, 4):
        raise SystemExit(f"--recipe {spec!r}: expected NAME=STEPS,LR,BATCH[,SCHEDULE]")
    return Recipe(name, int(parts[0]), float(parts[1]), int(parts[2]), parts[3] if len(parts) == 4 else "cosine")


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            seeds.extend(range(int(a), int(b) + 1))
        elif part:
            seeds.append(int(part))
    return seeds


# ---------------------------------------------------------------- worker side

_STATE: dict[str, Any] = {}


def _init_worker(log_path: str) -> None:
    import torch

    torch.set_num_threads(1)
    from audit.data.subjects import load_subject
    from audit.diffusion import load_model

    _STATE["model"] = load_model("tiny", "cpu")
    _STATE["subject"] = load_subject(SUBJECT, None, RESOLUTION)
    _STATE["log"] = log_path


def _log(line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    text = f"[{stamp} pid {os.getpid()}] {line}"
    print(text, flush=True)
    with open(_STATE.get("log", os.devnull), "a") as fh:
        fh.write(text + "\n")


def _tier_stub():  # PID reads ctx.tier only when steps is None; pass a minimal object anyway
    from types import SimpleNamespace

    return SimpleNamespace(name="smoke", pgd_steps=PGD_STEPS)


def _protected(kind: str, seed: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    """uint8 protected images for (kind, seed), computed once and cached on disk."""
    import torch

    from audit.parts.protections.base import ProtectionContext
    from audit.run.progress import Progress

    path = cache / f"{kind}-eps{EPSILON}-pgd{PGD_STEPS}-seed{seed}.pt"
    if path.exists():
        saved = torch.load(path)
        return saved["images"], {**saved["info"], "cached": True}
    model, subject = _STATE["model"], _STATE["subject"]
    if kind == "pid":
        from audit.parts.protections.pid import PID

        protection = PID(epsilon=EPSILON, steps=PGD_STEPS)
    else:
        from audit.parts.protections.simple import RandomNoise

        protection = RandomNoise(epsilon=EPSILON)
    ctx = ProtectionContext(model=model, device=torch.device("cpu"), seed=seed, tier=_tier_stub(), progress=Progress(), subject=subject)
    t0 = time.perf_counter()
    out = protection.protect(subject.images, ctx)
    seconds = time.perf_counter() - t0
    info = {"seconds": round(seconds, 2), "sha256": hashlib.sha256(out.images.numpy().tobytes()).hexdigest()[:16],
            "linf_levels": int((out.images.to(torch.int16) - (subject.images * 255).round().to(torch.int16)).abs().max())}
    if kind == "pid":
        info["objective_final_8bit"] = out.info.get("objective_final_8bit")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"images": out.images, "info": info}, tmp)
    os.replace(tmp, path)
    return out.images, {**info, "cached": False}


def _generate_similarity(unet: Any, text_encoder: Any, seed: int) -> tuple[float, list[float], float]:
    from audit.diffusion.sampling import GenerationConfig, generate
    from audit.parts.metrics.subject import SubjectSimilarity
    from audit.run.progress import Progress

    model, subject = _STATE["model"], _STATE["subject"]
    config = GenerationConfig(prompts=tuple(PID_EVAL_PROMPTS), images_per_prompt=IMAGES_PER_PROMPT, steps=GEN_STEPS,
                              guidance_scale=GUIDANCE, negative_prompt=PID_NEGATIVE_PROMPT, seed=seed)
    t0 = time.perf_counter()
    images = generate(model, unet, text_encoder, config, RESOLUTION, Progress())
    seconds = time.perf_counter() - t0
    values = SubjectSimilarity().compute(images, subject.images).values
    return sum(values) / len(values), [round(v, 5) for v in values], seconds


def run_unit(task: tuple[dict[str, Any], int, str]) -> dict[str, Any]:
    import torch

    from audit.diffusion.training import FinetuneConfig
    from audit.parts.exploits.dreambooth import finetune
    from audit.run.progress import Progress

    recipe_d, seed, cache_dir = task
    recipe = Recipe(recipe_d["name"], recipe_d["steps"], recipe_d["lr"], recipe_d["batch_size"], recipe_d["lr_schedule"])
    cache = Path(cache_dir)
    model, subject = _STATE["model"], _STATE["subject"]
    started = time.time()
    load_start = os.getloadavg()
    _log(f"{recipe.name} seed {seed}: start (load {load_start[0]:.2f})")
    row: dict[str, Any] = {"recipe": recipe.to_dict(), "seed": seed, "gen_seed": seed, "alt_gen_seed": ALT_GEN_SEED(seed),
                           "torch_threads": torch.get_num_threads(), "worker_pid": os.getpid()}
    inputs = {"clean": subject.images}
    for kind in ("pid", "random"):
        images_u8, info = _protected(kind, seed, cache)
        inputs[kind] = images_u8.float() / 255
        row[f"{kind}_protection"] = info
    # untrained level (recipe-independent, cheap): generation from the base model
    m, _, gs = _generate_similarity(model.unet, model.text_encoder, seed)
    row["untrained"] = round(m, 5)
    row["finetune_seconds"], row["generate_seconds"] = {}, {"untrained": round(gs, 2)}
    row["loss_last_10pct"] = {}
    for kind in ("clean", "pid", "random"):
        cfg = FinetuneConfig(instance_prompt=INSTANCE_PROMPT, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                             train_text_encoder=False, seed=seed, lr_schedule=recipe.schedule)
        t0 = time.perf_counter()
        unet, text_encoder, info = finetune(model, inputs[kind], cfg, Progress())
        ft = time.perf_counter() - t0
        row["finetune_seconds"][kind] = round(ft, 2)
        row["loss_last_10pct"][kind] = info.get("loss_last_10pct")
        m, values, gs = _generate_similarity(unet, text_encoder, seed)
        row[f"m_{kind}"] = round(m, 5)
        row[f"values_{kind}"] = values
        row["generate_seconds"][kind] = round(gs, 2)
        m_alt, _, gs_alt = _generate_similarity(unet, text_encoder, ALT_GEN_SEED(seed))
        row[f"m_{kind}_alt"] = round(m_alt, 5)
        row["generate_seconds"][f"{kind}_alt"] = round(gs_alt, 2)
        _log(f"{recipe.name} seed {seed}: {kind:6s} fine-tune {ft:5.1f}s, gen {gs:4.1f}s, m={m:.4f} (alt {m_alt:.4f})")
        del unet, text_encoder
    row["pid_effect"] = round(row["m_clean"] - row["m_pid"], 5)
    row["random_effect"] = round(row["m_clean"] - row["m_random"], 5)
    row["pid_effect_alt"] = round(row["m_clean_alt"] - row["m_pid_alt"], 5)
    row["random_effect_alt"] = round(row["m_clean_alt"] - row["m_random_alt"], 5)
    row["loadavg_start"] = [round(x, 2) for x in load_start]
    row["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    row["unit_seconds"] = round(time.time() - started, 1)
    _log(f"{recipe.name} seed {seed}: done in {row['unit_seconds']}s — PID effect {row['pid_effect']:+.4f}, "
         f"random {row['random_effect']:+.4f}, clean {row['m_clean']:.4f} (load {row['loadavg_end'][0]:.2f})")
    return row


# ---------------------------------------------------------------- statistics

def t_crit(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def interval_above_zero(values: list[float]) -> bool:
    k = len(values)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return mean - t_crit(k - 1) * sd / math.sqrt(k) > 0


def subset_fraction(values: list[float], k: int) -> tuple[int, int] | None:
    if len(values) < k:
        return None
    combos = list(itertools.combinations(values, k))
    return sum(interval_above_zero(list(c)) for c in combos), len(combos)


def nct_power(d: float, k: int) -> float:
    """P(the K-replicate t interval lies above 0) if effects are N(μ, σ²) with μ/σ = d."""
    from scipy import stats

    return float(stats.nct.sf(t_crit(k - 1), k - 1, d * math.sqrt(k)))


def describe(values: list[float]) -> dict[str, Any]:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    out: dict[str, Any] = {"values": values, "mean": round(mean, 5), "sd": round(sd, 5),
                           "mean_over_sd": round(mean / sd, 3) if sd and sd > 0 else None}
    for k in KS:
        frac = subset_fraction(values, k)
        out[f"subsets_above_0_K{k}"] = None if frac is None else {"significant": frac[0], "of": frac[1], "fraction": round(frac[0] / frac[1], 3)}
    if out["mean_over_sd"] is not None:
        out["nct_power"] = {f"K{k}": round(nct_power(out["mean_over_sd"], k), 3) for k in (3, 4, 5, 6, 8)}
    return out


def summarise(rows: list[dict[str, Any]], recipe_order: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    names = [n for n in recipe_order if any(r["recipe"]["name"] == n for r in rows)]
    names += sorted({r["recipe"]["name"] for r in rows} - set(names))
    for name in names:
        rs = sorted((r for r in rows if r["recipe"]["name"] == name), key=lambda r: r["seed"])
        fts = [s for r in rs for s in r["finetune_seconds"].values()]
        gens = [s for r in rs for k, s in r["generate_seconds"].items()]
        entry: dict[str, Any] = {
            "recipe": rs[0]["recipe"],
            "seeds": [r["seed"] for r in rs],
            "seconds_per_finetune": {"mean": round(statistics.mean(fts), 2), "min": min(fts), "max": max(fts), "n": len(fts)},
            "seconds_per_finetune_step": round(statistics.mean(fts) / rs[0]["recipe"]["steps"], 4),
            "seconds_per_generation": round(statistics.mean(gens), 2),
            "clean": {"values": [r["m_clean"] for r in rs], "mean": round(statistics.mean(r["m_clean"] for r in rs), 4),
                      "sd": round(statistics.stdev([r["m_clean"] for r in rs]), 4) if len(rs) > 1 else None},
            "untrained_mean": round(statistics.mean(r["untrained"] for r in rs), 4),
        }
        if len(rs) > 1:
            for key in ("pid_effect", "random_effect", "pid_effect_alt", "random_effect_alt"):
                entry[key] = describe([r[key] for r in rs])
            # 48 generations per fine-tune: the mean of the two disjoint 24-image sets (same fine-tunes)
            for kind in ("pid", "random"):
                entry[f"{kind}_effect_48gen"] = describe([round((r[f"{kind}_effect"] + r[f"{kind}_effect_alt"]) / 2, 5) for r in rs])
            # how much of a replicate's effect is generation noise: SE of the 24-slot mean of the paired
            # slot differences (clean slot i − protected slot i), RMS over seeds
            for kind in ("pid", "random"):
                ses = [statistics.stdev([c - q for c, q in zip(r["values_clean"], r[f"values_{kind}"], strict=True)])
                       / math.sqrt(len(r["values_clean"])) for r in rs]
                entry[f"{kind}_effect_generation_se_24"] = round(math.sqrt(statistics.mean(s * s for s in ses)), 5)
            pe, re_ = [r["pid_effect"] for r in rs], [r["random_effect"] for r in rs]
            entry["corr_pid_random_effect"] = round(statistics.correlation(pe, re_), 3)
            entry["protected_sd"] = {k: round(statistics.stdev([r[f"m_{k}"] for r in rs]), 4) for k in ("pid", "random")}
        calm = [s for r in rs if r["loadavg_start"][0] < 2.5 and r["loadavg_end"][0] < 2.5 for s in r["finetune_seconds"].values()]
        entry["seconds_per_finetune_low_load"] = {"mean": round(statistics.mean(calm), 2), "n": len(calm)} if calm else None
        summary[name] = entry
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = ["recipe    steps lr     s/ft  clean(±sd)     PID effect mean±sd (m/sd)  random mean±sd   "
             "PID K3/K4/K5 subsets     random K3     PID nct-power K3/K4/K5  [alt-gen PID m/sd]"]
    for name, e in summary.items():
        if "pid_effect" not in e:
            lines.append(f"{name}: {len(e['seeds'])} seed(s) only")
            continue
        p, q, pa = e["pid_effect"], e["random_effect"], e["pid_effect_alt"]

        def frac(d: dict[str, Any], k: int) -> str:
            f = d.get(f"subsets_above_0_K{k}")
            return "—" if f is None else f"{f['significant']}/{f['of']}"

        power = p.get("nct_power", {})
        lines.append(
            f"{name:9s} {e['recipe']['steps']:4d} {e['recipe']['lr']:.0e} {e['seconds_per_finetune']['mean']:5.1f}  "
            f"{e['clean']['mean']:.3f}±{e['clean']['sd'] or 0:.3f}    {p['mean']:+.4f}±{p['sd']:.4f} ({p['mean_over_sd']})"
            f"      {q['mean']:+.4f}±{q['sd']:.4f}  {frac(p, 3):>5s} {frac(p, 4):>5s} {frac(p, 5):>5s}    {frac(q, 3):>5s}"
            f"        {power.get('K3', float('nan')):.2f}/{power.get('K4', float('nan')):.2f}/{power.get('K5', float('nan')):.2f}"
            f"        [{pa['mean']:+.4f}±{pa['sd']:.4f} ({pa['mean_over_sd']})]"
        )
        lines.append(f"          PID per seed {[round(v, 4) for v in p['values']]}  random {[round(v, 4) for v in q['values']]}")
        p48, q48 = e["pid_effect_48gen"], e["random_effect_48gen"]
        lines.append(f"          48 generations/fine-tune: PID {p48['mean']:+.4f}±{p48['sd']:.4f} (m/sd {p48['mean_over_sd']}, "
                     f"K3/K4/K5 subsets {frac(p48, 3)} {frac(p48, 4)} {frac(p48, 5)}), random {q48['mean']:+.4f}±{q48['sd']:.4f} "
                     f"(K3 {frac(q48, 3)}); generation SE of a 24-slot effect {e['pid_effect_generation_se_24']}; "
                     f"corr(PID, random effect) {e['corr_pid_random_effect']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default="current,s250,s300", help=f"comma list of built-in recipes: {', '.join(RECIPES)}")
    parser.add_argument("--recipe", action="append", default=[], help="extra recipe NAME=STEPS,LR,BATCH[,SCHEDULE]")
    parser.add_argument("--seeds", default="0-5", help="e.g. 0-5 or 0,1,2")
    parser.add_argument("--jobs", type=int, default=2, help="single-thread worker processes (one per core)")
    parser.add_argument("--rows", type=Path, default=Path("/tmp/bench-recipe-rows.jsonl"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bench-recipe-cache"))
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench-recipe.log"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/bench-recipe.json")
    parser.add_argument("--report-only", action="store_true", help="summarise --rows without running anything")
    args = parser.parse_args()

    recipes = [RECIPES[n] for n in args.recipes.split(",") if n] + [parse_recipe(s) for s in args.recipe]
    seeds = parse_seeds(args.seeds)
    args.cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not args.report_only:
        done = {(r["recipe"]["name"], r["seed"]) for r in read_rows(args.rows)}
        tasks = [(rc.to_dict(), s, str(args.cache)) for rc in recipes for s in seeds if (rc.name, s) not in done]
        print(f"{len(tasks)} units to run ({len(done)} already in {args.rows}), {args.jobs} single-thread workers", flush=True)
        if tasks:
            ctx = mp.get_context("spawn")
            with ctx.Pool(args.jobs, initializer=_init_worker, initargs=(str(args.log),), maxtasksperchild=None) as pool:
                for row in pool.imap(run_unit, tasks, chunksize=1):
                    with args.rows.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    rows = read_rows(args.rows)
    wanted = {rc.name for rc in recipes}
    rows = [r for r in rows if r["recipe"]["name"] in wanted] if not args.report_only else rows
    import torch

    summary = summarise(rows, [rc.name for rc in recipes] + list(RECIPES))
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads_per_worker": 1,
        "threads_note": "torch.set_num_threads(1) in every worker (a 2nd intra-op thread gains ~10 % on this model); "
                        "workers run side by side, one per core, so timings are single-thread with the other core busy "
                        "(and at times shared with other users' jobs: load averages per row)",
        "metric": METRIC,
        "subject": SUBJECT,
        "resolution": RESOLUTION,
        "epsilon": EPSILON,
        "pgd_steps": PGD_STEPS,
        "instance_prompt": INSTANCE_PROMPT,
        "generation": {"prompts": list(PID_EVAL_PROMPTS), "images_per_prompt": IMAGES_PER_PROMPT, "steps": GEN_STEPS,
                       "guidance_scale": GUIDANCE, "negative_prompt": PID_NEGATIVE_PROMPT, "seed": "r (and 1000·(r+1) for *_alt)"},
        "effect": "m_clean − m_protected (subject_similarity; > 0 = protection lowered the exploit's outcome)",
        "test": "95 % two-sided t interval, K−1 df, over K paired replicate effects, must lie above 0",
        "seconds_this_invocation": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1) + "\n")
    print(table(summary))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
