"""Scenario files: the bundled catalogue validates; bad files give errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import ScenarioError
from audit.scenario import CATALOGUE_DIR, catalogue_files, load_scenario

GOOD = """\
id: {id}
version: 1
title: t
why: w
source: s
tags: [smoke]
attack:
  - jpeg: {{quality: 75}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_catalogue_has_the_four_scenario_kinds() -> None:
    ids = [p.stem for p in catalogue_files()]
    assert ids == ["jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma"]
    scenarios = {i: load_scenario(CATALOGUE_DIR / f"{i}.yaml") for i in ids}
    assert scenarios["jpeg-q75"].attack[0].part == "jpeg"
    assert scenarios["jpeg-q75"].attack[0].params == {"quality": 75}
    assert len(scenarios["prompt-mismatch"].exploit.variants) == 3
    assert scenarios["zero-sigma"].exploit.posterior.sigma == "zero"
    assert scenarios["no-attack"].attack == []


def test_good_file_loads_and_hash_is_stable(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a")))
    b = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a") + "\n# comment\n"))
    assert a.definition_hash() == b.definition_hash()
    assert a.exploit_prompts("p") == ["p"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.format(id="x").replace("quality", "qualty"), ["x.yaml", "qualty", "did you mean 'quality'"]),
        (GOOD.format(id="x").replace("jpeg:", "jpg:"), ["x.yaml", "attack[0]", "unknown scenario part 'jpg'", "jpeg"]),
        (GOOD.format(id="x").replace("75", "175"), ["x.yaml", "quality", "less than or equal to 100"]),
        (GOOD.format(id="x").replace("version: 1", "versoin: 1"), ["x.yaml", "versoin", "did you mean 'version'"]),
        (GOOD.format(id="x") + "verdict: {metric: brisque, retained_at_least: high}\n", ["x.yaml", "verdict.retained_at_least"]),
        (GOOD.format(id="x") + "verdict: {metric: identity_similarty}\n", ["x.yaml", "verdict.metric", "did you mean 'identity_similarity'"]),
        ("id: x\n  bad: [indent\n", ["x.yaml", "not valid YAML"]),
        ("- just\n- a list\n", ["x.yaml", "must hold a mapping"]),
        (GOOD.format(id="other"), ["x.yaml", "'other'", "file is named"]),
        (GOOD.format(id="x") + "exploit: {posterior: {sigma: tiny}}\n", ["x.yaml", "exploit.posterior.sigma"]),
    ],
)
def test_bad_files_name_file_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, "x.yaml", text))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message


def test_extends_merges_and_detects_cycles(tmp_path: Path) -> None:
    write(tmp_path, "_base.yaml", GOOD.format(id="_base"))
    child = write(tmp_path, "child.yaml", "extends: _base.yaml\nid: child\nattack:\n  - gaussian_blur: {sigma_px: 2}\n")
    scenario = load_scenario(child)
    assert scenario.title == "t" and scenario.attack[0].part == "gaussian_blur"
    assert [p.name for p in catalogue_files(tmp_path)] == ["child.yaml"]
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ScenarioError, match="cycle"):
        load_scenario(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", "extends: missing.yaml\n")
    with pytest.raises(ScenarioError, match="missing.yaml.*not found"):
        load_scenario(tmp_path / "c.yaml")
