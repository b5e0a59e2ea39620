"""What a purifier gets besides the images: the model it purifies with, the device, the seeded
generator, and a list of notes for the case's record.

A transform whose function takes a ``context`` keyword receives a ``TransformContext``
(``audit/run/stages.py``: ``Stages.transform``). Its ``model`` is the purifier's model: the
audited latent diffusion model unless the transform's ``model`` parameter names another (a
diffusers folder or a Hugging Face id in the local cache); the stage's cache key carries that
model's fingerprint, so a purification is never served from another model's entry. ``notes``
are sentences the case's record carries as flags (e.g. "IMPRESS with 1 − SSIM instead of
LPIPS"): they are stored with the cached output, so a cache hit reports them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from audit.errors import AuditError

AUDITED = "audited"  # the ``model`` parameter's value for "the model under audit"


class TransformUnavailable(AuditError):
    """A transform whose weights or package are not on this machine. The message starts with
    "unavailable: <what> weights not found" and says how to provide them; the engine records
    the case as an error with that reason (a user error: nothing is silently skipped)."""


@dataclass
class TransformContext:
    """The purifier's model (None for model-free transforms), device and seeded generator."""

    model: Any
    device: torch.device
    generator: torch.Generator
    notes: list[str] = field(default_factory=list)

    def note(self, sentence: str) -> None:
        if sentence not in self.notes:
            self.notes.append(sentence)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """The nearest 8-bit level of each value in [0,1] (round half to even), kept as float:
    what saving to PNG does when it rounds, which the authors' scripts do not (they truncate,
    −0.5 level on average)."""
    return torch.round(images.clamp(0, 1) * 255) / 255
