"""The untrained reference and the null baseline, through the stages and the engine (fakes).

The untrained reference is the base model's generations with each replicate's prompts,
settings and seed, no fine-tune: one cache entry per (model, generation settings, seed),
shared by every case and rerun. The null baseline is the standard exploit on the images
under uniform noise of the protection's budget (``controls.null_baseline``), reusing cached
runs. Fine-tuning and generation are replaced by fakes (as in tests/test_stages_keys.py) so
that a whole case runs in seconds on the real tiny model's other parts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.tiers import get_tier, parse_overrides
from audit.data.images import to_uint8
from audit.judge import intervals
from audit.results.files import SCHEMA, SCHEMA_VERSION
from audit.run.progress import Progress
from audit.run.stages import generation_config
from tests.test_stages_keys import FakeModel, exploit_run, images_u8, stages

METRIC = "subject_similarity"


@dataclass
class Generated:
    # configs generated with the base model's own UNet
    base: list[Any] = field(default_factory=list)
    tuned: list[Any] = field(default_factory=list)  # configs generated with a fine-tuned UNet
    finetuned_on: list[torch.Tensor] = field(default_factory=list)


class TunedUNet(torch.nn.Linear):
    """What the fake fine-tune returns: remembers its training images when it 'learned' them."""

    def __init__(self, images: torch.Tensor | None) -> None:
        super().__init__(2, 2)
        self.images = images


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[Generated, dict[str, bool]]:
    """Fake fine-tune and generation. A 'learning' fine-tune generates its training images
    (slightly noised, by the generation seed); the base model and a fine-tune that learned nothing
    generate uniform noise. Which UNet generated is recorded."""
    import audit.diffusion.sampling as sampling
    import audit.parts.exploits.dreambooth as dreambooth

    calls, behaviour = Generated(), {"learns": True}

    def finetune(model, images, config, progress, class_images=None):
        calls.finetuned_on.append(images.clone())
        return TunedUNet(images.clone() if behaviour["learns"]
                         else None), model.text_encoder, {"steps": config.steps}

    def generate(model, unet, text_encoder, cfg, resolution, progress):
        n = len(cfg.prompts) * cfg.images_per_prompt
        g = torch.Generator().manual_seed(cfg.seed)
        if unet is model.unet:
            calls.base.append(cfg)
        else:
            calls.tuned.append(cfg)
        learned = getattr(unet, "images", None)
        if learned is None:
            # a fine-tune that learned nothing: noise all the same
            offset = 0 if unet is model.unet else 1
            return torch.rand((n + offset, 3, resolution, resolution), generator=g)[offset:]
        picks = learned[torch.arange(n) % len(learned)]
        noise = 0.04 * torch.randn(picks.shape, generator=g)
        return (torch.nn.functional.interpolate(picks, size=resolution) + noise).clamp(0, 1)

    monkeypatch.setattr(dreambooth, "finetune", finetune)
    monkeypatch.setattr(sampling, "generate", generate)
    return calls, behaviour


# -- the stage -------------------------------------------------------------------------------------
def test_the_untrained_reference_is_the_base_model_with_the_exploits_prompts_and_seed(
        tmp_path: Path, fakes) -> None:
    calls, _ = fakes
    s = stages(tmp_path, model=lambda: FakeModel())
    gen = get_tier("smoke").generation
    run = exploit_run(seed=1_000_003)
    first, key = s.untrained(run.exploit, gen, run.seed)
    assert first.dtype == torch.uint8 and len(first) == 3 * gen.images_per_prompt
    assert s.cache.take_events().misses == ["untrained"]
    # Same prompts, settings and seed as the exploit's own generation, with the base model's UNet.
    s.exploit(run, images_u8(), gen)
    (base,), (tuned,) = calls.base, calls.tuned
    assert base == tuned == generation_config(gen, run.seed)
    # Cached: again, and from a fresh session on the same cache (a rerun), nothing is generated.
    s.cache.take_events()
    again, key_again = s.untrained(run.exploit, gen, run.seed)
    rerun, _ = stages(tmp_path, model=lambda: FakeModel()).untrained(run.exploit, gen, run.seed)
    assert torch.equal(again, first) and torch.equal(rerun, first) and key_again == key
    assert len(calls.base) == 1 and s.cache.take_events().hits == ["untrained"]
    # Another replicate's seed, other generation settings, another model: other entries.
    other_gen = get_tier("smoke", parse_overrides(["generation.images_per_prompt=2"])).generation
    keys = {key, s.untrained(run.exploit, gen, 0)[1],
            s.untrained(run.exploit, other_gen, run.seed)[1]}

    class OtherModel(FakeModel):
        fingerprint = "other-model"

    keys.add(stages(tmp_path, model=lambda: OtherModel()).untrained(run.exploit, gen, run.seed)[1])
    assert len(keys) == 4 and len(calls.base) == 4
    # The fine-tuned weights never enter its key: another recipe shares the reference.
    assert s.untrained(exploit_run(seed=run.seed, steps=7).exploit, gen, run.seed)[1] == key


# -- the plan --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protection", ["pid", "random", "none"])
def test_the_null_baseline_is_planned_per_replicate_at_the_protections_budget(
        protection: str) -> None:
    from audit.parts.protections.build import build_protection
    from audit.run.planner import ProtectionInfo, plan_case

    def plan(tier: str, *items: str):
        t = get_tier(tier, parse_overrides(list(items)))
        p, spec = build_protection(protection, t)
        return plan_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"),
                         ProtectionInfo(spec, p.random), t, 0)

    assert not plan("smoke").runs_for("null_baseline")  # off on the smoke tier (its cost, README)
    on = plan("smoke", "controls.null_baseline=true")
    assert plan("standard").runs_for("null_baseline") == plan("standard",
                                                              "controls.null_baseline=true").runs_for("null_baseline")
    runs = on.runs_for("null_baseline")
    if protection == "none":  # ε = 0: the noise would be the clean images
        assert not runs and not on.notes
        return
    assert [r.replicate for r in runs] == [0, 1, 2] and [r.seed for r in runs] == list(on.seeds)
    for run in runs:
        (step,) = run.chain
        assert (step.spec.name == "random" and step.spec.params == {"epsilon": 0.05} and step.seed
                == run.seed)
        assert run.exploit == on.standard_exploit
    protected = on.runs_for("protected")
    # Auditing 'random': the same runs as the protected ones (computed once); otherwise three more.
    assert ([r.identity for r in runs] == [r.identity
                                           for r in protected]) == (protection == "random")
    assert len(on.unique_runs()) == 6 + (3 if protection == "pid" else 0)
    seeds = "seeds 0, 1000003, 2000006"
    assert f"untrained reference: the base model's generations at {seeds}" in on.table()


def test_a_folder_without_a_budget_has_no_null_baseline_and_says_so() -> None:
    from audit.parts.registry import PartSpec
    from audit.run.planner import ProtectionInfo, plan_case

    t = get_tier("smoke", parse_overrides(["controls.null_baseline=true"]))
    info = ProtectionInfo(PartSpec("protection", "dir", {"path": "x", "epsilon": None}),
                          random=False,
                          shared_across_replicates=True)
    p = plan_case(load_scenario(CATALOGUE_DIR / "no-attack.yaml"), info, t, 0)
    assert not p.runs_for("null_baseline") and any("null baseline" in n and "--epsilon" in n
                                                   for n in p.notes)


# -- the engine ------------------------------------------------------------------------------------
def session(results: Path, protection: str = "pid", *extra: str):
    from audit.config.options import AuditOptions
    from audit.run.session import AuditSession

    overrides = parse_overrides(["pid.steps=2", "generation.images_per_prompt=2", *extra])
    options = AuditOptions(protection=protection, results_dir=results, device="cpu",
                           overrides=overrides,
                           exploit_workers=1)
    s = AuditSession(options, Progress(None))
    s.metric_choice = lambda scenario, record: ([METRIC], METRIC)  # one metric keeps the test fast
    return s


def run(s, scenario: str) -> dict[str, Any]:
    record = s.run_case(load_scenario(CATALOGUE_DIR / f"{scenario}.yaml"), "astronaut",
                        f"{scenario}-astronaut").dump()  # as written to the results file
    assert record["outcome"] != "error", record.get("error")
    return record


def test_the_untrained_reference_is_shared_by_the_cases_and_reruns_of_an_audit(
        tmp_path: Path, fakes) -> None:
    calls, _ = fakes
    s = session(tmp_path / "res")
    first = run(s, "no-attack")
    assert first["cache"]["misses"].count("untrained") == 3 and len(calls.base) == 3
    seeds = first["plan"]["seeds"]
    assert [u["seed"] for u in first["untrained"]] == seeds == [c.seed for c in calls.base]
    second = run(s, "jpeg-q75")  # another case of the same audit
    assert ("untrained" not in second["cache"]["misses"]
            and second["cache"]["hits"].count("untrained") == 3)
    # a rerun: a new session on the same results folder
    rerun = run(session(tmp_path / "res"), "no-attack")
    assert ("untrained" not in rerun["cache"]["misses"]
            and rerun["cache"]["hits"].count("untrained") == 3)
    assert len(calls.base) == 3  # generated once per replicate seed, for the whole audit
    assert [u["cache_key"] for u in second["untrained"]] == [u["cache_key"]
                                                             for u in first["untrained"]]
    # m_u is measured per replicate, and the verdict's numbers are those of its per-replicate
    # values.
    entry = first["metrics"][METRIC]
    per = entry["per_replicate"]
    assert len(per["untrained"]) == 3 and entry["m_u"]["n_replicates"] == 3
    learned = intervals.learned_interval(per["clean"], per["untrained"], "down")
    share = intervals.share_interval(per["clean"], per["protected"], per["untrained"], "down")
    assert (entry["learned"]["value"] == pytest.approx(learned.value)
            and entry["learned"]["ci_low"] > 0.05)
    assert (entry["share"]["value"], entry["share"]["ci_low"]) == pytest.approx((
        share.value, share.ci_low))
    assert first["verdict_settings"]["min_effect"] == {"value": 0.1, "origin": "default"}
    assert first["outcome"] in ("pass", "fail", "no effect at baseline", "no meaningful effect at "
            "baseline")
    assert first["artifacts"]["generated_untrained"]


def test_a_case_whose_exploit_did_not_learn_gets_its_own_outcome(tmp_path: Path, fakes) -> None:
    _, behaviour = fakes
    behaviour["learns"] = False
    record = run(session(tmp_path / "res"), "no-attack")
    entry = record["metrics"][METRIC]
    assert record["outcome"] == "exploit did not learn the subject" == entry["outcome"]
    assert entry["retained"] is None and not entry["learned"]["ci_low"] > 0.05
    assert (f"{entry['m_u']['value']:.4f}" in record["reason"]
            and "dreambooth.steps" in record["reason"])


def test_min_effect_comes_from_the_tier_the_scenario_or_the_command_line(
        tmp_path: Path, fakes) -> None:
    text = (CATALOGUE_DIR / "no-attack.yaml").read_text().replace("id: no-attack", "id: strict")
    (tmp_path / "strict.yaml").write_text(text.replace("  retained_at_least: 0.5",
                                                       "  retained_at_least: 0.5\n  min_effect: "
            "0.99"))
    strict = load_scenario(tmp_path / "strict.yaml")
    assert strict.verdict.min_effect == 0.99
    record = session(tmp_path / "res").run_case(strict, "astronaut", "strict").dump()
    entry = record["metrics"][METRIC]
    assert (record["verdict_settings"]["min_effect"] == {"value": 0.99, "origin": "scenario"}
            and entry["min_effect"] == 0.99)
    # a real effect, below this minimum
    assert entry["effect"]["ci_low"] > 0 and entry["share"]["ci_low"] < 0.99
    assert record["outcome"] == "no meaningful effect at baseline" and "99%" in record["reason"]
    # --audit-set wins over the scenario, and with no minimum the same effect is judged on retained
    # protection.
    lenient = session(tmp_path
                      / "res", "pid",
                      "verdict.min_effect=0.0").run_case(strict, "astronaut", "strict").dump()
    assert lenient["verdict_settings"]["min_effect"] == {"value": 0.0, "origin": "--audit-set"}
    assert lenient["outcome"] in ("pass", "fail")


def test_the_null_baseline_is_uniform_noise_of_the_budget_and_reuses_cached_runs(
        tmp_path: Path, fakes) -> None:
    calls, _ = fakes
    results = tmp_path / "res"
    noise = run(session(results, "random", "controls.null_baseline=true"), "no-attack")
    # Auditing 'random' itself: its protected runs are the null baseline (no extra fine-tune).
    assert (noise["null_baseline"]["same_runs_as_protected"]
            and noise["cache"]["misses"].count("finetune") == 6)
    tuned = len(calls.finetuned_on)
    pid = run(session(results, "pid", "controls.null_baseline=true"), "no-attack")
    # PID into the same results folder: the clean and null-baseline runs come from the cache;
    # only PID's three protected runs are fine-tuned.
    assert pid["cache"]["misses"].count("finetune") == 3 and len(calls.finetuned_on) == tuned + 3
    assert {"null_baseline r0", "null_baseline r1", "null_baseline r2"} <= set(pid["exploits"])
    null_keys = {e["weights_key"] for e in pid["exploits"].values() if e["role"] == "null_baseline"}
    assert null_keys == {e["weights_key"] for e in noise["exploits"].values() if e["role"]
                         == "protected"}
    nb = pid["null_baseline"]
    assert (nb["epsilon"] == 0.05 and not nb["same_runs_as_protected"] and nb["protection"]
            == "random")
    assert nb["effect"]["value"] == pytest.approx(noise["metrics"][METRIC]["effect"]["value"])
    assert nb["protection_effect"] == pid["metrics"][METRIC]["effect"]
    assert pid["metrics"][METRIC]["null_baseline"]["share"] is not None
    # Uniform noise within ε = 0.05 (12 levels) of the clean images, re-drawn per replicate.
    clean = to_uint8(calls.finetuned_on[0])
    drawn = [to_uint8(x) for x in calls.finetuned_on[:tuned] if not torch.equal(to_uint8(x), clean)]
    assert len(drawn) == 3 and len({tuple(d.flatten()[:64].tolist()) for d in drawn}) == 3
    assert all(int((d.to(torch.int16) - clean.to(torch.int16)).abs().max()) <= 12 for d in drawn)
    assert pid["artifacts"]["generated_null_baseline"]
    # Off (the smoke tier's default): no null-baseline runs, nothing recorded.
    off = run(session(results, "pid"), "no-attack")
    assert "null_baseline" not in off and not any(e["role"] == "null_baseline"
                                                  for e in off["exploits"].values())


def test_the_report_shows_m_u_the_learned_margin_the_effect_share_and_the_noise_baseline(
        tmp_path: Path, fakes) -> None:
    from reports import load_results, render_html

    _, behaviour = fakes
    results = tmp_path / "res"
    good = run(session(results, "pid", "controls.null_baseline=true"), "no-attack")
    behaviour["learns"] = False
    bad = run(session(tmp_path / "other", "pid", "controls.null_baseline=true"), "jpeg-q75")
    data = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "cases": [good, bad],
            "summary": {"cases": 2, "outcomes": {}},
            "run": {"options": {"protection": "pid", "model": "tiny", "tier": "smoke"},
                    "toolkit_version": "test"}}
    path = results / "results.json"
    path.write_text(json.dumps(data, default=str), encoding="utf-8")
    html = render_html([load_results(path)])
    entry = good["metrics"][METRIC]
    case = html[html.index(good["case_id"], html.index('id="cases"')):]
    for key in ("m_u", "m_c", "m_p", "m_a", "learned"):
        assert f"{entry[key]['value']:.4f}" in case, key
    assert "m_u · m_c · m_p · m_a" in case and "learned margin d·(m_u − m_c)" in case
    assert f"{entry['share']['value']:.3f} [{entry['share']['ci_low']:.3f}" in case
    nb = good["null_baseline"]
    assert "noise baseline" in case and f"{nb['effect']['value']:.4f}" in case
    assert "Noise baseline." in html  # once for the audit, in the summary
    assert '<span class="badge o-notlearned">exploit did not learn the subject</span>' in html
    assert "did not learn the subject in 1 case(s)" in html
    assert "untrained reference: the base model" in html  # its generations are shown
