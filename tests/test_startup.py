"""Global options are checked once, at start-up: one pytest.UsageError naming the option and the
fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audit.config.options import AuditOptions
from audit.config.startup import SD15_HUB_ID, check_options
from audit.config.tiers import parse_overrides


def refused(**options) -> str:
    with pytest.raises(pytest.UsageError) as info:
        check_options(AuditOptions(**{"protection": "pid", **options}))
    return str(info.value)


@pytest.mark.parametrize("protection", ["none", "random", "pid"])
def test_the_defaults_pass(protection: str) -> None:
    check_options(AuditOptions(protection=protection))
    check_options(AuditOptions(protection=protection, device="cpu", seed=2**32 - 1, replicates=1,
                               epsilon=0.03,
                               overrides=parse_overrides(["dreambooth.steps=5", "pid.steps=2"])))


def test_a_bundled_scenario_folder_and_an_existing_protection_folder_pass(tmp_path: Path) -> None:
    from audit.config.scenario import CATALOGUE_DIR

    check_options(AuditOptions(protection="pid", scenarios=CATALOGUE_DIR))
    check_options(AuditOptions(protection=f"dir:{tmp_path}", epsilon=0.05))


def test_unknown_protection_says_did_you_mean() -> None:
    message = refused(protection="pdi")
    assert "--protection=pdi" in message and "did you mean 'pid'" in message
    assert "package.module:factory" in message and "dir:PATH" in message


def test_unimportable_factory_module() -> None:
    message = refused(protection="no.such.module:factory")
    assert "--protection=no.such.module:factory" in message and ("'no.such.module' cannot be "
             "imported") in message


def test_missing_protection_folder() -> None:
    message = refused(protection="dir:/no/such")
    assert "--protection=dir:/no/such" in message and "does not exist" in message


@pytest.mark.parametrize("model", ["/no/such/dir", "./x"])
def test_missing_model_path(model: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # ./x does not exist here
    message = refused(model=model)
    assert f"--model={model}" in message and "does not exist" in message
    assert SD15_HUB_ID in message and "'tiny'" in message


def test_model_folder_without_the_diffusers_components(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    message = refused(model=str(tmp_path))
    assert "lacks vae/" in message and "unet/" not in message.split("lacks", 1)[1].split(";")[0]
    (tmp_path / "file.bin").write_bytes(b"x")
    assert "is a file" in refused(model=str(tmp_path / "file.bin"))


def test_model_id_not_in_the_local_cache() -> None:
    message = refused(model="nobody/none-such-model")
    assert "--model=nobody/none-such-model" in message and "--allow-download" in message


def test_collect_only_lists_the_paper_tier_without_the_model(tmp_path: Path) -> None:
    """--collect-only runs nothing, so a hub id need not be cached; its form and a folder's layout
    still count."""
    paper = {"protection": "pid", "tier": "paper", "model": "nobody/none-such-model"}
    check_options(AuditOptions(**paper), collect_only=True)
    check_options(AuditOptions(**paper, transfer_model="nobody/other-model"), collect_only=True)
    for model, fragment in (("no-slash-id", "does not exist"), (str(tmp_path), "lacks vae/")):
        with pytest.raises(pytest.UsageError, match=fragment):
            check_options(AuditOptions(**{**paper, "model": model}), collect_only=True)
    with pytest.raises(pytest.UsageError, match="is --model itself"):
        check_options(AuditOptions(**paper, transfer_model=paper["model"]), collect_only=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda() -> None:
    message = refused(device="cuda")
    assert "--device=cuda" in message and "cpu" in message


def test_unknown_device() -> None:
    assert "--device=bogus" in refused(device="bogus")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"seed": -1}, ["--seed=-1", "non-negative"]),
        ({"seed": 2**32}, ["--seed=4294967296", "too large"]),
        ({"replicates": 0}, ["--replicates=0", "at least 1"]),
        ({"epsilon": 8.0}, ["--epsilon=8.0", "[0,1] pixel units", "8/255"]),
        ({"epsilon": -0.1}, ["--epsilon=-0.1", "[0,1]"]),
        ({"epsilon": float("nan")}, ["--epsilon=nan"]),
        ({"tier": "smok"}, ["unknown tier 'smok'", "did you mean 'smoke'"]),
    ],
)
def test_bad_numbers_and_names(options: dict, fragments: list[str]) -> None:
    message = refused(**options)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("tier", ["standard", "paper"])
def test_real_model_tiers_on_the_tiny_model(tier: str) -> None:
    message = refused(tier=tier)
    assert f"--tier={tier}" in message and SD15_HUB_ID in message and "--tier=smoke" in message
    assert ("PGD-1000" in message) == (tier
                                       == "paper") and (
                                           "PGD-200" in message) == (tier == "standard")


@pytest.mark.parametrize(
    ("items", "fragments"),
    [
        (["dreambooth.steps=-5"], ["dreambooth", "steps", "greater than or equal to 1"]),
        (["dreambooh.steps=5"], ["unknown section 'dreambooh'", "did you mean 'dreambooth'"]),
        (["generation.images_per_prompt=0"], ["images_per_prompt", "greater than or equal to 1"]),
    ],
)
def test_bad_overrides(items: list[str], fragments: list[str]) -> None:
    message = refused(overrides=parse_overrides(items))
    for fragment in fragments:
        assert fragment in message, message


def test_scenario_folder_empty_or_missing(tmp_path: Path) -> None:
    # a base for extends: not a runnable scenario
    (tmp_path / "_base.yaml").write_text("id: _base\n")
    message = refused(scenarios=tmp_path)
    assert f"--scenarios={tmp_path}" in message and "no scenario files" in message
    assert "scenario folder not found" in refused(scenarios=tmp_path / "absent")


def test_the_first_problem_is_reported_as_one_usage_error() -> None:
    """Several problems: one error (exit status 4), not one traceback per case."""
    message = refused(seed=-1, protection="pdi", device="bogus")
    assert "--seed=-1" in message and "pdi" not in message
