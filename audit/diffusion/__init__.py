"""The model under audit: the built-in tiny pipeline, a local folder, or a Hugging Face id."""

from audit.diffusion.loading import (
    LatentDiffusionModel,
    load_model,
    resolve_device,
    state_fingerprint,
)
from audit.diffusion.tiny import build_tiny_components, tiny_weights_path
from audit.diffusion.tokenizer import clip_tokenizer

__all__ = [
    "LatentDiffusionModel",
    "build_tiny_components",
    "clip_tokenizer",
    "load_model",
    "resolve_device",
    "state_fingerprint",
    "tiny_weights_path",
]
