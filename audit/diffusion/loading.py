"""Loading the model under audit: ``tiny``, a local diffusers folder, or a Hugging Face id.

Hub ids are looked up in the local Hugging Face cache only (``local_files_only=True``) unless
the user passes ``--allow-download``: this machine class often has no route to the hub, and a
missing model must fail at once with a message that says how to provide it, not after a minute
of retries. The choice is made here, per call, not by mutating ``HF_HUB_OFFLINE`` globally.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from audit.errors import ModelError

COMPONENTS = ("vae", "unet", "text_encoder", "tokenizer", "scheduler")


@dataclass
class LatentDiffusionModel:
    """The parts of a Stable-Diffusion-style model the toolkit uses, and where they came from."""

    vae: Any
    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any  # the training noise scheduler (DDPM)
    model_id: str
    revision: str | None
    fingerprint: str  # SHA-256 of the weights' content
    source: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def to(self, device: torch.device | str, dtype: torch.dtype
           | None = None) -> LatentDiffusionModel:
        for module in (self.vae, self.unet, self.text_encoder):
            module.to(device) if dtype is None else module.to(device=device, dtype=dtype)
        return self

    def fresh_copy(self) -> LatentDiffusionModel:
        """Copies of the trainable parts (UNet, text encoder); VAE, tokenizer, scheduler shared."""
        return replace(self, unet=copy.deepcopy(self.unet),
                       text_encoder=copy.deepcopy(self.text_encoder))


def resolve_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu; an explicit name is checked for availability."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ModelError(
            f"--device={name}: not a device name; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device={name}: CUDA is not available on this machine; use "
                         "--device=cpu or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"--device={name}: MPS is not available on this machine; use --device=cpu "
                         "or auto.")
    return device


def state_fingerprint(*modules: torch.nn.Module, extra: str = "") -> str:
    """SHA-256 over parameter/buffer names, dtypes, shapes and bytes of the given modules."""
    h = hashlib.sha256(extra.encode())
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path, memo: dict[str, Any]) -> str:
    stat = path.stat()
    key = str(path.resolve())
    entry = memo.get(key)
    if entry and entry["size"] == stat.st_size and entry["mtime"] == stat.st_mtime:
        return entry["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    memo[key] = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": h.hexdigest()}
    return memo[key]["sha256"]


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over the weight files of a diffusers folder (memoised by path, size and mtime)."""
    memo_path = Path(os.path.expanduser("~")) / ".cache" / "protection-audit" / "weight-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".json",
                                                                ".txt") and p.is_file())
    for path in files:
        h.update(f"{path.relative_to(folder)}|{_file_sha256(path, memo)}|".encode())
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        memo_path.write_text(json.dumps(memo))
    except OSError:
        pass
    return h.hexdigest()


def _load_tiny(seed: int, variant: str = "tiny") -> LatentDiffusionModel:
    from audit.diffusion.tiny import (
        TINY_CONFIG_VERSION,
        TINY_WEIGHTS_VERSION,
        build_tiny_components,
        tiny_variant,
        tiny_weights_path,
        verify_weights,
    )

    spec = tiny_variant(variant)
    folder = tiny_weights_path(variant)
    if folder.is_dir():
        fingerprint = verify_weights(folder)  # SHA-256 of SHA256SUMS: the hash in the model card
        parts = build_tiny_components(seed, variant)
        return LatentDiffusionModel(
            **parts, model_id=variant, revision=f"trained-v{TINY_WEIGHTS_VERSION}",
            fingerprint=fingerprint,
            source=f"built-in {variant} pipeline ({spec.mimics}-shaped), trained weights "
                   f"(training/train_tiny.py; model card {folder / 'MODEL_CARD.md'})",
        )
    parts = build_tiny_components(seed, variant)
    extra = (f"tiny-v{TINY_CONFIG_VERSION}" if variant == "tiny"
             else f"{variant}-v{TINY_CONFIG_VERSION}")
    fingerprint = state_fingerprint(parts["vae"], parts["unet"], parts["text_encoder"], extra=extra)
    source = (f"built-in {variant} pipeline (random init from configs, seed {seed}, config "
              f"v{TINY_CONFIG_VERSION}; trained weights missing)")
    return LatentDiffusionModel(**parts, model_id=variant,
                                revision=f"config-v{TINY_CONFIG_VERSION}", fingerprint=fingerprint,
                                source=source)


def _load_folder(folder: Path, model_id: str, revision: str
                 | None, source: str) -> LatentDiffusionModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise ModelError(
            f"model folder {folder} lacks {', '.join(m + '/' for m in missing)}; a Stable "
            "Diffusion folder in diffusers layout has vae/, unet/, text_encoder/, tokenizer/ and "
            "scheduler/ (save one with StableDiffusionPipeline.save_pretrained)."
        )
    try:
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                     local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer",
                                                  local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler",
                                                  local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model folder {folder} could not be loaded: {exc}") from None
    for module in (vae, unet, text_encoder):
        module.eval()
        module.requires_grad_(False)
    return LatentDiffusionModel(
        vae=vae, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        model_id=model_id, revision=revision, fingerprint=folder_fingerprint(folder), source=source,
    )


def _hub_snapshot(model_id: str, allow_download: bool, flag: str = "--model",
                  fix: str | None = None) -> Path:
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(
            snapshot_download(
                model_id,
                local_files_only=not allow_download,
                allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"]
                if allow_download else None,
            )
        )
    except Exception as exc:
        if allow_download:
            raise ModelError(
                f"{flag}={model_id}: download failed ({type(exc).__name__}: {exc}).") from None
        raise ModelError(
            f"{flag}={model_id}: not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            "and downloads are off. Fetch it once on a machine with network (`huggingface-cli "
            f"download {model_id}`) and copy the cache, pass a local diffusers folder, pass "
            "--allow-download, "
            + (fix or ("or use --model=tiny." if flag == "--model" else "or leave "
                       "--transfer-model out on a built-in --model."))
        ) from None


def load_model(spec: str, device: str | torch.device = "cpu", *, allow_download: bool = False,
               seed: int = 0) -> LatentDiffusionModel:
    """The model named by ``spec``: 'tiny', a local diffusers folder, or a Hugging Face id."""
    device = torch.device(device) if isinstance(device, str) else device
    from audit.diffusion.tiny import TINY_VARIANTS

    if spec in TINY_VARIANTS:
        return _load_tiny(seed, spec).to(device)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model={spec}: {path} is a file; pass a diffusers folder (with "
                             "unet/, vae/, ...).")
        folder = path.resolve()
        return _load_folder(
            folder, str(folder), None, f"local diffusers folder {folder}").to(device)
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1
    if looks_like_path or spec.count("/") > 1:
        raise ModelError(
            f"--model={spec}: model path {spec} does not exist; pass a local diffusers folder "
            "(with unet/, vae/, text_encoder/, tokenizer/, scheduler/), a Hugging Face id such as "
            "runwayml/stable-diffusion-v1-5, or `tiny`."
        )
    snapshot = _hub_snapshot(spec, allow_download)
    revision = snapshot.name if len(snapshot.name) == 40 else None
    return _load_folder(snapshot, spec, revision, f"Hugging Face cache: {spec}@{revision}").to(
        device)


def load_unet(spec: str, device: torch.device, *,
              allow_download: bool = False) -> tuple[Any, str, str]:
    """(UNet, fingerprint, source) of an editing exploit's own UNet — an embedded inpainting UNet
    (``tiny-inpainting``), a diffusers folder's ``unet/`` or a hub id's — in eval mode, frozen.
    Only the UNet is read: the pipeline takes the VAE and text encoder from the audited model."""
    from diffusers import UNet2DConditionModel

    from audit.diffusion.tiny import INPAINTING_UNETS, tiny_weights_path, verify_weights

    flag = f"inpainting_model={spec}"
    if spec in INPAINTING_UNETS:
        folder = tiny_weights_path(spec)
        if not folder.is_dir():
            raise ModelError(f"{flag}: its weights ({folder}) are not installed; rebuild them with "
                             f"`python training/train_inpainting.py --out {folder}`.")
        fingerprint = verify_weights(folder, "train_inpainting.py")
        source = (f"built-in {spec} UNet (trained from {INPAINTING_UNETS[spec]}'s; "
                  f"training/train_inpainting.py; model card {folder / 'MODEL_CARD.md'})")
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            folder, source = path.resolve(), f"local diffusers folder {path.resolve()}"
        else:
            fix = ("or leave inpainting_model out on a built-in --model (tiny inpaints with "
                   "tiny-inpainting).")
            folder = _hub_snapshot(spec, allow_download, "inpainting_model", fix=fix)
            source = f"Hugging Face cache: {spec}@{folder.name}"
        if not (folder / "unet").is_dir():
            raise ModelError(f"{flag}: {folder} has no unet/ folder; name a diffusers folder or "
                             "hub id of an inpainting model.")
        fingerprint = folder_fingerprint(folder / "unet")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet",
                                                    torch_dtype=torch.float32,
                                                    local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{flag}: {folder}/unet could not be loaded: {exc}") from None
    unet.eval()
    unet.requires_grad_(False)
    return unet.to(device), fingerprint, source
