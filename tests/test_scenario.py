"""Scenario files: the bundled catalogue validates; bad files give errors naming file and field.

Every part is written ``name: {params}`` (``attack`` steps, ``exploit``); ``variants`` are
partial overrides of the scenario's ``attack`` / ``exploit``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.config.scenario import CATALOGUE_DIR, Step, catalogue_files, load_scenario
from audit.errors import ScenarioError

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
    ids = ["jpeg-q75", "no-attack", "prompt-mismatch", "zero-sigma"]
    assert set(ids) <= {p.stem for p in catalogue_files()}
    scenarios = {i: load_scenario(CATALOGUE_DIR / f"{i}.yaml") for i in ids}
    jpeg = scenarios["jpeg-q75"]
    assert jpeg.attack[0].part == "jpeg" and jpeg.attack[0].params == {"quality": 75}
    assert jpeg.exploit == Step(part="standard", params={})
    for s in scenarios.values():  # the audit's standard exploit (--exploit), changed or not
        assert s.exploit.part == "standard"
    assert scenarios["zero-sigma"].exploit.params["posterior"]["sigma"] == "zero"
    assert scenarios["no-attack"].attack == []
    mismatch = scenarios["prompt-mismatch"]
    assert len(mismatch.variants) == 3
    prompts = [exploit.params["instance_prompt"] for _, _, exploit in mismatch.resolved_variants()]
    assert prompts == ["a photo of sks person", "a photo of sks face", "a dslr portrait of sks "
            "person"]
    assert all(attack == [] for _, attack, _ in mismatch.resolved_variants())
    # One exploit run for a scenario without variants: its own attack and exploit.
    ((label, attack, exploit),) = jpeg.resolved_variants()
    assert attack == jpeg.attack and exploit == jpeg.exploit


def test_good_file_loads_and_hash_is_stable(tmp_path: Path) -> None:
    a = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a")))
    b = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a") + "\n# comment\n"))
    assert a.definition_hash() == b.definition_hash()
    c = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a").replace("75", "76")))
    assert c.definition_hash() != a.definition_hash()
    # The exploit defaults to the standard one with no scenario-level parameters (the tier fills
    # them in).
    assert a.exploit == Step(part="standard", params={})
    # Only the parameters written are kept (validated); defaults are not frozen into the scenario.
    d = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a") + "exploit: {dreambooth: "
            "{posterior: {sigma: zero}}}\n"))
    assert d.exploit.params == {"posterior": {"sigma": "zero"}}
    e = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a") + "exploit: standard\n"))
    assert e.exploit == a.exploit
    f = load_scenario(write(tmp_path, "a.yaml", GOOD.format(id="a") + "exploit: dreambooth\n"))
    # named: stays DreamBooth whatever --exploit says
    assert f.exploit == Step(part="dreambooth", params={})


def test_variants_are_partial_overrides(tmp_path: Path) -> None:
    text = GOOD.format(id="v") + (
        "exploit: {dreambooth: {steps: 7, posterior: {sigma: zero}}}\nvariants:\n  - exploit: "
        "{dreambooth: {instance_prompt: a photo of sks face}}\n  - label: blurred\n    attack:\n   "
        "   - gaussian_blur: {sigma_px: 2}\n  - exploit: {dreambooth: {posterior: {sigma: fixed, "
        "value: 1.0e-7}}}\n    attack: []\n"
    )
    scenario = load_scenario(write(tmp_path, "v.yaml", text))
    (l0, a0, e0), (l1, a1, e1), (l2, a2, e2) = scenario.resolved_variants()
    # Variant 0: the exploit params merged over the scenario's (the variant wins), attack kept.
    assert e0.params == {"steps": 7, "posterior": {"sigma": "zero"},
                         "instance_prompt": "a photo of sks face"}
    assert [s.part for s in a0] == ["jpeg"] and "instance_prompt=a photo of sks face" in l0
    # Variant 1: the attack replaced, the exploit kept, its label used.
    assert l1 == "blurred" and [s.part for s in a1] == ["gaussian_blur"] and e1 == scenario.exploit
    # Variant 2: nested params merged key by key; an empty attack list removes the attack.
    assert e2.params == {"steps": 7, "posterior": {"sigma": "fixed", "value": 1e-7}}
    assert a2 == [] and l2


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("x.yaml", GOOD.format(id="x").replace("quality", "qualty"),
         ["x.yaml", "attack[0]", "qualty", "did you mean 'quality'"]),
        ("x.yaml", GOOD.format(id="x").replace("jpeg:", "jpg:"),
         ["x.yaml", "attack[0]", "unknown transform 'jpg'", "did you mean 'jpeg'"]),
        ("x.yaml", GOOD.format(id="x").replace("75", "175"), ["x.yaml", "attack[0]", "quality",
                                                              "less than or equal to 100"]),
        ("x.yaml", GOOD.format(id="x").replace("{quality: 75}", "75"),
         ["x.yaml", "attack[0]", "must be a mapping"]),
        ("x.yaml", GOOD.format(id="x").replace("attack:\n  - jpeg: {quality: 75}", "attack: {jpeg: "
                "{quality: 75}}"),
         ["x.yaml", "'attack' must be a list"]),
        ("x.yaml", GOOD.format(id="x").replace("version: 1", "versoin: 1"),
         ["x.yaml", "versoin", "did you mean 'version'"]),
        ("x.yaml", GOOD.format(id="x") + "verdict: {metric: brisque, retained_at_least: high}\n",
         ["x.yaml", "verdict.retained_at_least"]),
        ("x.yaml", GOOD.format(id="x") + "verdict: {metric: dlib_identity_similarty}\n",
         ["x.yaml", "verdict.metric", "did you mean 'dlib_identity_similarity'"]),
        ("x.yaml", GOOD.format(id="x") + "verdict: {metric: identity_similarity}\n",
         ["x.yaml", "verdict.metric", "was renamed", "'dlib_identity_similarity'", "'fds'"]),
        ("x.yaml", "id: x\n  bad: [indent\n", ["x.yaml", "not valid YAML"]),
        ("x.yaml", "- just\n- a list\n", ["x.yaml", "must hold a mapping"]),
        ("x.yaml", GOOD.format(id="other"), ["x.yaml", "'other'", "file is named"]),
        ("x.yaml", GOOD.format(id="x") + "exploit: {dreambooth: {posterior: {sigma: tiny}}}\n",
         ["x.yaml", "exploit", "posterior.sigma", "'zero'"]),
        ("x.yaml", GOOD.format(id="x") + "exploit: {dreambooth: {steps: -5}}\n",
         ["x.yaml", "exploit", "steps", "greater than or equal to 1"]),
        ("x.yaml", GOOD.format(id="x") + "exploit: {dreambooth: {instance_promt: a}}\n",
         ["x.yaml", "exploit", "instance_promt", "did you mean 'instance_prompt'"]),
        ("x.yaml", GOOD.format(id="x") + "exploit: {dreambooht: {}}\n",
         ["x.yaml", "unknown exploit 'dreambooht'", "did you mean 'dreambooth'"]),
        ("x.yaml", GOOD.format(id="x") + "exploit: {dreambooth: {}, lora: {}}\n",
         ["x.yaml", "exploit", "name: {params}"]),
        # The grammar of earlier versions gets a migration message, not a bare "unknown field".
        ("x.yaml", GOOD.format(id="x") + "exploit: {method: dreambooth, instance_prompt: a photo "
                                         "of sks face}\n",
         ["x.yaml", "exploit", "old form 'method: dreambooth", "exploit: {dreambooth: {"]),
        # id: no is YAML's boolean False: the message says to quote it.
        ("no.yaml", GOOD.format(id="x").replace("id: x", "id: no"),
         ["no.yaml", "'id' must be text", "bool", 'Quote it: id: "no"']),
        ("x.yaml", GOOD.format(id="x") + "variants:\n  - exploit: {dreambooth: {instance_prompt: "
                                         "a}}\n    atack: []\n",
         ["x.yaml", "variants[0]", "atack", "overrides 'attack' and/or 'exploit'"]),
        ("x.yaml", GOOD.format(id="x") + "variants:\n  - label: only a label\n",
         ["x.yaml", "variants[0]", "overrides 'attack' and/or 'exploit'"]),
        ("x.yaml", GOOD.format(id="x") + "variants:\n  - exploit: {dreambooth: {instance_promt: "
                                         "a}}\n",
         ["x.yaml", "variants[0].exploit", "did you mean 'instance_prompt'"]),
        ("x.yaml", GOOD.format(id="x") + "variants:\n  - attack: [{jpg: {}}]\n",
         ["x.yaml", "variants[0].attack[0]", "did you mean 'jpeg'"]),
        ("x.yaml", GOOD.format(id="x") + "variants:\n  - exploit: {method: dreambooth}\n",
         ["x.yaml", "variants[0].exploit", "old form"]),
        ("x.yaml", GOOD.format(id="x") + "variants: {exploit: {dreambooth: {}}}\n",
         ["x.yaml", "'variants' must be a list"]),
    ],
)
def test_bad_files_name_file_and_field(
        tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, name, text))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, message


def test_extends_merges_and_detects_cycles(tmp_path: Path) -> None:
    write(tmp_path, "_base.yaml", GOOD.format(id="_base") + "exploit: {dreambooth: {steps: 9, "
                                                            "posterior: {sigma: zero}}}\n")
    child = write(
        tmp_path, "child.yaml",
        "extends: _base.yaml\nid: child\nattack:\n  - gaussian_blur: {sigma_px: 2}\nexploit: "
        "{dreambooth: {instance_prompt: a photo of sks face}}\n",
    )
    scenario = load_scenario(child)
    # lists replaced
    assert scenario.title == "t" and [s.part for s in scenario.attack] == ["gaussian_blur"]
    # Mappings merge: the child's exploit params are added to the base's.
    assert scenario.exploit.params == {"steps": 9, "posterior": {"sigma": "zero"},
                                       "instance_prompt": "a photo of sks face"}
    assert [p.name for p in catalogue_files(tmp_path)] == ["child.yaml"]
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ScenarioError, match="cycle"):
        load_scenario(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", "extends: missing.yaml\n")
    with pytest.raises(ScenarioError, match="missing.yaml.*not found"):
        load_scenario(tmp_path / "c.yaml")
