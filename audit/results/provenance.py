"""Provenance of a run: versions, host and settings that make every number reproducible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from audit import __version__
from audit.config.options import AuditOptions


def run_provenance(options: AuditOptions) -> dict[str, Any]:
    """Versions and settings that make every number in the results reproducible."""
    import platform
    import subprocess
    import sys

    from audit.parts.metrics.base import package_version

    versions: dict[str, str | None] = {"protection-audit": __version__,
                                       "python": sys.version.split()[0]}
    for distribution in (
        "torch", "torchvision", "diffusers", "transformers", "numpy", "scipy", "piq",
        "open-clip-torch", "dlib-bin",
        "face-recognition-models", "brisque", "facenet-pytorch", "scikit-image", "pillow",
    ):
        versions[distribution] = package_version(distribution)
    versions["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "toolkit_version": __version__, "git_commit": commit, "versions": versions,
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "options": options.to_dict(), "tier_settings": options.tier_settings.to_dict(),
        "non_standard": options.non_standard,
        "replicates": replicates_origin(options),
    }


def replicates_origin(options: AuditOptions) -> dict[str, Any]:
    """K and the layer that set it (--replicates and --audit-set replicates must agree: startup)."""
    source = ("--replicates" if options.replicates is not None else
              "--audit-set replicates" if "replicates" in options.overrides.get("", {})
              else f"tier '{options.tier}'")
    return {"value": options.tier_settings.replicates, "source": source}


def cpu_description() -> dict[str, str | None]:
    """The CPU and the vector instruction set torch's kernels use on it. On the CPU a rerun is
    bitwise identical only on the same kind of host (measured: the smoke audit's m_c 0.4841 on
    one 2-core host, 0.4813 on another with the same code and torch 2.14.1, well inside the
    interval over replicates), so a results file says which host it came from."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        model = platform.processor() or None
    return {"model": model, "torch_capability": torch.backends.cpu.get_cpu_capability()}
