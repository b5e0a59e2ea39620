"""Shared fixtures: the built-in tiny model and the bundled subject (built once per session)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    from audit.diffusion import load_model

    return load_model("tiny", "cpu")


@pytest.fixture(scope="session")
def images() -> torch.Tensor:
    """The bundled subject's 4 views at the smoke resolution (64 px)."""
    from audit.data.subjects import load_subject

    return load_subject("astronaut", None, 64).images
