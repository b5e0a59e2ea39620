"""Model families: which row of a paper's settings table applies to the model being fine-tuned.

PID App. A.3 Table 8 sets the fine-tuning learning rate and steps per base model (SD 1.5 or
2.1) and text-encoder setting, and LoRA's rank and steps per base model. The tiers express
those rows keyed by *family* (``audit/config/tiers.py``: ``rows``), and the family of a model is
decided here from its name or its folder, without loading it, so that planning stays pure.

    sd1  Stable Diffusion 1.x: CLIP ViT-L/14 text encoder (768-d), ε-prediction
    sd2  Stable Diffusion 2.x: OpenCLIP ViT-H/14 text encoder (1024-d), 2.1 at 768 px v-prediction

A model whose family cannot be told gets ``None``; the tiers then use the SD 1.5 rows (PID's
main model) and record that they did.
"""

from __future__ import annotations

import json
from pathlib import Path

FAMILIES = {
    "sd1": "Stable Diffusion 1.x (CLIP ViT-L/14 text encoder)",
    "sd2": "Stable Diffusion 2.x (OpenCLIP ViT-H/14 text encoder)",
}
FALLBACK = "sd1"  # PID's main model (Tables 1-7): its rows apply where the family is unknown

# The embedded models (audit/models): tiny is SD 1.5-shaped (its model card); tiny-2 differs
# from it as SD 2.1 differs from 1.5 (the transfer model of PID §6.3 on the smoke tier).
EMBEDDED = {"tiny": "sd1", "tiny-2": "sd2"}
# Hub ids by name (the ids PID and Anti-DreamBooth use, and their renamed mirrors).
NAME_PATTERNS = (
    ("stable-diffusion-v1", "sd1"),
    ("stable-diffusion-1", "sd1"),
    ("stable-diffusion-2", "sd2"),
    ("sd-2-", "sd2"),
)
# A local diffusers folder: the text encoder's width tells the families apart.
TEXT_ENCODER_WIDTH = {768: "sd1", 1024: "sd2"}


def model_family(spec: str | None) -> tuple[str | None, str]:
    """(family, how it was decided) of a ``--model`` / ``--transfer-model`` value."""
    if spec is None:
        return None, "no model given"
    if spec in EMBEDDED:
        return EMBEDDED[spec], f"embedded model '{spec}'"
    folder = Path(spec).expanduser()
    config = folder / "text_encoder" / "config.json"
    if config.is_file():
        try:
            width = json.loads(config.read_text(encoding="utf-8")).get("hidden_size")
        except (OSError, ValueError):
            width = None
        if width in TEXT_ENCODER_WIDTH:
            return TEXT_ENCODER_WIDTH[width], f"{config}: text encoder width {width}"
        return None, (f"{config}: text encoder width {width!r} is neither SD 1.x's (768) nor SD "
                      "2.x's (1024)")
    lowered = spec.lower()
    for pattern, family in NAME_PATTERNS:
        if pattern in lowered:
            return family, f"model id '{spec}' contains '{pattern}'"
    return None, (f"'{spec}' is not a model this toolkit can place in a family "
                  f"({', '.join(FAMILIES)})")
