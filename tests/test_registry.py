"""The one parts registry, the ``name: {params}`` grammar, and ``python -m audit ls|validate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from audit.__main__ import main
from audit.config.scenario import CATALOGUE_DIR, catalogue_files, load_scenario
from audit.errors import ScenarioError
from audit.parts import EXPLOITS, METRICS, PROTECTIONS, REGISTRIES, TRANSFORMS
from audit.parts.registry import (
    KINDS,
    InvalidParams,
    PartSpec,
    Registry,
    UnknownPart,
    did_you_mean,
    parse_spec,
)

ROOT = Path(__file__).resolve().parent.parent
_C = "audit.parts.transforms.corruptions"


def registry() -> Registry:
    reg = Registry("transform")
    reg.register("jpeg", target=f"{_C}:jpeg", params=f"{_C}:JpegParams", description="JPEG",
                 source="paper A")
    reg.register("gaussian_noise", target=f"{_C}:gaussian_noise",
                 params=f"{_C}:GaussianNoiseParams",
                 description="noise", source="paper B", random=True, version=3)
    return reg


# -- the registry ------------------------------------------------------------------------------
def test_register_get_and_list() -> None:
    reg = registry()
    part = reg.get("jpeg")
    assert (part.kind, part.name, part.description, part.source, part.version) == (
        "transform", "jpeg", "JPEG", "paper A", 1)
    assert not part.random and reg.get("gaussian_noise").random
    assert reg.names() == ["gaussian_noise", "jpeg"] and [p.name for p in reg] == reg.names()
    assert "jpeg" in reg and "jpg" not in reg
    from audit.parts.transforms.corruptions import JpegParams, jpeg

    assert part.load() is jpeg and part.params_model() is JpegParams
    assert part.identity() == {"kind": "transform", "name": "jpeg", "version": 1,
                               "target": f"{_C}:jpeg"}
    assert reg.get("gaussian_noise").identity()["version"] == 3


def test_unknown_name_says_did_you_mean_and_lists_the_known() -> None:
    reg = registry()
    with pytest.raises(UnknownPart) as info:
        reg.get("jpg")
    message = str(info.value)
    assert "unknown transform 'jpg'" in message and "did you mean 'jpeg'" in message
    assert "known: gaussian_noise, jpeg" in message
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownPart) as far:
        reg.get("zzzzzz")
    assert "did you mean" not in str(far.value) and "known:" in str(far.value)
    assert did_you_mean("pdi", ["none", "pid", "random"]) == " (did you mean 'pid'?)"
    assert did_you_mean("xyz", ["none", "pid"]) == ""


def test_registering_twice_or_an_unknown_kind_is_refused() -> None:
    reg = registry()
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("jpeg", target=f"{_C}:jpeg", params=f"{_C}:JpegParams", description="d",
                     source="s")
    with pytest.raises(ValueError, match="unknown part kind 'purifier'"):
        Registry("purifier")


def test_the_built_in_registries() -> None:
    assert set(REGISTRIES) == set(KINDS)
    assert REGISTRIES["transform"] is TRANSFORMS and REGISTRIES["exploit"] is EXPLOITS
    assert {"jpeg", "gaussian_blur", "level_jitter"} <= set(TRANSFORMS.names())
    assert {"none", "random", "pid"} <= set(PROTECTIONS.names())
    assert "dreambooth" in EXPLOITS and "subject_similarity" in METRICS
    for kind, reg in REGISTRIES.items():
        for part in reg:
            assert part.kind == kind and part.description and part.source, part
            assert ":" in part.target and ":" in part.params
    # The flags that drive seeds and cache keys.
    assert PROTECTIONS.get("pid").random and PROTECTIONS.get("pid").uses_model
    assert not PROTECTIONS.get("none").random and EXPLOITS.get("dreambooth").uses_model


# -- validation and the name: {params} grammar ------------------------------------------------
def test_validate_fills_defaults_and_names_bad_fields() -> None:
    jpeg = TRANSFORMS.get("jpeg")
    assert jpeg.validate(None).quality == 75 and jpeg.validate({"quality": 10}).quality == 10
    with pytest.raises(InvalidParams) as info:
        jpeg.validate({"qualty": 10})
    assert ("unknown field 'qualty'" in str(info.value)
            and "did you mean 'quality'" in str(info.value))
    assert "allowed: quality" in str(info.value) and "transform 'jpeg'" in str(info.value)
    with pytest.raises(InvalidParams, match=r"field 'quality': Input should be greater than or "
                                            r"equal to 1"):
        jpeg.validate({"quality": 0})
    with pytest.raises(InvalidParams, match=r"here: field 'quality'"):
        jpeg.validate({"quality": 101}, "here")
    with pytest.raises(InvalidParams, match=r"field 'sigma_px': Field required"):
        TRANSFORMS.get("gaussian_blur").validate({})
    # Parameters are immutable (they are cache keys).
    with pytest.raises(Exception, match="frozen"):
        jpeg.validate({}).quality = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "params"),
    [("jpeg", {"quality": 75}), ({"jpeg": {"quality": 50}}, {"quality": 50}),
     ({"jpeg": None}, {"quality": 75}),
     ({"jpeg": {}}, {"quality": 75})],
)
def test_parse_spec_forms(raw, params) -> None:
    spec = parse_spec(TRANSFORMS, raw, "attack[0]", "'- jpeg: {quality: 75}'")
    assert spec == PartSpec("transform", "jpeg", params)
    assert spec.to_dict() == {"jpeg": params}
    assert spec.label() == f"jpeg(quality={params['quality']})"


def test_partial_keeps_only_what_is_written_full_fills_defaults() -> None:
    def parse(raw, partial: bool) -> dict:
        return parse_spec(EXPLOITS, raw, "exploit", "e.g.", partial=partial).params

    assert parse("dreambooth", True) == {} and parse({"dreambooth": None}, True) == {}
    assert parse(
        {"dreambooth": {"posterior": {"sigma": "zero"}}}, True) == {"posterior": {"sigma": "zero"}}
    assert parse({"dreambooth": {"steps": 5}}, True) == {"steps": 5}
    full = parse({"dreambooth": {"steps": 5}}, False)
    assert (full["steps"] == 5 and full["lr"] == 2e-6 and full["posterior"]
            == {"sigma": "sample", "value": None})
    # Partial parameters are still validated.
    with pytest.raises(InvalidParams, match=r"exploit.dreambooth: field 'steps'.*greater than or "
                                            r"equal to 1"):
        parse({"dreambooth": {"steps": 0}}, True)
    assert PartSpec("exploit", "dreambooth", {}).label() == "dreambooth"


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("jpg", ["attack[0]", "unknown transform 'jpg'", "did you mean 'jpeg'"]),
        ({"jpeg": {"qualty": 75}}, ["attack[0].jpeg", "unknown field 'qualty'", "did you mean "
                "'quality'"]),
        ({"jpeg": {"quality": 175}}, ["attack[0].jpeg", "field 'quality'", "less than or equal to "
                "100"]),
        ({"gaussian_blur": {"sigma_px": -1}}, ["attack[0].gaussian_blur", "field 'sigma_px'",
                                               "greater than 0"]),
        ({"jpeg": 75}, ["attack[0].jpeg", "parameters must be a mapping"]),
        (
            {"jpeg": {}, "resize": {}}, ["attack[0]", "write one part as 'name: {params}'",
                                         "EXAMPLE"]),
        (["jpeg"], ["attack[0]", "'name: {params}'"]),
    ],
)
def test_parse_spec_errors_name_the_place_and_the_field(raw, fragments) -> None:
    with pytest.raises(InvalidParams) as info:
        parse_spec(TRANSFORMS, raw, "attack[0]", "EXAMPLE")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# -- python -m audit ls ------------------------------------------------------------------------
def test_ls_lists_every_part_of_every_kind_with_description_and_source(capsys) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for heading in ("transforms:", "protections:", "exploits:", "metrics:", "scenarios:"):
        assert heading in out
    lines = out.splitlines()
    for reg in REGISTRIES.values():
        for part in reg:
            line = next((x for x in lines if x.strip().startswith(part.name + " ")), None)
            assert line is not None, part.name
            assert part.description in line and part.source in line, line
            flags = line.rsplit(" [", 1)[1] if line.endswith("]") else ""
            assert (("random" in flags) == part.random and ("uses model" in flags)
                    == part.uses_model), line
    for path in sorted(CATALOGUE_DIR.glob("*.yaml")):
        assert load_scenario(path).title in out


@pytest.mark.parametrize(("what", "kind"), [("transforms", "transform"),
                                            ("protections", "protection"),
                                            ("exploits", "exploit"), ("metrics", "metric")])
def test_ls_one_kind(capsys, what: str, kind: str) -> None:
    assert main(["ls", what]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert out.startswith(f"{what}:") and listed == REGISTRIES[kind].names()


def test_ls_metrics_shows_direction_paper_and_implementation(capsys) -> None:
    assert main(["ls", "metrics"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("metrics:") and "↑/↓" in out.splitlines()[0]
    for part in METRICS:
        assert part.direction in ("up", "down") and part.implementation, part.name
        line = next(x for x in out.splitlines() if x.strip().startswith(part.name + " "))
        arrow = {"up": "↑", "down": "↓"}[part.direction]
        assert line.strip().split()[1] == arrow, line
        assert (part.description in line and part.source in line
                and part.implementation in line), line
    # The papers' metrics are all listed, offline or not (issue 12).
    papers = {"iqs", "fid", "prd_precision", "prd_recall", "q", "clip_iqac", "lpips", "brisque",
              "edit_ssim", "edit_psnr", "edit_vifp", "edit_fsim"}
    assert papers <= set(METRICS.names())


def test_a_metric_direction_is_up_or_down() -> None:
    reg = Registry("metric")
    with pytest.raises(ValueError, match="direction must be 'up' or 'down'"):
        reg.register("m", target="a:b", params="a:c", description="d", source="s",
                     direction="sideways")
    part = reg.register("n", target="a:b", params="a:c", description="d", source="s",
                        direction="up", implementation="lib")
    assert part.listing().split()[:2] == ["n", "↑"] and part.listing().endswith("· lib")


def _imports_torch(argv: list[str]) -> subprocess.CompletedProcess:
    code = ("import io, sys, contextlib; from audit.__main__ import main\nwith "
            f"contextlib.redirect_stdout(io.StringIO()): rc = main({argv!r})\nassert rc == 0, "
            "rc\nassert 'torch' not in sys.modules, 'torch was imported'")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


@pytest.mark.parametrize("what", ["transforms", "protections", "exploits", "metrics"])
def test_listing_parts_does_not_import_torch(what: str) -> None:
    result = _imports_torch(["ls", what])
    assert result.returncode == 0, result.stderr


def test_ls_does_not_import_torch() -> None:
    result = _imports_torch(["ls"])
    assert result.returncode == 0, result.stderr


# -- python -m audit validate ------------------------------------------------------------------
def test_validate_the_bundled_catalogue(capsys) -> None:
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    n = len(catalogue_files())
    assert f"{n} of {n} scenario files valid" in out and "prompt-mismatch v4, 3 variant(s)" in out
    assert main(["validate", str(CATALOGUE_DIR)]) == 0


def test_validate_reports_the_loaders_message(tmp_path: Path, capsys) -> None:
    for path in sorted(CATALOGUE_DIR.glob("*.yaml")):
        (tmp_path / path.name).write_text(path.read_text())
    bad = tmp_path / "jpeg-q75.yaml"
    bad.write_text(bad.read_text().replace("quality: 75", "qualty: 75"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(bad)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR  {info.value}" in out and "did you mean 'quality'" in out
    n = len(catalogue_files(tmp_path))
    assert "ok     no-attack.yaml" in out and f"{n - 1} of {n} scenario files valid" in out


def test_validate_an_empty_or_missing_folder(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert "no scenario files" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "absent")]) == 2
    assert "scenario folder not found" in capsys.readouterr().err
