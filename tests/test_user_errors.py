"""Nothing silently wrong (issue 20): budgets, non-finite output, conflicting options, broken
factories, unusable folders and resolutions, and the messages a new user meets.

Everything here fails before any compute: in-process where the check is a function, in a pytest
subprocess (``pytester``) only where the point is the exit status or the terminal output.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from audit.config.options import AuditOptions
from audit.config.scenario import CATALOGUE_DIR
from audit.config.startup import check_options
from audit.config.tiers import get_tier, parse_overrides
from audit.data.images import to_uint8
from audit.errors import BudgetExceeded, ProtectionError
from audit.parts.protections.base import Protection, ProtectionOutput
from audit.parts.registry import PartSpec
from audit.results.summary import audit_answer
from audit.run.cache import Cache
from audit.run.planner import ChainStep
from audit.run.progress import Progress
from audit.run.stages import Stages

pytest_plugins = ["pytester"]

# A factory protection that declares ε = 0.05 and adds 10 levels (10/255 = 0.039).
TEN_LEVELS = '''
import torch
from audit.data.images import to_uint8
from audit.parts.protections.base import Protection, ProtectionOutput


class TenLevels(Protection):
    name = "ten-levels"
    random = False

    def protect(self, images, ctx):
        return ProtectionOutput((to_uint8(images).int() + 10).clamp(0, 255).to(torch.uint8))


def make():
    return TenLevels(epsilon=0.05)
'''


@pytest.fixture
def user_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return folder


def write_module(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.py").write_text(text)
    sys.modules.pop(name, None)
    importlib.invalidate_caches()


def fake_subject(value: float = 0.5) -> SimpleNamespace:
    from audit.data.kinds import PERSON

    return SimpleNamespace(name="s", images=torch.full((2, 3, 8, 8), value),
                           content_hash=f"flat-{value}", kind=PERSON)


def refused(**options) -> str:
    with pytest.raises(pytest.UsageError) as info:
        check_options(AuditOptions(**{"protection": "pid", **options}))
    return str(info.value)


# -- 1. --epsilon is the judged budget for every kind of protection --------------------------------
def test_epsilon_is_the_budget_judged_for_a_factory_protection(
        tmp_path: Path, user_modules: Path) -> None:
    """Issue 20, item 1: --epsilon 0.01 was recorded but the factory's own 0.05 was judged (linf
    0.039 passed)."""
    from audit.run.session import AuditSession
    from tests.records import case_record

    write_module(user_modules, "ten_levels", TEN_LEVELS)
    session = AuditSession(AuditOptions(protection="ten_levels:make", epsilon=0.01,
                                        results_dir=tmp_path / "res"))
    step = ChainStep("protection", PartSpec("protection", "ten-levels", {}), None)
    with pytest.raises(BudgetExceeded) as info:
        session.protected(fake_subject(), step, case_record("x-no-attack-s", "error"))
    assert ("10/255" in str(info.value) and "ε = 0.0100" in str(info.value)
            and "from --epsilon" in str(info.value))
    record = session.protection_record().dump()
    assert record["epsilon"] == 0.01 and record["epsilon_255"] == 2.55
    assert record["budget"] == {"epsilon": 0.01, "judged": True, "declared": 0.05,
                                "source": "--epsilon"}
    # Without --epsilon the protection's own budget is judged, and the record says it is the
    # declared one.
    own = AuditSession(AuditOptions(protection="ten_levels:make", results_dir=tmp_path
                                    / "res")).budget
    assert own["epsilon"] == 0.05 and own["source"].startswith("declared by the protection "
                                                               "(TenLevels.epsilon)")


def test_the_budget_record_names_its_layer_for_built_ins(tmp_path: Path) -> None:
    from audit.run.session import AuditSession

    def budget(**options) -> dict:
        return AuditSession(AuditOptions(results_dir=tmp_path, **options)).budget

    assert budget(protection="pid")["source"] == "part default"
    assert budget(protection="pid", overrides=parse_overrides(["pid.epsilon=0.03"])) == {
        "epsilon": 0.03, "judged": True, "declared": 0.03, "source": "--audit-set pid.epsilon"}
    assert budget(protection="random", epsilon=0.02)["source"] == "--epsilon"
    assert budget(protection=f"dir:{tmp_path}")["judged"] is False


# -- 2 and 9. a protection's output is checked against the interface before anything uses it ------
def stages(root: Path) -> Stages:
    model = SimpleNamespace(fingerprint="model-a")
    return Stages(Cache(root / "cache"), lambda: model, lambda: torch.device("cpu"), lambda: 8,
                  Progress(None))


class OnePixelNaN(Protection):
    name = "one-nan"
    random = False

    def protect(self, images, ctx):
        out = images.clone()
        out[0, 0, 0, 0] = float("nan")
        return ProtectionOutput(out)


class BareTensor(Protection):
    name = "bare"
    random = False

    def protect(self, images, ctx):
        return to_uint8(images)


def test_nan_in_a_protections_output_is_an_error_and_never_cached(tmp_path: Path) -> None:
    """Issue 20, item 2: one NaN pixel became 0, and the ℓ∞ was then made up (204/255)."""
    s = stages(tmp_path)
    step = ChainStep("protection", PartSpec("protection", "one-nan", {}), None)
    with pytest.raises(ProtectionError) as info:
        s.protect(OnePixelNaN(0.05), step, fake_subject(0.8), get_tier("smoke"))
    message = str(info.value)
    assert "'one-nan'" in message and "1 non-finite value(s) (1 NaN, 0 ±inf)" in message
    assert not isinstance(info.value, BudgetExceeded)
    # nothing stored for a later run to trust
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_a_bare_tensor_from_protect_is_told_what_the_interface_expects(tmp_path: Path) -> None:
    """Issue 20, item 9: "AttributeError: 'Tensor' object has no attribute 'images'"."""
    step = ChainStep("protection", PartSpec("protection", "bare", {}), None)
    with pytest.raises(ProtectionError) as info:
        stages(tmp_path).protect(BareTensor(0.05), step, fake_subject(), get_tier("smoke"))
    message = str(info.value)
    assert "protection 'bare': protect returned a bare Tensor" in message
    assert "return ProtectionOutput(images)" in message and "N×3×H×W" in message


# -- 5. one setting given two ways must agree ------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        ({"epsilon": 0.03, "overrides": parse_overrides(["pid.epsilon=0.08"])},
         ["--epsilon=0.03", "--audit-set pid.epsilon=0.08", "twice"]),
        ({"replicates": 2, "overrides": parse_overrides(["replicates=3"])},
         ["--replicates=2", "--audit-set replicates=3", "twice"]),
    ],
)
def test_an_option_and_audit_set_that_disagree_are_refused(
        options: dict, fragments: list[str]) -> None:
    """Issue 20, item 5: --epsilon 0.03 with pid.epsilon=0.08 used 0.03, --replicates 2 with
    replicates=3 used 2."""
    message = refused(**options)
    for fragment in fragments:
        assert fragment in message, message


def test_an_option_and_audit_set_that_agree_pass() -> None:
    check_options(AuditOptions(protection="pid", epsilon=0.03, replicates=2,
                               overrides=parse_overrides(["pid.epsilon=0.03", "replicates=2",
                                                          "random.epsilon=0.2"])))


# -- 6. a broken factory is a usage error naming it ------------------------------------------------
@pytest.mark.parametrize(
    ("source", "spec", "fragments"),
    [
        ("def make():\n    raise RuntimeError('no GPU here')\n", "broken_a:make",
         ["--protection=broken_a:make", "calling make() raised RuntimeError: no GPU here"]),
        ("def make(strength):\n    pass\n", "broken_b:make",
         ["--protection=broken_b:make", "TypeError", "strength", "called without arguments"]),
        ("make = 3\n", "broken_c:make", ["--protection=broken_c:make", "is a int, not callable"]),
        ("def make(:\n", "broken_d:make", ["--protection=broken_d:make", "syntax error",
                                           "broken_d.py, line 1"]),
        ("raise ImportError('needs torch_xla')\n", "broken_e:make",
         ["--protection=broken_e:make", "importing module 'broken_e' raised ImportError: needs "
                                        "torch_xla"]),
        ("def make_it():\n    pass\n", "broken_f:make", ["has no attribute 'make' (did you mean "
                                                         "'make_it'?)"]),
    ],
)
def test_a_broken_factory_is_one_usage_error(user_modules: Path, source: str, spec: str,
                                             fragments: list[str]) -> None:
    """Issue 20, item 6: these were an INTERNALERROR (exit 3) with a 32-line traceback."""
    write_module(user_modules, spec.split(":")[0], source)
    message = refused(protection=spec)
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message


# -- 7 and 8. results folder and resolution are checked at start-up --------------------------------
def test_a_results_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """Issue 20, item 7: the case died with NotADirectoryError, exit 1, no summary or report."""
    file = tmp_path / "results.txt"
    file.write_text("x")
    assert "is an existing file, not a folder" in refused(results_dir=file)
    assert f"lies under {file}, which is a file" in refused(results_dir=file / "sub")
    # created when absent
    check_options(AuditOptions(protection="pid", results_dir=tmp_path / "new" / "folder"))


def test_a_resolution_the_model_cannot_generate_at_is_refused() -> None:
    """Issue 20, item 8: resolution=33 was accepted and failed after 32 s ("divisible by 8")."""
    message = refused(overrides=parse_overrides(["resolution=33"]))
    assert "resolution=33" in message and "multiple of 8" in message and "use 32 or 40" in message
    assert "downsamples by 4" in message  # the tiny model's VAE, read from its config
    check_options(AuditOptions(protection="pid", overrides=parse_overrides(["resolution=40"])))


def test_a_local_models_vae_factor_is_read_from_its_config(tmp_path: Path) -> None:
    import json

    from audit.config.startup import _vae_factor

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae"
     / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))
    assert _vae_factor(str(tmp_path)) == (8, f"{tmp_path}'s vae/config.json")
    assert _vae_factor("tiny")[0] == 4


# -- messages that mislead -------------------------------------------------------------------------
def test_transfer_model_messages_name_the_transfer_model() -> None:
    """A typo in --transfer-model said --model=..., and tiny3 had no "did you mean tiny-2"."""
    # 'tiny' is --model itself, so the transfer model's suggestion is the other built-in model.
    assert refused(transfer_model="tiny3").startswith("--transfer-model=tiny3: model path tiny3 "
                                                      "does not exist (did you mean 'tiny-2'?)")
    assert "did you mean 'tiny'" in refused(model="tiny3")
    message = refused(transfer_model="nobody/none-such-model")
    assert message.startswith("--transfer-model=nobody/none-such-model: not in the local Hugging "
                              "Face cache"), message
    assert "--model=" not in message


def test_replicates_message_agrees_with_the_readme() -> None:
    """--replicates 0 said "3 or more for an interval"; the README says ≥ 2."""
    message = refused(replicates=0)
    assert "2 or more for an interval" in message and "3 or more" not in message
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert "≥ 2 for an interval that covers a rerun" in readme


def test_an_empty_exploit_is_refused() -> None:
    assert "--exploit is empty" in refused(exploit="")
    assert "--exploit is empty" in refused(exploit="  ")


def over_budget_case(budget_exceeded: bool | None = True) -> Any:
    from tests.records import case_record

    return case_record("x-no-attack-s", "fail", "no-attack", budget_exceeded=budget_exceeded,
                       flags=["protection exceeds its budget"])


def test_a_budget_violation_is_its_own_audit_answer() -> None:
    """It read "Does not hold: breaks under no-attack", as a protection broken by an attack
    would."""
    answer = audit_answer([over_budget_case()])
    assert answer.startswith("Exceeds its budget") and "breaks under" not in answer
    from tests.records import case_record

    broken = case_record("x-jpeg-s", "fail", "jpeg")
    assert "It also breaks under jpeg." in audit_answer([over_budget_case(), broken])
    assert audit_answer([broken]) == "Does not hold: breaks under jpeg."
    # records of earlier versions: the flag says it
    legacy = over_budget_case(budget_exceeded=None)
    assert audit_answer([legacy]).startswith("Exceeds its budget")


def test_validate_refuses_extends_outside_the_folder_and_thresholds_above_one(
        tmp_path: Path) -> None:
    from audit.config.scenario import load_scenario
    from audit.errors import ScenarioError

    good = "version: 1\ntitle: t\nwhy: w\nsource: s\n"
    (tmp_path / "outside.yaml").write_text("id: outside\n" + good)
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / "a.yaml").write_text("extends: ../outside.yaml\nid: a\n")
    with pytest.raises(ScenarioError, match=r"'extends' is '\.\./outside\.yaml'; it names a file "
                                            r"of this folder"):
        load_scenario(folder / "a.yaml")
    (folder / "b.yaml").write_text("id: b\n" + good + "verdict: {metric: brisque, "
                                                      "retained_at_least: 2}\n")
    with pytest.raises(ScenarioError, match="retained_at_least.*less than or equal to 1"):
        load_scenario(folder / "b.yaml")


def test_an_extends_cycle_is_reported_against_the_file_loaded(tmp_path: Path) -> None:
    """x.yaml → _a.yaml → _b.yaml → _a.yaml was reported as an error of _a.yaml."""
    from audit.config.scenario import load_scenario
    from audit.errors import ScenarioError

    (tmp_path / "x.yaml").write_text("extends: _a.yaml\nid: x\n")
    (tmp_path / "_a.yaml").write_text("extends: _b.yaml\n")
    (tmp_path / "_b.yaml").write_text("extends: _a.yaml\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "x.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'x.yaml'}: 'extends' forms a cycle (x.yaml -> _a.yaml "
                              "-> _b.yaml -> _a.yaml)")
    assert "_b.yaml extends _a.yaml" in message


# -- exit status and terminal output, as a user sees them (pytest subprocesses; nothing computes) --
FACTORY_RAISES_ON_IMPORT = "raise RuntimeError('this module needs a licence server')\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--protection=raising:make"], "importing module 'raising' raised RuntimeError: this "
                                        "module needs a licence"),
        (["--protection=pid", "--results-dir=FILE"], "is an existing file, not a folder"),
        (["--protection=pid", "--protection=random"], "--protection is given 2 times with "
                                                      "different values (pid, random)"),
        (["--protection=pid", "--exploit="], "--exploit is empty"),
        (["--protection=pid", "--audit-set=resolution=33"], "use 32 or 40"),
    ],
)
def test_usage_errors_exit_4_without_a_traceback(pytester: pytest.Pytester, args: list[str],
                                                 expected: str) -> None:
    pytester.makepyfile(raising=FACTORY_RAISES_ON_IMPORT)
    file = pytester.path / "a-file"
    file.write_text("x")
    args = [a.replace("FILE", str(file)) for a in args]
    result = pytester.runpytest_subprocess(*args, timeout=300)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 4, output
    assert expected in output and "INTERNALERROR" not in output and "Traceback" not in output


def test_no_case_selected_outside_the_smoke_selection_says_full_catalogue(
        pytester: pytest.Pytester) -> None:
    """`--scenarios DIR -k x` with x not tagged smoke: exit 5, "0 selected", and no hint."""
    folder = pytester.path / "scen"
    folder.mkdir()
    shutil.copy(CATALOGUE_DIR / "tvm.yaml", folder / "tvm.yaml")  # not tagged 'smoke'
    result = pytester.runpytest_subprocess("--protection=pid", f"--scenarios={folder}", "-k", "tvm",
                                           timeout=300)
    assert result.ret == 5
    result.stdout.fnmatch_lines(["*no audit case ran*scenarios tagged 'smoke'*not collected: "
                                 "tvm*--full-catalogue*"])


def test_the_report_of_a_budget_violation_says_so() -> None:
    from reports.context import _headline

    views = [{"label": "no-attack · s", "outcome": "fail", "over_budget": True, "flags": []}]
    headline, outcome = _headline(views)
    assert (headline.startswith("Exceeds its ℓ∞ budget in 1 of 1 cases")
            and "Does not hold" not in headline)
    assert outcome == "fail"


def test_the_record_says_which_layer_set_the_replicates() -> None:
    from audit.results.provenance import replicates_origin

    assert replicates_origin(
        AuditOptions(protection="pid")) == {"value": 3, "source": "tier 'smoke'"}
    assert replicates_origin(
        AuditOptions(protection="pid", replicates=2)) == {"value": 2, "source": "--replicates"}
    set_by = AuditOptions(protection="pid", overrides=parse_overrides(["replicates=4"]))
    assert replicates_origin(set_by) == {"value": 4, "source": "--audit-set replicates"}
