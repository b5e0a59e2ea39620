"""What is global to an audit is checked once, at start-up, before any case runs.

A wrong ``--protection``, ``--model``, ``--device``, tier setting or scenario folder would
otherwise become one runtime error per case, minutes later and with the exit status of a
protection that failed. Here each becomes one ``pytest.UsageError`` (exit status 4) with one
paragraph naming the option, what was wrong, and the fix ("did you mean" where it applies).
What is per case stays per case: one bad subject or one broken scenario file among good ones.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from audit.errors import AuditError
from audit.parts.registry import InvalidParams

# The Stable Diffusion 1.5 repository on the Hugging Face hub today (runwayml/stable-diffusion-v1-5
# was removed from the hub in 2024).
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def check_options(options: Any, *, collect_only: bool = False) -> None:
    """Raise pytest.UsageError for the first global problem found.

    With ``collect_only`` (pytest's ``--collect-only``) nothing runs, so a hub id's presence in
    the local cache is not required: the paper tier's cases can be listed on a machine without
    Stable Diffusion (the id's form, a local folder's layout and everything else are checked)."""
    model = functools.partial(_model, need_weights=not collect_only)
    for check in (_numbers, _layers, _tier, _results_dir, _protection, model, _resolution, _device,
                  _scenarios, _data):
        try:
            check(options)
        except (AuditError, InvalidParams, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None


def _numbers(options: Any) -> None:
    if options.seed < 0:
        raise ValueError(f"--seed={options.seed}: seeds are non-negative integers (0 … 2**32 − 1); "
                         "pass e.g. --seed=0.")
    if options.seed >= 2**32:
        raise ValueError(f"--seed={options.seed}: too large; seeds are integers in 0 … 2**32 − 1.")
    if options.exploit_workers is not None and not 1 <= options.exploit_workers <= 64:
        raise ValueError(f"--exploit-workers={options.exploit_workers}: between 1 and 64 (1 runs "
                         "every exploit in this process).")
    if not 1 <= options.runs_per_gpu <= 16:
        raise ValueError(f"--runs-per-gpu={options.runs_per_gpu}: between 1 and 16 (1: one "
                         "exploit run per GPU at a time, the default).")
    if options.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("--executor=ray: Ray is not installed; pip install "
                         "'protection-audit[ray]' (or pip install ray), or leave --executor out "
                         "to run on this machine.")
    if options.ray_address and options.executor != "ray":
        raise ValueError(f"--ray-address={options.ray_address} is given without --executor=ray; "
                         "add --executor=ray to send the exploit runs to that cluster.")
    if options.replicates is not None and options.replicates < 1:
        raise ValueError(f"--replicates={options.replicates}: at least 1 (2 or more for an "
                         "interval that covers a rerun; the tiers run 3).")
    if options.epsilon is not None and not (0 <= options.epsilon
                                            <= 1) or (options.epsilon is not None
                                                      and math.isnan(options.epsilon)):
        raise ValueError(
            f"--epsilon={options.epsilon}: budgets are in [0,1] pixel units (8/255 = "
            f"{8 / 255:.4f}); divide a budget in levels by 255."
        )
    if options.exploit is not None and not options.exploit.strip():
        raise ValueError("--exploit is empty: name the standard exploit, e.g. --exploit=dreambooth "
                         "(the default, also when the option is left out), --exploit=lora or "
                         "--exploit='lora: {rank: 32}'.")


def _layers(options: Any) -> None:
    """One value set two ways — an option and ``--audit-set`` for the same setting — must agree:
    a conflict is refused here rather than one of them winning silently."""
    core = options.overrides.get("", {})
    if (options.replicates is not None and "replicates" in core
            and core["replicates"] != options.replicates):
        raise ValueError(
            f"--replicates={options.replicates} and --audit-set replicates={core['replicates']} "
            "set the number of replicates twice, to different values; give one of them.")
    if options.epsilon is None:
        return
    for spec in options.protections:
        section = spec if ":" not in spec else None
        given = (options.overrides.get(section) or {}).get("epsilon") if section else None
        if given is not None and given != options.epsilon:
            raise ValueError(
                f"--epsilon={options.epsilon} and --audit-set {section}.epsilon={given} set the "
                f"budget of --protection={spec} twice, to different values; give one "
                "of them (--epsilon is the budget that is judged, for every kind of protection).")


def _results_dir(options: Any) -> None:
    """The results folder (cache, records, report) must be a folder, or creatable as one."""
    folder = Path(options.results_dir)
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                what = "is an existing file" if path == folder else (f"lies under {path}, which is "
                         "a file")
                raise ValueError(f"--results-dir={options.results_dir}: {what}, not a folder; pass "
                                 "a folder (it is created when absent), e.g. "
                                 "--results-dir=audit-results.")
            return


def _tier(options: Any) -> None:
    from audit.config.tiers import get_tier, validate_overrides

    get_tier(options.tier)
    validate_overrides(options.tier_settings)
    if options.tier in ("standard", "paper") and options.model in ("tiny", "tiny-2"):
        raise ValueError(
            f"--tier={options.tier} runs the papers' settings "
            f"(PGD-{options.tier_settings.data['pid']['steps']}, DreamBooth "
            f"{options.tier_settings.data['dreambooth']['steps']} steps, at the model's native "
            "resolution) and needs a real Stable Diffusion model: pass --model with a Hugging "
            f"Face id such as {SD15_HUB_ID} (from the local cache, or with --allow-download) or a "
            "local diffusers folder. On the built-in tiny model use --tier=smoke (its numbers are "
            "small-model effects, not the papers')."
        )


def _protection(options: Any) -> None:
    """Each protection of ``--protection`` (one, or a comma-separated list); an item that is
    wrong is named with the whole list, so the fix is clear before anything runs."""
    specs = options.protections
    for spec in specs:
        try:
            _one_protection(spec, options)
        except (AuditError, InvalidParams, ValueError) as exc:
            if len(specs) == 1:
                raise
            message = str(exc).removeprefix(f"--protection={spec}: ")
            raise ValueError(f"--protection={options.protection}: item '{spec}' of the list: "
                             f"{message}") from None


def _one_protection(spec: str, options: Any) -> None:
    from audit.parts import PROTECTIONS
    from audit.parts.protections.build import PROTECTION_FORMS, build_protection

    if spec.startswith("dir:"):
        folder = Path(spec[4:]).expanduser()
        if not folder.is_dir():
            raise ValueError(f"--protection={spec}: folder {folder} does not exist or is not a "
                             "folder; pass dir:PATH with PATH holding one sub-folder of protected "
                             "images per subject.")
        build_protection(spec, options.tier_settings, options.epsilon)
        return
    if spec in PROTECTIONS:
        build_protection(spec, options.tier_settings, options.epsilon)
        return
    if ":" in spec:
        module = spec.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        except Exception:
            found = True
        if not found:
            raise ValueError(f"--protection={spec}: module '{module}' cannot be imported (not "
                             "installed, or not on the Python path). Give an importable "
                             "'package.module:factory' that returns a Protection.")
        build_protection(spec, options.tier_settings, options.epsilon)
        return
    build_protection(spec)  # raises with "did you mean" and the accepted forms
    raise ValueError(PROTECTION_FORMS)  # pragma: no cover


def _model(options: Any, need_weights: bool = True) -> None:
    from audit.diffusion.tiny import TINY_VARIANTS

    _model_spec(options.model, "--model", options.allow_download, need_weights)
    if options.transfer_model:
        if options.transfer_model == options.model:
            raise ValueError(f"--transfer-model={options.transfer_model} is --model itself; a "
                             "transfer scenario fine-tunes another model than the one the "
                             "protection was crafted on (PID §6.3).")
        # A typo's suggestion is another built-in model than --model (that one is refused above).
        others = [name for name in TINY_VARIANTS if name != options.model]
        _model_spec(options.transfer_model, "--transfer-model", options.allow_download,
                    need_weights, others)


def _model_spec(spec: str, flag: str, allow_download: bool, need_weights: bool = True,
                suggest: list[str] | None = None) -> None:
    from audit.diffusion.tiny import TINY_VARIANTS

    if spec in TINY_VARIANTS:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag}={spec}: {path} is a file; pass a diffusers folder (with "
                             "unet/, vae/, ...).")
        missing = [c for c in ("vae", "unet", "text_encoder", "tokenizer", "scheduler")
                   if not (path / c).is_dir()]
        if missing:
            raise ValueError(f"{flag}={spec}: the folder lacks "
                             f"{', '.join(m + '/' for m in missing)}; a diffusers Stable Diffusion "
                             "folder has vae/, unet/, text_encoder/, tokenizer/ and scheduler/ "
                             "(save one with StableDiffusionPipeline.save_pretrained).")
        return
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        from audit.parts.registry import did_you_mean

        raise ValueError(f"{flag}={spec}: model path {spec} does not "
                         f"exist{did_you_mean(spec, suggest or list(TINY_VARIANTS))}; pass a local "
                         f"diffusers folder, a Hugging Face id such as {SD15_HUB_ID}, or "
                         f"{' / '.join(repr(t) for t in TINY_VARIANTS)} (the built-in models).")
    if need_weights and not allow_download:
        from audit.diffusion.loading import _hub_snapshot

        _hub_snapshot(spec, allow_download=False, flag=flag)


# diffusers' Stable Diffusion pipeline refuses a height or width that is not a multiple of 8.
PIPELINE_MULTIPLE = 8


def _vae_factor(spec: str) -> tuple[int, str] | None:
    """The VAE's downsampling factor of a model (2^(number of VAE blocks − 1)) and where it was
    read, without loading the model: the embedded models' config, or a folder's vae/config.json
    (a local folder, or a hub id's snapshot in the local cache); None where it cannot be read."""
    import json

    from audit.diffusion.tiny import TINY_VARIANTS, VAE_CONFIG

    if spec in TINY_VARIANTS:
        return 2 ** (len(VAE_CONFIG["block_out_channels"]) - 1), f"the embedded model '{spec}'"
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        try:
            from audit.diffusion.loading import _hub_snapshot

            folder = _hub_snapshot(spec, allow_download=False)
        except Exception:
            return None
    try:
        config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        return 2 ** (len(config["block_out_channels"]) - 1), f"{spec}'s vae/config.json"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _resolution(options: Any) -> None:
    """A resolution the models can run (--audit-set resolution=N): a multiple of the VAE's
    downsampling factor (the latent must have whole pixels) and of 8 (diffusers' pipeline)."""
    resolution = options.tier_settings.resolution
    if resolution is None:  # the model's native resolution
        return
    multiple, why = PIPELINE_MULTIPLE, ["diffusers' pipeline needs a multiple of 8"]
    for spec in dict.fromkeys(m for m in (options.model, options.transfer_model_spec) if m):
        found = _vae_factor(spec)
        if found is not None:
            multiple = math.lcm(multiple, found[0])
            why.append(f"{found[1]} downsamples by {found[0]}")
    if resolution % multiple:
        lower, upper = max(resolution // multiple
                           * multiple, multiple), (resolution // multiple + 1) * multiple
        raise ValueError(
            f"--audit-set resolution={resolution}: not a multiple of {multiple} px "
            f"({'; '.join(why)}), so the model cannot generate at it; use {lower} or {upper}.")


def _device(options: Any) -> None:
    from audit.diffusion import resolve_device

    resolve_device(options.device)


def _scenarios(options: Any) -> None:
    from audit.config.scenario import catalogue_files

    if options.scenarios is None:
        return
    folder = Path(options.scenarios)
    files = catalogue_files(folder)
    if not files:
        raise ValueError(f"--scenarios={folder}: no scenario files (*.yaml not starting with '_') "
                         "in that folder; add some, or leave --scenarios out to run the bundled "
                         "catalogue.")


def _data(options: Any) -> None:
    """The subject folder as a whole (one unusable subject among good ones stays per case)."""
    from audit.data.subjects import discover_subjects

    discover_subjects(options.data)
