"""Packaging: the wheel builds without setuptools warnings and ships every data file.

Built offline from a copy of the sources (so the working tree gets no ``build/``), with the
venv's own setuptools (``--no-build-isolation``), then installed non-editable into a folder
and used from there: weights verified, scenarios found, report template loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "audit", "reports", "scenarios")


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=240
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The built wheel and pip's verbose output (which includes the build backend's)."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip(
            "setuptools is not installed in this environment, so the wheel cannot be built without "
            "build isolation (offline); install the test extra: pip install -e '.[test]'"
        )
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # __pycache__ folders come along on purpose: they must stay out
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, src / name)
    out = tmp / "dist"
    result = _pip("wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out),
                  str(src), cwd=tmp)
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"pip wheel failed:\n{log[-6000:]}"
    (built,) = out.glob("protection_audit-*.whl")
    return built, log


def test_build_has_no_backend_warnings(wheel: tuple[Path, str]) -> None:
    _, log = wheel
    lines = [line for line in log.splitlines() if "Warning" in line or "absent from" in line]
    assert ("BuildBackendWarning" not in log
            and "absent from the `packages` configuration" not in log), "\n".join(lines)


def test_wheel_ships_weights_template_and_scenarios(wheel: tuple[Path, str]) -> None:
    built, _ = wheel
    names = set(zipfile.ZipFile(built).namelist())
    expected = {"reports/templates/report.html.j2", "scenarios/README.md"}
    for tiny in ("audit/models/weights/tiny", "audit/models/weights/tiny_2",
                 "audit/models/weights/tiny_inpainting"):
        sums = (ROOT / tiny / "SHA256SUMS").read_text().split("\n")
        weight_files = {f"{tiny}/{line.split(maxsplit=1)[1].lstrip('*')}" for line in sums
                        if line.strip()}
        assert len(weight_files) >= 2
        expected |= weight_files | {f"{tiny}/SHA256SUMS", f"{tiny}/MODEL_CARD.md"}
    expected |= {f"scenarios/{p.name}" for p in (ROOT / "scenarios").glob("*.yaml")}
    assert not expected - names, sorted(expected - names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")
                or n.startswith(("tests/", "training/"))]
    assert "audit/plugin.py" in names and any(n.endswith("entry_points.txt") for n in names)


def test_non_editable_install_finds_its_data(wheel: tuple[Path, str], tmp_path: Path) -> None:
    built, _ = wheel
    target = tmp_path / "site"
    result = _pip("install", "--no-deps", "--no-index", "--target", str(target), str(built),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    code = f"""
from pathlib import Path
import audit, reports
target = Path({str(target)!r}).resolve()
assert Path(audit.__file__).resolve().is_relative_to(target), audit.__file__
from audit.diffusion.tiny import tiny_weights_path, verify_weights
assert tiny_weights_path().resolve().is_relative_to(target)
verify_weights(tiny_weights_path())
verify_weights(tiny_weights_path("tiny-inpainting"))
from audit.config.scenario import catalogue_files
files = catalogue_files()
assert len(files) >= 4 and all(f.resolve().is_relative_to(target) for f in files), files
from reports.render import _environment
assert Path(_environment().get_template("report.html.j2").filename).resolve().is_relative_to(target)
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=180)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr


# Stands in for python3 and for the venv's python: "-m venv DIR" makes DIR/bin/python (a copy
# of this script); anything else ("-m pip ...") prints 200 lines, as pip does, and fails when
# its arguments contain $FAKE_FAIL.
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
for i in $(seq 1 200); do echo "installer line $i: $*"; done
if [ -n "${FAKE_FAIL:-}" ]; then
  case "$*" in
    *"$FAKE_FAIL"*) echo "ERROR: No matching distribution found for $FAKE_FAIL" >&2; exit 1 ;;
  esac
fi
exit 0
"""


def _fake_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A checkout holding ./dev and what its install stamp reads, and a fake python to run it."""
    if not (shutil.which("bash") and shutil.which("sha256sum")):
        pytest.skip("./dev needs bash and sha256sum (coreutils)")
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("dev", "pyproject.toml", "constraints.txt"):
        shutil.copy2(ROOT / name, root / name)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return root, {**os.environ, "PYTHON": str(fake), "FAKE_FAIL": ""}


def _dev(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "dev"), "echo", "ran"], cwd=root.parent, env=env,
                          capture_output=True, text=True, timeout=60)


def test_dev_first_run_prints_a_few_lines_and_logs_the_rest(tmp_path: Path) -> None:
    root, env = _fake_checkout(tmp_path)
    first = _dev(root, env)
    assert first.returncode == 0 and first.stdout == "ran\n", first.stderr
    assert len(first.stderr.splitlines()) <= 8, first.stderr
    assert ".venv/install.log" in first.stderr and "installer line" not in first.stderr
    log = (root / ".venv" / "install.log").read_text()
    assert log.count("installer line") == 4 * 200  # 4 pip steps (the fake venv step prints nothing)
    assert "torch" in log and "facenet-pytorch==2.6.0" in log
    again = _dev(root, env)  # installed: nothing printed, the command runs at once
    assert again.returncode == 0 and again.stdout == "ran\n" and again.stderr == ""


def test_dev_failed_install_names_the_log(tmp_path: Path) -> None:
    root, env = _fake_checkout(tmp_path)
    failed = _dev(root, {**env, "FAKE_FAIL": "facenet"})
    assert failed.returncode != 0 and "ran" not in failed.stdout
    assert "FAILED" in failed.stderr and "facenet-pytorch" in failed.stderr
    assert str(root / ".venv"
               / "install.log") in failed.stderr and "No matching distribution" in failed.stderr
    assert len(failed.stderr.splitlines()) <= 30, failed.stderr
    assert not (root / ".venv" / ".installed").exists()
    retried = _dev(root, env)  # the cause fixed, ./dev installs and runs
    assert retried.returncode == 0 and retried.stdout == "ran\n"
