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
from audit.registry import InvalidParams

# The Stable Diffusion 1.5 repository on the Hugging Face hub today (runwayml/stable-diffusion-v1-5
# was removed from the hub in 2024).
SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def check_options(options: Any, *, collect_only: bool = False) -> None:
    """Raise pytest.UsageError for the first global problem found.

    With ``collect_only`` (pytest's ``--collect-only``) nothing runs, so a hub id's presence in
    the local cache is not required: the paper tier's cases can be listed on a machine without
    Stable Diffusion (the id's form, a local folder's layout and everything else are checked)."""
    model = functools.partial(_model, need_weights=not collect_only)
    for check in (_numbers, _tier, _protection, model, _device, _scenarios, _data):
        try:
            check(options)
        except (AuditError, InvalidParams, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None


def _numbers(options: Any) -> None:
    if options.seed < 0:
        raise ValueError(f"--seed={options.seed}: seeds are non-negative integers (0 … 2**32 − 1); pass e.g. --seed=0.")
    if options.seed >= 2**32:
        raise ValueError(f"--seed={options.seed}: too large; seeds are integers in 0 … 2**32 − 1.")
    if options.exploit_workers is not None and not 1 <= options.exploit_workers <= 64:
        raise ValueError(f"--exploit-workers={options.exploit_workers}: between 1 and 64 (1 runs every exploit in this process).")
    if options.replicates is not None and options.replicates < 1:
        raise ValueError(f"--replicates={options.replicates}: at least 1 (3 or more for an interval that covers a rerun).")
    if options.epsilon is not None and not (0 <= options.epsilon <= 1) or (options.epsilon is not None and math.isnan(options.epsilon)):
        raise ValueError(
            f"--epsilon={options.epsilon}: budgets are in [0,1] pixel units (8/255 = {8 / 255:.4f}); "
            "divide a budget in levels by 255."
        )


def _tier(options: Any) -> None:
    from audit.tiers import get_tier, validate_overrides

    get_tier(options.tier)
    validate_overrides(options.tier_settings)
    if options.tier in ("standard", "paper") and options.model in ("tiny", "tiny-2"):
        raise ValueError(
            f"--tier={options.tier} runs the papers' settings (PGD-{options.tier_settings.data['pid']['steps']}, "
            f"DreamBooth {options.tier_settings.data['dreambooth']['steps']} steps, at the model's native resolution) "
            "and needs a real Stable Diffusion model: pass --model with a Hugging Face id such as "
            f"{SD15_HUB_ID} (from the local cache, or with --allow-download) or a local diffusers folder. "
            "On the built-in tiny model use --tier=smoke (its numbers are small-model effects, not the papers')."
        )


def _protection(options: Any) -> None:
    from audit.parts import PROTECTIONS
    from audit.protections.registry import PROTECTION_FORMS, build_protection

    spec = options.protection
    if spec.startswith("dir:"):
        folder = Path(spec[4:]).expanduser()
        if not folder.is_dir():
            raise ValueError(f"--protection={spec}: folder {folder} does not exist or is not a folder; pass "
                             "dir:PATH with PATH holding one sub-folder of protected images per subject.")
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
        if not found:
            raise ValueError(f"--protection={spec}: module '{module}' cannot be imported (not installed, or not on "
                             "the Python path). Give an importable 'package.module:factory' that returns a Protection.")
        build_protection(spec, options.tier_settings, options.epsilon)
        return
    build_protection(spec)  # raises with "did you mean" and the accepted forms
    raise ValueError(PROTECTION_FORMS)  # pragma: no cover


def _model(options: Any, need_weights: bool = True) -> None:
    _model_spec(options.model, "--model", options.allow_download, need_weights)
    if options.transfer_model:
        if options.transfer_model == options.model:
            raise ValueError(f"--transfer-model={options.transfer_model} is --model itself; a transfer scenario "
                             "fine-tunes another model than the one the protection was crafted on (PID §6.3).")
        _model_spec(options.transfer_model, "--transfer-model", options.allow_download, need_weights)


def _model_spec(spec: str, flag: str, allow_download: bool, need_weights: bool = True) -> None:
    from audit.models.tiny import TINY_VARIANTS

    if spec in TINY_VARIANTS:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag}={spec}: {path} is a file; pass a diffusers folder (with unet/, vae/, ...).")
        missing = [c for c in ("vae", "unet", "text_encoder", "tokenizer", "scheduler") if not (path / c).is_dir()]
        if missing:
            raise ValueError(f"{flag}={spec}: the folder lacks {', '.join(m + '/' for m in missing)}; a diffusers "
                             "Stable Diffusion folder has vae/, unet/, text_encoder/, tokenizer/ and scheduler/ "
                             "(save one with StableDiffusionPipeline.save_pretrained).")
        return
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ValueError(f"{flag}={spec}: model path {spec} does not exist; pass a local diffusers folder, a Hugging "
                         f"Face id such as {SD15_HUB_ID}, or 'tiny' (the built-in model).")
    if need_weights and not allow_download:
        from audit.models.loading import _hub_snapshot

        _hub_snapshot(spec, allow_download=False)


def _device(options: Any) -> None:
    from audit.models import resolve_device

    resolve_device(options.device)


def _scenarios(options: Any) -> None:
    from audit.scenario import catalogue_files

    if options.scenarios is None:
        return
    folder = Path(options.scenarios)
    files = catalogue_files(folder)
    if not files:
        raise ValueError(f"--scenarios={folder}: no scenario files (*.yaml not starting with '_') in that folder; "
                         "add some, or leave --scenarios out to run the bundled catalogue.")


def _data(options: Any) -> None:
    """The subject folder as a whole (one unusable subject among good ones stays per case)."""
    from audit.data import discover_subjects

    discover_subjects(options.data)
