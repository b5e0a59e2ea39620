"""The built-in tiny Stable-Diffusion-1.5-shaped pipeline (built from configs, no download).

Same parts and interfaces as SD 1.5 — AutoencoderKL with a 4-channel latent and SD's scaling
factor 0.18215, a cross-attention UNet conditioned on a CLIP text encoder, SD's DDPM training
schedule and SD's tokenizer — at a size that trains and samples on a CPU in seconds: 64 px
images, 16×16 latents (VAE factor 4 instead of SD's 8). Weights are seeded random unless a
trained checkpoint ships in ``weights/tiny`` (see ``tiny_weights_path``; model card
``weights/tiny/MODEL_CARD.md``; rebuilt by ``training/train_tiny.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TINY_CONFIG_VERSION = 1
TINY_SEED = 0

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}

# Stable Diffusion 1.5's training noise schedule.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}


# The second embedded model, for model transfer (PID §6.3 Table 5: protect on SD v1.5, exploit
# SD v2.1, and back). It differs from ``tiny`` as SD 2.1 differs from SD 1.5:
# - the VAE is the same weights: SD 2.x reuses SD 1.x's kl-f8 autoencoder, and PID attacks only
#   the VAE encoder, so the component PID perturbs is shared between the two (PID §6.3 reads
#   its transferability as "the similarity in the condensed representations of images");
# - another text encoder, trained separately (SD 2 replaced OpenAI CLIP ViT-L/14 by OpenCLIP
#   ViT-H/14): wider, deeper, GELU instead of quick-GELU, so the conditioning space differs;
# - another UNet, trained from scratch on the other text encoder: linear projections in its
#   transformer blocks and a fixed head width (SD 2's ``use_linear_projection`` and per-level
#   head counts) instead of a fixed head count;
# - v-prediction (SD 2.1 at 768 px, the model PID names: stabilityai/stable-diffusion-2-1), so
#   the exploiter's DreamBooth loss has another target.
# Prompt-dependent protections (ASPL, FSGM) depend on the UNet and text encoder that differ
# here; PID's objective touches neither.
TINY2_UNET_CONFIG: dict[str, Any] = {
    **UNET_CONFIG,
    "cross_attention_dim": 48,
    "attention_head_dim": [2, 4],  # diffusers' name for the number of heads: 16-wide heads
    "use_linear_projection": True,
}
TINY2_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    **TEXT_ENCODER_CONFIG,
    "hidden_size": 48,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "hidden_act": "gelu",
}
TINY2_SCHEDULER_CONFIG: dict[str, Any] = {**SCHEDULER_CONFIG, "prediction_type": "v_prediction"}


@dataclass(frozen=True)
class TinyVariant:
    """One embedded model: its configs and where its weights ship."""

    name: str
    mimics: str
    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    seed_offset: int  # the trainer's seeds for the UNet and text encoder


TINY_VARIANTS: dict[str, TinyVariant] = {
    "tiny": TinyVariant("tiny", "Stable Diffusion v1.5", UNET_CONFIG, TEXT_ENCODER_CONFIG,
                        SCHEDULER_CONFIG, 0),
    "tiny-2": TinyVariant("tiny-2", "Stable Diffusion v2.1", TINY2_UNET_CONFIG,
                          TINY2_TEXT_ENCODER_CONFIG,
                          TINY2_SCHEDULER_CONFIG, 1000),
}


def tiny_variant(name: str) -> TinyVariant:
    from audit.errors import ModelError

    if name not in TINY_VARIANTS:
        raise ModelError(f"no embedded model '{name}'; the embedded models are "
                         f"{', '.join(TINY_VARIANTS)}")
    return TINY_VARIANTS[name]


# The embedded models' weights (data only; training/ rebuilds them).
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"
TINY_WEIGHTS_VERSION = 1
CHECKSUMS = "SHA256SUMS"
WEIGHT_FILES = (
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
)


# Embedded inpainting UNets (``training/train_inpainting.py``): name → the embedded model whose
# UNet it was trained from and whose VAE and text encoder it uses. Only ``unet/`` ships.
INPAINTING_UNETS = {"tiny-inpainting": "tiny"}
UNET_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")


def inpainting_extension(base: Any, channels: int = 9) -> Any:
    """``base`` (a ``UNet2DConditionModel``) with ``channels`` input channels, the new ones zero:
    how SD's inpainting model began (its model card: "5 additional input channels ... zero-
    initialized after restoring the non-inpainting checkpoint"). It predicts exactly as ``base``
    until trained (``training/train_inpainting.py``)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**dict(base.config), "in_channels": channels})
    state = base.state_dict()
    weight = state["conv_in.weight"]
    wide = torch.zeros(weight.shape[0], channels, *weight.shape[2:], dtype=weight.dtype)
    wide[:, : weight.shape[1]] = weight
    unet.load_state_dict({**state, "conv_in.weight": wide})
    return unet.eval()


def tiny_weights_path(variant: str = "tiny") -> Path:
    """Where trained tiny weights ship, if they do (a diffusers-layout folder; ``tiny-2`` in
    ``weights/tiny_2``, a name setuptools can package)."""
    return WEIGHTS / variant.replace("-", "_")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checksums(folder: Path, files: tuple[str, ...] = WEIGHT_FILES) -> str:
    """Write ``SHA256SUMS`` (``sha256sum -c`` format) for the weight files; returns the weights
    hash."""
    lines = [f"{_sha256(folder / name)}  {name}\n" for name in files]
    (folder / CHECKSUMS).write_text("".join(lines), encoding="ascii")
    return weights_hash(folder)


def weights_hash(folder: Path) -> str:
    """The weights' hash: SHA-256 of ``SHA256SUMS``, which lists each weight file's SHA-256."""
    return _sha256(folder / CHECKSUMS)


def verify_weights(folder: Path, trainer: str = "train_tiny.py") -> str:
    """Check every weight file against ``SHA256SUMS``; return the weights hash or say what is
    wrong (``trainer``: the script under ``training/`` that rebuilds them)."""
    from audit.errors import ModelError

    fix = (
        f"restore them (git checkout -- {folder}) or rebuild them with `python "
        f"training/{trainer} --out {folder}` (see MODEL_CARD.md there)"
    )
    sums = folder / CHECKSUMS
    if not sums.is_file():
        raise ModelError(f"{sums}: missing, so the tiny model's weights cannot be verified; {fix}.")
    for line in sums.read_text(encoding="ascii").splitlines():
        digest, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file():
            raise ModelError(f"{path}: weight file missing; {fix}.")
        if _sha256(path) != digest:
            raise ModelError(f"{path}: SHA-256 differs from {sums} (modified or corrupt weights); "
                             f"{fix}.")
    return weights_hash(folder)


def build_tiny_components(seed: int = TINY_SEED, variant: str = "tiny") -> dict[str, Any]:
    """vae, unet, text_encoder, tokenizer, scheduler of an embedded pipeline (eval mode, fp32)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from audit.diffusion.tokenizer import clip_tokenizer

    spec = tiny_variant(variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**VAE_CONFIG)
        unet = UNet2DConditionModel(**spec.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text_encoder))
    weights = tiny_weights_path(variant)
    if weights.is_dir():
        # Shipped as fp16 (half the bytes); every computation runs in fp32.
        vae = AutoencoderKL.from_pretrained(weights, subfolder="vae", torch_dtype=torch.float32)
        unet = UNet2DConditionModel.from_pretrained(weights, subfolder="unet",
                                                    torch_dtype=torch.float32)
        text_encoder = CLIPTextModel.from_pretrained(weights, subfolder="text_encoder",
                                                     torch_dtype=torch.float32)
    for module in (vae, unet, text_encoder):
        module.eval()  # type: ignore[union-attr]
        module.requires_grad_(False)  # type: ignore[union-attr]
    return {
        "vae": vae,
        "unet": unet,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "scheduler": DDPMScheduler(**spec.scheduler),
    }
