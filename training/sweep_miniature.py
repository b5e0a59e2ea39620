"""Sweep VAE candidates for a miniature on which PID's mechanism acts (issue 18), time-boxed.

    python training/sweep_miniature.py --device cuda --deadline-s 420 --out-tar OUT/miniature.tar.gz
    python training/sweep_miniature.py --device cpu --smoke --deadline-s 900   # the whole path, tiny steps

1. Trains VAE candidates (``CANDIDATES``: the shipped recipe trained longer; + a high-frequency
   loss; + a patch-GAN; deeper encoders; KL weight 0 — the levers named in the README's smoke-tier section) in
   parallel worker processes with ``training/train_tiny.py --stage vae``, each time-boxed to
   the VAE phase's end, probing PID's reach every quarter of its steps and at the end
   (``benchmarks/bench_miniature.py`` on the saved fp16 weights, as the toolkit loads them).
   The shipped VAE is probed beside them as the reference.
2. Picks one by ``RULE`` and trains the UNet + text encoder of ``tiny`` and of ``tiny-2`` on it
   (``train_tiny.py --stage unet``, the recipe's 2500 steps unless the time box cuts them),
   in the ``audit/models/weights/{tiny,tiny_2}`` layout with ``training_log.json`` and
   ``SHA256SUMS``.
3. Packs ``sweep.json`` (every row), the logs, both variants' weights and the best few
   candidate VAEs into ``--out-tar`` (each tar < 15.5 MiB of content; what does not fit goes
   into ``…-2.tar.gz``, ``…-3.tar.gz``; files shared between folders are tar hard links).

Every phase ends by a wall-clock deadline (``--deadline-s`` from the start): training loops
stop themselves (``--deadline-at``), and a worker still running past its phase's end is killed.
A compact table goes to stdout as rows arrive (flushed), so a timeout still shows results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))
sys.path.insert(0, str(ROOT / "benchmarks"))

HF = ["--grad-weight", "1", "--fft-weight", "1"]  # L1 on image gradients + FFT magnitudes
GAN = ["--gan-weight", "0.5", "--gan-start-frac", "0.25"]  # SD kl-f8: disc_weight 0.5
# name → (what it tests, train_tiny.py arguments). Levers: longer training,
# a high-frequency loss, a patch-GAN (SD's VAE had one), a deeper encoder, the KL weight.
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "A-long": ("shipped config and objective (L1+MSE, KL 1e-6), trained longer", []),
    "B-hf": ("+ high-frequency loss (gradient L1 + FFT magnitude L1)", HF),
    "C-hf-gan": ("+ high-frequency loss + patch-GAN (hinge, adaptive weight 0.5)", HF + GAN),
    "D-deep-hf-gan": ("deep encoder 32-64-128 x2 blocks + HF + patch-GAN", ["--vae-config", "deep"] + HF + GAN),
    "E-hf-kl0": ("KL weight 0 + high-frequency loss", ["--kl-weight", "0"] + HF),
    "F-hf-gan-kl0": ("shipped architecture + HF + patch-GAN + KL weight 0", ["--kl-weight", "0"] + HF + GAN),
    "G-deep-hf-gan-kl0": ("deep encoder + HF + patch-GAN + KL weight 0", ["--vae-config", "deep", "--kl-weight", "0"] + HF + GAN),
    # SD's factor 8 at 128 px (a 16x16x4 latent, as at 64 px with factor 4): each latent element
    # sees an 8x8 patch through a fourth level, as on SD.
    "H-f8-hf": ("factor 8 at 128 px, shipped widths 32-64-64-64 + HF", ["--vae-config", "f8", "--resolution", "128"] + HF),
    "I-f8-deep-hf": ("factor 8 at 128 px, 32-64-128-128 x2 blocks + HF",
                     ["--vae-config", "f8-deep", "--resolution", "128"] + HF),
    "J-f8-wide-hf": ("factor 8 at 128 px, 64-128-256-256 x2 blocks (half SD's widths) + HF",
                     ["--vae-config", "f8-wide", "--resolution", "128"] + HF),
    "K-f8-deep": ("factor 8 at 128 px, 32-64-128-128 x2 blocks, the shipped objective (L1+MSE)",
                  ["--vae-config", "f8-deep", "--resolution", "128"]),
}
SHIPPED = "shipped"
RULE = ("among candidates trained at least --min-steps VAE steps whose held-out PSNR (256 held-out crops, as training_log.json) is at least "
        "the shipped VAE's minus 1 dB, the largest RMS shift of log sigma^2 under PID (L_add-log, eps 0.05, "
        "100 PGD iterations of 1/255, 8-bit output); ties by PSNR. If none qualifies: the same within 3 dB, "
        "else the largest shift of all (flagged)")
MID_PROBE_FRACTIONS = (0.25, 0.5, 0.75)


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- worker (one VAE candidate)


def worker(args: argparse.Namespace) -> None:
    """Train one candidate (or probe the shipped VAE), probing as it goes; write row.json."""
    import torch
    from bench_miniature import probe

    torch.set_num_threads(args.threads)
    folder = args.work / args.worker
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    row: dict[str, Any] = {"name": args.worker, "started": started}
    smoke = args.smoke
    steps = 2 if smoke else 100
    try:
        if args.worker == SHIPPED:
            row["description"] = "the shipped VAE (audit/models/weights/tiny/vae), not retrained"
            row["vae"] = str(ROOT / "audit" / "models" / "weights" / "tiny" / "vae")
            row["training"] = json.loads((ROOT / "audit/models/weights/tiny/training_log.json").read_text())["vae"]
            row["training"].pop("loss_curve", None)
        else:
            description, extra = CANDIDATES[args.worker]
            row.update(description=description, arguments=extra)
            held_mid = 8 if smoke else 64
            source_images: list[Any] = []

            def callback(step: int, total: int, vae: torch.nn.Module) -> dict[str, Any] | None:
                targets = {max(0, round(total * f) - 1) for f in MID_PROBE_FRACTIONS}
                if step not in targets or step == total - 1:
                    return None
                try:
                    return mid_probe(step, total, vae)
                except Exception:  # a probe's failure must not end the training
                    log(traceback.format_exc())
                    return {"step": step, "of": total, "error": traceback.format_exc()}

            def mid_probe(step: int, total: int, vae: torch.nn.Module) -> dict[str, Any]:
                result = probe(vae, device=args.device, steps=steps, attacks=("pid", "sigma"), held_out=0)
                if not source_images:
                    from sources import SOURCES

                    source_images.extend(source.load() for source in SOURCES)
                from train_tiny import CropSampler, reconstruction_quality

                crops = CropSampler(source_images, 2, held_out=True, device=args.device,
                                    size=int(vae.config.sample_size)).sample(held_mid)[0]
                vae.eval()
                quality = reconstruction_quality(vae, crops)
                pid, sigma = result["attacks"]["pid"], result["attacks"]["sigma"]
                entry = {"step": step, "of": total, "pid_rms_logvar_shift": pid["rms_logvar_shift"],
                         "pid_var_ratio_mean": pid["var_ratio_mean"], "pid_var_ratio_p90": pid["var_ratio_p90"],
                         "pid_mu_shift_over_spread": pid["rms_mu_shift_over_spread"],
                         "sigma_rms_logvar_shift": sigma["rms_logvar_shift"],
                         "sigma_var_ratio_mean": sigma["var_ratio_mean"], "mean_logvar": pid["mean_logvar"][0],
                         f"held_out_psnr_db_{held_mid}_crops": quality["psnr_db"]}
                log(f"  [{args.worker}] step {step + 1}/{total}: PID dlogvar {entry['pid_rms_logvar_shift']:.3f} "
                    f"sigma-only {entry['sigma_rms_logvar_shift']:.3f} logvar {entry['mean_logvar']:.2f} "
                    f"held-out {quality['psnr_db']:.2f} dB")
                return entry

            from train_tiny import main as train_main

            train_deadline = args.phase_end - args.final_reserve
            seconds = max(5.0, train_deadline - time.time() - len(MID_PROBE_FRACTIONS) * args.mid_probe_seconds)
            argv = ["--stage", "vae", "--out", str(folder), "--device", args.device, "--seed", "0",
                    "--vae-steps", str(6 if smoke else args.vae_max_steps), "--vae-batch", str(4 if smoke else args.vae_batch),
                    "--vae-seconds", f"{seconds:.1f}", "--deadline-at", f"{train_deadline:.1f}",
                    "--log-every", str(2 if smoke else 250), *(["--tf32"] if args.tf32 else []), *extra]
            if smoke:
                argv += ["--disc-channels", "16", "--eval-crops", "16"]
            row["train_tiny_argv"] = argv
            train_main(argv, vae_callback=callback)
            training = json.loads((folder / "training_log.json").read_text())["vae"]
            row["training"] = {k: v for k, v in training.items() if k != "loss_curve"}
            row["training"]["last_loss"] = training["loss_curve"][-1] if training["loss_curve"] else None
            row["vae"] = str(folder / "vae")
        row["probe"] = probe(row["vae"], device=args.device, steps=steps, held_out=16 if smoke else 256)
    except Exception:  # a failed candidate is a row, not the end of the sweep
        row["error"] = traceback.format_exc()
        log(row["error"])
    row["seconds"] = round(time.time() - started, 1)
    (folder / "row.json").write_text(json.dumps(row, indent=1) + "\n")


# ---------------------------------------------------------------- parent


def table_header() -> str:
    return (f"{'candidate':<18} {'steps':>6} {'s/step':>7} {'held':>6} {'subj':>6} | {'PID dlv':>7} {'var x':>7} "
            f"{'p90':>6} {'dmu/sd':>6} {'dec dB':>6} | {'sig dlv':>7} {'var x':>7} | {'noise':>5} | "
            f"{'Mpar':>5} {'encGF':>5} {'sec':>5}")


def table_row(row: dict[str, Any]) -> str:
    name = row["name"]
    if "probe" not in row:
        return f"{name:<18} FAILED: {row.get('error', 'no result').strip().splitlines()[-1][:110]}"
    p = row["probe"]
    pid, sig, noise = p["attacks"]["pid"], p["attacks"]["sigma"], p["attacks"]["noise"]
    rec = p["reconstruction"]
    training = row.get("training", {})
    box = training.get("timebox") or {}
    spp = box.get("seconds_per_step")
    return (f"{name:<18} {training.get('steps', 0):>6} {spp if spp is not None else float('nan'):>7.4f} "
            f"{rec['held_out_crops']['psnr_db']:>6.2f} {rec['subject_unseen']['psnr_db']:>6.2f} | "
            f"{pid['rms_logvar_shift']:>7.3f} {pid['var_ratio_mean']:>7.3g} {pid['var_ratio_p90']:>6.3g} "
            f"{pid['rms_mu_shift_over_spread']:>6.3f} {pid['decode_psnr_db']:>6.1f} | "
            f"{sig['rms_logvar_shift']:>7.3f} {sig['var_ratio_mean']:>7.3g} | {noise['rms_logvar_shift']:>5.3f} | "
            f"{p['cost']['params_m']:>5.2f} {p['cost']['encoder_gflops']:>5.2f} {row.get('seconds', 0):>5.0f}")


def choose(rows: list[dict[str, Any]], min_steps: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Apply ``RULE`` to candidates trained at least ``min_steps`` steps; returns (row, how)."""
    shipped = next((r for r in rows if r["name"] == SHIPPED and "probe" in r), None)
    reference = (shipped["probe"]["reconstruction"]["held_out_crops"]["psnr_db"] if shipped
                 else 29.35)  # the shipped training_log.json's held-out PSNR
    trained = [r for r in rows if r["name"] != SHIPPED and "probe" in r
               and (r.get("training") or {}).get("steps", 0) >= min_steps]

    def psnr(r: dict[str, Any]) -> float:
        return r["probe"]["reconstruction"]["held_out_crops"]["psnr_db"]

    def key(r: dict[str, Any]) -> tuple[float, float]:
        return (r["probe"]["attacks"]["pid"]["rms_logvar_shift"], psnr(r))

    decision: dict[str, Any] = {"rule": RULE, "reference_held_out_psnr_db": reference, "min_steps": min_steps,
                                "too_few_steps": [r["name"] for r in rows if r["name"] != SHIPPED and "probe" in r
                                                  and r not in trained]}
    for tier, margin in (("within 1 dB", 1.0), ("within 3 dB (rule relaxed)", 3.0), ("any (rule not met)", 1e9)):
        eligible = [r for r in trained if psnr(r) >= reference - margin]
        if eligible:
            best = max(eligible, key=key)
            decision.update(tier=tier, eligible=[r["name"] for r in eligible], chosen=best["name"])
            if shipped:
                decision["improves_on_shipped"] = key(best)[0] > shipped["probe"]["attacks"]["pid"]["rms_logvar_shift"]
            return best, decision
    decision.update(tier="none", chosen=None)
    return None, decision


def run_workers(names: list[str], args: argparse.Namespace, phase_end: float, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run the candidate workers, ``args.jobs`` at a time, and kill any past ``phase_end`` + grace."""
    pending, running, rows = list(names), {}, []
    offsets: dict[str, int] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            needed = args.final_reserve + len(MID_PROBE_FRACTIONS) * args.mid_probe_seconds + args.min_worker_seconds
            if name != SHIPPED and phase_end - time.time() < needed:
                rows.append({"name": name, "error": "not started: too little time left in the VAE phase"})
                log(table_row(rows[-1]))
                continue
            (args.work / name).mkdir(parents=True, exist_ok=True)
            out = open(args.work / name / "worker.log", "w")  # closed when the worker ends
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--work", str(args.work),
                   "--device", args.device, "--phase-end", f"{phase_end:.1f}", "--threads", str(args.threads),
                   "--final-reserve", str(args.final_reserve), "--mid-probe-seconds", str(args.mid_probe_seconds),
                   "--vae-batch", str(args.vae_batch), "--vae-max-steps", str(args.vae_max_steps)]
            cmd += ["--smoke"] if args.smoke else []
            cmd += [] if args.tf32 else ["--no-tf32"]
            running[name] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT), out)
            log(f"started {name} (pid {running[name][0].pid})")
        time.sleep(0.5)
        for name in running:  # echo the workers' probe lines as they come
            path = args.work / name / "worker.log"
            with open(path, "rb") as handle:
                handle.seek(offsets.get(name, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]
            offsets[name] = offsets.get(name, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if line.startswith("  ["):
                    log(line)
        for name, (proc, out) in list(running.items()):
            overdue = time.time() > phase_end + args.grace
            if proc.poll() is None and not overdue:
                continue
            if proc.poll() is None:
                proc.kill()  # our own child, by its handle
                proc.wait()
                log(f"killed {name}: past the phase's end")
            out.close()
            del running[name]
            row_path = args.work / name / "row.json"
            row = json.loads(row_path.read_text()) if row_path.is_file() else {"name": name, "error": "killed at the deadline or crashed; see worker.log"}
            row["returncode"] = proc.returncode
            rows.append(row)
            log(table_row(row))
            if "training" in row and row["training"].get("probes"):
                trajectory = ", ".join(f"{p['step'] + 1}: {p['pid_rms_logvar_shift']:.2f}/{p['sigma_rms_logvar_shift']:.2f}"
                                       for p in row["training"]["probes"] if "error" not in p)
                log(f"  [{name}] PID/sigma-only dlogvar during training: {trajectory}")
    return rows


def ensure_data() -> str:
    """Load the training photographs and the bundled subject once before any worker starts.
    Without pooch (and with no network), scikit-image reads only the files its wheel ships; if
    one is missing there, it is restored from ``.whl/skimage-data`` (carried with the wheels)."""
    from sources import SOURCES

    from audit.data.subjects import bundled_subject

    try:
        [source.load() for source in SOURCES]
        bundled_subject(64)
        return "all photographs load"
    except Exception as exc:  # a missing scikit-image data file
        import skimage.data

        target = Path(skimage.data.__file__).parent
        restored = []
        for path in sorted((ROOT / ".whl" / "skimage-data").glob("*")):
            if not (target / path.name).is_file():
                shutil.copy(path, target / path.name)
                restored.append(path.name)
        [source.load() for source in SOURCES]
        bundled_subject(64)
        return f"restored {restored} into {target} after {type(exc).__name__}: {exc}"


def prebuild_tokenizer() -> str:
    """Write the CLIP tokenizer files into the cache now, so that no worker imports open_clip
    (only its BPE file is needed; found on sys.path if ``import open_clip`` fails)."""
    import audit.diffusion.tokenizer as tokenizer

    try:
        tokenizer.tokenizer_files()
        return "built with open_clip"
    except Exception as exc:  # any import failure of open_clip or its dependencies
        for entry in sys.path:
            candidate = Path(entry or ".") / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
            if candidate.is_file():
                tokenizer._bpe_path = lambda path=candidate: path  # type: ignore[assignment]
                tokenizer.tokenizer_files()
                return f"built from {candidate} without importing open_clip ({type(exc).__name__}: {exc})"
        raise


def train_unets(chosen: dict[str, Any], args: argparse.Namespace, deadline: float, env: dict[str, str]) -> dict[str, Any]:
    """tiny and tiny-2 UNet + text encoder on the chosen VAE, in parallel, by ``deadline``."""
    weights = args.work / "weights"
    candidate_folder = Path(chosen["vae"]).parent
    procs = {}
    seconds = max(5.0, deadline - time.time() - args.unet_overhead)
    resolution = json.loads((candidate_folder / "vae" / "config.json").read_text()).get("sample_size", 64)
    for variant, folder_name in (("tiny", "tiny"), ("tiny-2", "tiny_2")):
        if variant not in args.variants.split(","):
            continue
        out = weights / folder_name
        out.mkdir(parents=True, exist_ok=True)
        if variant == "tiny" and (candidate_folder / "training_log.json").is_file():  # keep the VAE's log beside
            shutil.copy(candidate_folder / "training_log.json", out / "training_log.json")
        cmd = [sys.executable, str(ROOT / "training" / "train_tiny.py"), "--stage", "unet", "--variant", variant,
               "--vae-from", str(candidate_folder), "--out", str(out), "--device", args.device,
               "--unet-seconds", f"{seconds:.1f}", "--deadline-at", f"{deadline - 8:.1f}", "--log-every", "250",
               "--resolution", str(resolution),
               *(["--tf32"] if args.tf32 else [])]
        if args.smoke:
            cmd += ["--unet-steps", "4", "--unet-batch", "4", "--log-every", "1"]
        handle = open(args.work / f"unet-{folder_name}.log", "w")
        procs[variant] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT), handle, out)
        log(f"started UNet {variant} on {chosen['name']} (budget {seconds:.0f} s)")
    result = {}
    for variant, (proc, handle, out) in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            log(f"killed UNet {variant}: past the deadline")
        handle.close()
        info: dict[str, Any] = {"returncode": proc.returncode, "folder": str(out),
                                "complete": (out / "SHA256SUMS").is_file()}
        log_path = out / "training_log.json"
        if log_path.is_file():
            unet = json.loads(log_path.read_text()).get("unet", {})
            info.update({k: unet.get(k) for k in ("steps", "seconds", "timebox")},
                        last_loss=unet["loss_curve"][-1] if unet.get("loss_curve") else None)
        if info["complete"]:
            info["weights_hash"] = hashlib.sha256((out / "SHA256SUMS").read_bytes()).hexdigest()
        result[variant] = info
        log(f"UNet {variant}: {json.dumps(info)}")
    return result


def manifest(sweep: dict[str, Any], keep: list[str]) -> str:
    """What the tars hold and how to use them."""
    decision = sweep.get("decision", {})
    return f"""miniature sweep ({sweep.get('environment')}; {sweep.get('seconds')} s)
chosen VAE: {decision.get('chosen')} ({decision.get('tier')}); rule: {RULE}

sweep.json            every candidate's row: training log summary, probes during training, final probe
<candidate>/          row.json, training_log.json (VAE stage), worker.log; vae/ for the kept ones: {keep}
weights/tiny/         tiny on the chosen VAE: vae/, unet/, text_encoder/, training_log.json, SHA256SUMS
weights/tiny_2/       tiny-2 on the same VAE (its vae/ is the same bytes: a tar hard link)
unet-*.log            the UNet stages' output
Files shared between folders are stored once (tar hard links); a group that did not fit
into miniature.tar.gz is in miniature-2.tar.gz (and on): extract all into one folder.

To ship: copy weights/tiny/* to audit/models/weights/tiny/ and weights/tiny_2/* to
audit/models/weights/tiny_2/; if the chosen VAE's architecture is not "tiny", VAE_CONFIG in
audit/diffusion/tiny.py must become its config (vae/config.json; the toolkit builds that config
before loading the weights), and the model cards must be rewritten.
"""


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def link_duplicates(paths: list[Path]) -> None:
    """Replace byte-identical files by hard links to the first (tar then stores them once)."""
    seen: dict[tuple[int, str], Path] = {}
    for path in paths:
        if not path.is_file() or path.stat().st_size < 4096:
            continue
        key = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
        if key in seen and not path.samefile(seen[key]):
            path.unlink()
            os.link(seen[key], path)
        seen.setdefault(key, path)


def pack(groups: list[list[Path]], root: Path, out_tar: Path, limit: int) -> list[dict[str, Any]]:
    """Tar the groups (priority order, paths relative to ``root``) into ``out_tar`` and, for
    what does not fit within ``limit`` bytes of content, ``…-2.tar.gz`` and on; a group is
    never split."""
    def content(group: list[Path], stored: set[int]) -> int:  # a hard link adds no content
        inodes, size = set(stored), 0
        for path in group:
            if path.stat().st_ino not in inodes:
                size += path.stat().st_size
                inodes.add(path.stat().st_ino)
        return size

    tars: list[list[Path]] = [[]]
    sizes, stored = [0], [set()]
    for group in groups:
        size = content(group, stored[-1])
        if sizes[-1] + size > limit and tars[-1]:
            tars.append([])
            sizes.append(0)
            stored.append(set())
            size = content(group, stored[-1])
        tars[-1].extend(group)
        sizes[-1] += size
        stored[-1].update(p.stat().st_ino for p in group)
    written = []
    for index, members in enumerate(tars):
        path = out_tar if index == 0 else out_tar.with_name(out_tar.name.replace(".tar.gz", f"-{index + 1}.tar.gz"))
        with tarfile.open(path, "w:gz") as tar:
            for member in members:
                tar.add(member, arcname=str(member.relative_to(root)), recursive=False)
        written.append({"tar": str(path), "bytes": path.stat().st_size, "files": len(members)})
        log(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB, {len(members)} files)")
    return written


def parent(args: argparse.Namespace) -> None:
    start = time.time()
    deadline = start + args.deadline_s
    args.work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("PROTECTION_AUDIT_CACHE", str(args.work / "cache"))
    os.environ["PROTECTION_AUDIT_CACHE"] = env["PROTECTION_AUDIT_CACHE"]
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    env["PYTHONUNBUFFERED"] = "1"
    for offline in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # nothing is fetched; never wait on a network
        env[offline] = os.environ[offline] = "1"
    env.setdefault("OMP_NUM_THREADS", str(args.threads))
    sweep: dict[str, Any] = {"started": start, "deadline_s": args.deadline_s, "device": args.device,
                             "smoke": args.smoke, "rule": RULE, "candidates": {k: v[0] for k, v in CANDIDATES.items()}}
    import torch

    sweep["environment"] = {"torch": torch.__version__, "python": sys.version.split()[0],
                            "cuda_device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None}
    log(f"sweep on {args.device} ({sweep['environment']}), deadline {args.deadline_s:.0f} s; rule: {RULE}")
    sweep["data"] = ensure_data()
    log(f"data: {sweep['data']} ({time.time() - start:.0f} s)")
    sweep["tokenizer"] = prebuild_tokenizer()
    log(f"tokenizer: {sweep['tokenizer']} ({time.time() - start:.0f} s)")
    names = [SHIPPED] + [n for n in (args.candidates.split(",") if args.candidates else CANDIDATES) if n != SHIPPED]
    unknown = [n for n in names if n != SHIPPED and n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    for stale in [*names, "weights"]:  # a reused --work folder: only what this sweep writes is removed
        shutil.rmtree(args.work / stale, ignore_errors=True)
    for stale in ("sweep.json", "MANIFEST.txt", "unet-tiny.log", "unet-tiny_2.log"):
        (args.work / stale).unlink(missing_ok=True)
    if args.jobs is None:
        args.jobs = len(names) if args.device.startswith("cuda") else 1
    vae_end = deadline - args.unet_reserve - args.pack_reserve
    log(f"VAE phase: {len(names)} workers, {args.jobs} at a time, until +{vae_end - start:.0f} s")
    log(table_header())
    rows = run_workers(names, args, vae_end, env)
    order = {n: i for i, n in enumerate(names)}
    rows.sort(key=lambda r: order.get(r["name"], 99))
    sweep["rows"] = rows
    among = set(args.choose_among.split(",")) if args.choose_among else None
    chosen, decision = choose([r for r in rows if among is None or r["name"] in among or r["name"] == SHIPPED],
                              1 if args.smoke else args.min_steps)
    decision["among"] = sorted(among) if among else "all"
    sweep["decision"] = decision
    log("\n" + table_header())
    for row in rows:
        log(table_row(row))
    log(f"decision: {json.dumps(decision)}")
    (args.work / "sweep.json").write_text(json.dumps(sweep, indent=1) + "\n")
    args.out_tar.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.work / "sweep.json", args.out_tar.parent / "sweep-vae-phase.json")  # in case the rest fails
    if chosen is not None and time.time() < deadline - args.pack_reserve - 20:
        sweep["unet"] = train_unets(chosen, args, deadline - args.pack_reserve, env)
    else:
        sweep["unet"] = {"skipped": "no candidate or no time left"}
    sweep["seconds"] = round(time.time() - start, 1)
    (args.work / "sweep.json").write_text(json.dumps(sweep, indent=1) + "\n")
    # What to bring back, in priority order.
    ranked = sorted((r for r in rows if r["name"] != SHIPPED and "probe" in r),
                    key=lambda r: -r["probe"]["attacks"]["pid"]["rms_logvar_shift"])
    keep = ([chosen["name"]] if chosen else []) + [r["name"] for r in ranked if not chosen or r["name"] != chosen["name"]]
    keep = keep[: args.keep_vaes]
    weights = args.work / "weights"
    link_duplicates(_files(weights / "tiny") + _files(weights / "tiny_2")
                    + [p for n in keep for p in _files(args.work / n / "vae")])
    (args.work / "MANIFEST.txt").write_text(manifest(sweep, keep))
    small = [args.work / "MANIFEST.txt", args.work / "sweep.json"] + sorted(args.work.glob("unet-*.log"))
    for name in names:
        small += [p for p in (args.work / name / f for f in ("row.json", "training_log.json", "worker.log")) if p.is_file()]
    groups = [small, _files(weights / "tiny"), _files(weights / "tiny_2")]
    groups += [_files(args.work / n / "vae") for n in keep]
    args.out_tar.parent.mkdir(parents=True, exist_ok=True)
    written = pack([g for g in groups if g], args.work, args.out_tar, int(args.tar_limit_mib * 2**20))
    log(f"kept candidate VAEs: {keep}; total {time.time() - start:.0f} s of {args.deadline_s:.0f}")
    log(json.dumps(written))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--deadline-s", type=float, default=420, help="wall-clock budget of the whole sweep")
    parser.add_argument("--out-tar", type=Path, default=Path("miniature.tar.gz"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/miniature-sweep"))
    parser.add_argument("--candidates", default=None, help=f"comma-separated, of {', '.join(CANDIDATES)} (default: all)")
    parser.add_argument("--choose-among", default=None,
                        help="comma-separated candidates the rule may choose from (default: all trained)")
    parser.add_argument("--variants", default="tiny,tiny-2", help="UNets trained on the chosen VAE")
    parser.add_argument("--jobs", type=int, default=None, help="workers at a time (default: all on cuda, 1 on cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker (default 2 cuda, 1 cpu)")
    parser.add_argument("--smoke", action="store_true", help="a few steps in every phase (tests the whole path)")
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-max-steps", type=int, default=50_000, help="the time box usually stops earlier")
    parser.add_argument("--unet-reserve", type=float, default=120, help="seconds kept for the UNet phase")
    parser.add_argument("--unet-overhead", type=float, default=35, help="UNet workers' start-up and saving, seconds")
    parser.add_argument("--pack-reserve", type=float, default=15, help="seconds kept for packing")
    parser.add_argument("--final-reserve", type=float, default=30, help="a worker's final probe and saving, seconds")
    parser.add_argument("--mid-probe-seconds", type=float, default=8, help="expected seconds per mid-training probe")
    parser.add_argument("--min-worker-seconds", type=float, default=60,
                        help="a candidate is not started with less than this left for its training")
    parser.add_argument("--min-steps", type=int, default=500,
                        help="a candidate trained fewer VAE steps is not chosen (smoke: 1)")
    parser.add_argument("--grace", type=float, default=10, help="seconds past a phase's end before a worker is killed")
    parser.add_argument("--keep-vaes", type=int, default=3, help="candidate VAEs brought back (the chosen first)")
    parser.add_argument("--tar-limit-mib", type=float, default=15.5)
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="train in plain fp32 on cuda (default: TF32 convolutions/matmuls in training; probes are fp32)")
    # worker-only
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase-end", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 2 if args.device.startswith("cuda") else 1
    args.work = args.work.resolve()
    args.out_tar = args.out_tar.resolve()
    if args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
