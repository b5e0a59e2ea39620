"""The exploiter's other recipes: DreamBooth with the text encoder trained and with prior
preservation, the standard exploit (``--exploit``, ``exploit: {standard: ...}``), the paper
tier's per-recipe rows (PID Table 8), and the prompt-mismatch winner named in the results."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audit.config.options import AuditOptions
from audit.config.scenario import CATALOGUE_DIR, load_scenario
from audit.config.settings import GenerationSettings
from audit.config.tiers import TIERS, get_tier, parse_exploit, rows_problems
from audit.data.images import to_uint8
from audit.diffusion import sampling, training
from audit.diffusion.sampling import GenerationConfig, generate
from audit.diffusion.training import encode_text
from audit.errors import ScenarioError
from audit.parts import EXPLOITS
from audit.parts.exploits.dreambooth import DreamboothParams, finetune
from audit.parts.registry import InvalidParams, PartSpec
from audit.run.cache import Cache
from audit.run.planner import ProtectionInfo, Run, plan_case
from audit.run.progress import Progress
from audit.run.stages import Stages, single_thread

DREAMBOOTH, LORA = EXPLOITS.get("dreambooth"), EXPLOITS.get("lora")
SHORT = {"steps": 2, "lr": 1e-3, "batch_size": 2, "prior_preservation": False,
         "num_class_images": 0}
GENERATION = GenerationSettings(images_per_prompt=1, steps=2, prompts=("a photo of sks person",))
PID = ProtectionInfo(PartSpec("protection", "pid", {"steps": 1}))


def stages(root: Path, tiny) -> Stages:
    return Stages(
        Cache(root), lambda: tiny, lambda: torch.device("cpu"), lambda: 64, Progress(None))


def scenario(name: str):
    return load_scenario(CATALOGUE_DIR / f"{name}.yaml")


# -- DreamBooth: the text encoder trained, prior preservation ------------------------------------
def test_a_trained_text_encoder_is_cached_and_used_at_generation(
        tiny, images, tmp_path: Path) -> None:
    params = DreamboothParams(**SHORT, train_text_encoder=True)
    run = Run("clean", None, 0, (), PartSpec("exploit", "dreambooth", params.model_dump()), 5)
    s = stages(tmp_path, tiny)
    out = s.exploit(run, to_uint8(images), GENERATION)
    weights, _ = s.cache.get("finetune", out.weights_key)
    te_keys = [k for k in weights if k.startswith("text_encoder.")]
    assert te_keys and any(not torch.equal(weights[k], tiny.text_encoder.state_dict()[k[13:]])
                           for k in te_keys)
    unet, text_encoder = params.load_trained(tiny, weights)
    gen = GenerationConfig(GENERATION.prompts, 1, 2, 7.5, GENERATION.negative_prompt, seed=5)
    with single_thread(torch.device("cpu")):  # as the stage generates: the same numbers
        with_trained = to_uint8(generate(tiny, unet, text_encoder, gen, 64, Progress(None)))
        with_base = to_uint8(generate(tiny, unet, tiny.text_encoder, gen, 64, Progress(None)))
    # the cached text encoder is the one generating
    assert torch.equal(with_trained, out.generations)
    assert not torch.equal(with_trained, with_base)
    frozen = DreamboothParams(**SHORT)  # a frozen text encoder is not stored (the base one is used)
    assert not any(k.startswith("text_encoder.")
                   for k in frozen.trained_weights(unet, text_encoder))


def test_class_images_come_from_the_base_model_with_the_class_prompt_once(
        tiny, tmp_path: Path, monkeypatch) -> None:
    params = DreamboothParams(**{**SHORT, "prior_preservation": True, "num_class_images": 3})
    s = stages(tmp_path, tiny)
    first = s.class_images(params, GENERATION)
    again = s.class_images(params, GENERATION)
    events = s.cache.take_events()
    assert (events.misses == ["class_images"] and events.hits == ["class_images"]
            and torch.equal(first, again))
    want = generate(tiny, tiny.unet, tiny.text_encoder,
                    GenerationConfig(("a photo of person",), 3, 2, 7.5, "", seed=10_000),
                    64, Progress(None))
    assert torch.equal(to_uint8(first), to_uint8(want))
    # Generated a few at a time (memory at 512 px), image i still drawn from seed 10 000 + i.
    monkeypatch.setattr(sampling, "CLASS_BATCH", 2)
    chunked = s.class_images(params, GENERATION)
    assert s.cache.take_events().misses == ["class_images"]  # the batch is part of the key
    alone = generate(tiny, tiny.unet, tiny.text_encoder,
                     GenerationConfig(("a photo of person",), 1, 2, 7.5, "", seed=10_002),
                     64, Progress(None))
    assert len(chunked) == 3 and torch.equal(to_uint8(chunked[2:]), to_uint8(alone))
    assert s.class_images(DreamboothParams(**SHORT), GENERATION) is None


def test_the_prior_loss_is_weighted(tiny) -> None:
    """Ruiz et al. eq. 2 with prior preservation: MSE(instance) + w · MSE(class), linear in w."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((4, 4, 8, 8), generator=g)
    emb = encode_text(tiny, tiny.text_encoder,
                      ["a photo of sks person"] * 2 + ["a photo of person"] * 2)
    with torch.no_grad():
        loss = [float(training.denoising_loss(
            tiny, latents, emb, training.FinetuneConfig("p", 1, 1e-3, 2, False,
                                                        prior_preservation=True,
                                                        prior_loss_weight=w),
            torch.Generator().manual_seed(1))) for w in (0.0, 1.0, 2.0)]
    assert loss[1] > loss[0] > 0
    assert loss[2] - loss[1] == pytest.approx(loss[1] - loss[0], rel=1e-5)


def test_prior_preservation_trains_on_the_class_images(tiny, images) -> None:
    cfg = DreamboothParams(
        **{**SHORT, "steps": 1, "prior_preservation": True, "num_class_images": 2}).config(seed=0)
    a, _, _ = finetune(tiny, images, cfg, Progress(None), class_images=images[:2])
    b, _, _ = finetune(tiny, images, cfg, Progress(None), class_images=images[:2].flip(-1))
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     b.state_dict().values(), strict=True))


def test_the_cache_key_names_the_exploit_and_its_resolved_params(
        tiny, images, tmp_path: Path) -> None:
    """One key rule for every exploit part: its name and resolved params feed the key, so a
    second exploit never meets DreamBooth's entries (nothing in the stages is DreamBooth's own)."""
    from audit.parts.exploits.lora import LoraParams

    lora = LoraParams(**SHORT).model_dump()
    specs = [("dreambooth", DreamboothParams(**SHORT).model_dump()), ("lora", lora),
             ("lora", {**lora, "rank": 8}),
             ("lora", {**lora, "unet_target_modules": ["to_q"]})]
    s = stages(tmp_path, tiny)
    keys = [s.exploit_keys(Run("clean", None, 0, (), PartSpec("exploit", name, p), 0),
                           to_uint8(images), GENERATION)
            for name, p in specs]
    assert len({w for w, _ in keys}) == len({g for _, g in keys}) == len(specs)
    assert s.exploit_keys(Run("clean", None, 0, (), PartSpec("exploit", "lora", dict(lora)), 0),
                          to_uint8(images),
                          GENERATION) == keys[1]


# -- the paper tier: PID Table 8 per model family and text-encoder setting -------------------------
@pytest.mark.parametrize(
    ("model", "part", "scenario_params", "want", "source"),
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", DREAMBOOTH, {}, {"lr": 2e-6, "steps": 1000},
         "Table 8a, SD 1.5, text encoder frozen"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", DREAMBOOTH, {"train_text_encoder": True},
         {"lr": 2e-6, "steps": 500},
         "Table 8a, SD 1.5, text encoder trained"),
        ("stabilityai/stable-diffusion-2-1", DREAMBOOTH, {}, {"lr": 1e-5, "steps": 1000},
         "Table 8a, SD 2.1, text encoder frozen"),
        ("stabilityai/stable-diffusion-2-1", DREAMBOOTH, {"train_text_encoder": True},
         {"lr": 2e-6, "steps": 500},
         "Table 8a, SD 2.1, text encoder trained"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", LORA, {},
         {"rank": 16, "lr": 1e-4, "steps": 800, "batch_size": 2}, "Table 8c, SD 1.5"),
        ("stabilityai/stable-diffusion-2-1", LORA, {}, {"rank": 32, "lr": 1e-4, "steps": 1600,
                                                        "batch_size": 2}, "Table 8c, SD 2.1"),
    ],
)
def test_the_paper_tier_takes_each_recipe_from_pid_table_8(model, part, scenario_params, want,
                                                           source) -> None:
    tier = AuditOptions(protection="pid", tier="paper", model=model).tier_settings
    resolved = tier.resolve_part(part, scenario_params)
    for key, value in want.items():
        assert getattr(resolved.params, key) == value, key
        assert source in resolved.origin[key] and resolved.origin[key].startswith("tier: PID")
    assert resolved.params.prior_preservation and resolved.params.num_class_images == 200
    assert resolved.params.lr_schedule == "constant"


def test_the_family_is_read_from_a_local_folder_and_an_unknown_one_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "my-sd"
    (folder / "text_encoder").mkdir(parents=True)
    (folder / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    tier = AuditOptions(protection="pid", tier="paper", model=str(folder)).tier_settings
    assert tier.resolve_part(DREAMBOOTH).params.lr == 1e-5  # SD 2.x: Table 8a's 2.1 row
    assert tier.to_dict()["model_families"]["protector"]["family"] == "sd2"
    unknown = AuditOptions(protection="pid", tier="paper", model="someone/some-model").tier_settings
    resolved = unknown.resolve_part(DREAMBOOTH)
    assert (resolved.params.lr == 2e-6 and "model family unknown" in resolved.origin["lr"]
            and "sd1 row" in resolved.origin["lr"])
    # The transfer model's family picks the rows of an exploit that fine-tunes it (PID §6.3).
    both = AuditOptions(protection="pid", tier="paper",
                        model="stable-diffusion-v1-5/stable-diffusion-v1-5",
                        transfer_model="stabilityai/stable-diffusion-2-1").tier_settings
    assert (both.resolve_part(LORA).params.rank == 16
            and both.resolve_part(LORA, {"model": "transfer"}).params.rank == 32)


def test_standard_tier_scales_the_rows_and_smoke_gives_class_images_only_when_asked() -> None:
    standard = AuditOptions(protection="pid", tier="standard",
                            model="stabilityai/stable-diffusion-2-1").tier_settings
    assert (standard.resolve_part(LORA).params.steps == 640
            and standard.resolve_part(DREAMBOOTH).params.lr == 1e-5)
    smoke = get_tier("smoke")
    # the default runs are unchanged
    assert smoke.resolve_part(DREAMBOOTH).params.num_class_images == 0
    on = smoke.resolve_part(DREAMBOOTH, {"prior_preservation": True})
    assert (on.params.num_class_images == 16
            and on.origin["num_class_images"].startswith("tier: smoke"))
    assert smoke.resolve_part(LORA, {"prior_preservation": True}).params.num_class_images == 16
    # A scenario or --audit-set value still wins over a row.
    assert smoke.resolve_part(
        DREAMBOOTH,
        {"prior_preservation": True, "num_class_images": 4}).params.num_class_images == 4


def test_the_rows_are_well_formed_and_a_broken_table_is_named() -> None:
    assert rows_problems() == []
    broken = {"t": {"dreambooth": {"rows": [{"when": {"family": "sd3"}, "set": {"lr": 1},
                                             "source": "x"},
                                            {"when": {"lr": 1e-6}, "set": {"lr": 1, "stpes": 2},
                                             "source": "y"},
                                            {"when": {}, "set": {}}]}}}
    problems = rows_problems(broken)
    assert len(problems) == 4
    assert any("unknown family 'sd3'" in p
               for p in problems) and any("'stpes'" in p for p in problems)
    assert any("conditioned on: ['lr']" in p
               for p in problems) and any("when, set, source" in p for p in problems)
    assert "rows" in TIERS["paper"]["dreambooth"]


# -- the standard exploit: --exploit and 'exploit: {standard: ...}' --------------------------------
def test_exploit_option_is_the_one_grammar_with_did_you_mean() -> None:
    assert parse_exploit(None) is None and parse_exploit("lora") == ("lora", {})
    assert parse_exploit("lora: {rank: 32}") == ("lora", {"rank": 32})
    with pytest.raises(InvalidParams, match=r"unknown exploit 'lroa' \(did you mean 'lora'\?\)"):
        parse_exploit("lroa")
    with pytest.raises(InvalidParams, match=r"unknown field 'rnak'.*did you mean 'rank'"):
        parse_exploit("lora: {rnak: 32}")
    with pytest.raises(InvalidParams, match="unknown exploit 'standard'"):
        parse_exploit("standard")  # a scenario's word for the standard exploit, not an exploit


def test_exploit_option_errors_are_usage_errors_and_the_choice_is_recorded() -> None:
    from audit.config.startup import check_options
    from audit.plugin import reproduce_command

    with pytest.raises(pytest.UsageError, match="did you mean 'lora'"):
        check_options(AuditOptions(protection="none", exploit="lroa"))
    with pytest.raises(pytest.UsageError, match=r"--exploit.*rank"):
        check_options(AuditOptions(protection="none", exploit="lora: {rank: 0}"))
    options = AuditOptions(protection="none", exploit="lora: {rank: 8}")
    check_options(options)
    assert options.to_dict()["exploit"] == "lora: {rank: 8}"
    assert options.tier_settings.to_dict()["exploit"] == {"lora": {"rank": 8}}
    assert options.non_standard  # its parameters change the tier's recipe
    assert not AuditOptions(protection="none", exploit="lora").non_standard
    assert "'--exploit=lora: {rank: 8}'" in reproduce_command(options)


def test_scenarios_follow_the_standard_exploit_unless_they_name_one() -> None:
    def plan(name: str, exploit: str | None = None):
        return plan_case(scenario(name), PID,
                         AuditOptions(protection="pid", exploit=exploit).tier_settings, 0)

    # Default: DreamBooth; the baseline has no control, an exploit change has one.
    assert (plan("no-attack").standard_exploit.name == "dreambooth"
            and not plan("no-attack").variants[0].changes_exploit)
    assert (plan("lora").variants[0].exploit.name == "lora"
            and plan("lora").variants[0].changes_exploit)
    # --exploit=lora: 'standard' scenarios become LoRA; a named DreamBooth recipe stays DreamBooth.
    baseline = plan("no-attack", "lora")
    assert (baseline.standard_exploit.name == "lora" and baseline.variants[0].exploit
            == baseline.standard_exploit)
    assert not baseline.variants[0].changes_exploit
    zero = plan("zero-sigma", "lora").variants[0]
    assert (zero.exploit.name == "lora" and zero.exploit.params["posterior"]["sigma"] == "zero"
            and zero.changes_exploit)
    te = plan("dreambooth-text-encoder", "lora").variants[0]
    assert (te.exploit.name == "dreambooth" and te.exploit.params["train_text_encoder"]
            and te.changes_exploit)
    # the scenario is the standard exploit
    assert not plan("lora", "lora").variants[0].changes_exploit
    # --exploit's parameters are a layer of that part: below the scenario's.
    ranked = plan("lora-rank32", "lora: {rank: 8}")
    assert (ranked.standard_exploit.params["rank"] == 8
            and ranked.variants[0].exploit.params["rank"] == 32)
    assert ranked.variants[0].changes_exploit and ranked.variants[0].origin["rank"] == "scenario"
    assert "lora(rank=32)" in ranked.table()


def test_the_standard_exploit_in_a_scenario_file(tmp_path: Path) -> None:
    def write(body: str) -> Path:
        path = tmp_path / "s.yaml"
        path.write_text("id: s\nversion: 1\ntitle: t\nwhy: w\nsource: x\n" + body)
        return path

    assert load_scenario(write("")).exploit.part == "standard"
    zero = load_scenario(write("exploit: {standard: {posterior: {sigma: zero}}}"))
    assert zero.exploit.params == {"posterior": {"sigma": "zero"}}
    with pytest.raises(ScenarioError, match=r"unknown field 'rank'.*suit every exploit.*with "
                                            r"'lora' alone, name it"):
        load_scenario(write("exploit: {standard: {rank: 32}}"))
    with pytest.raises(ScenarioError, match=r"unknown exploit 'dreambooht' \(did you mean "
                                            r"'dreambooth'\?\).*standard"):
        load_scenario(write("exploit: {dreambooht: {}}"))
    # A variant naming 'standard' merges over the scenario's 'standard' exploit.
    merged = load_scenario(write("exploit: {standard: {posterior: {sigma: zero}}}\nvariants:\n  - "
                                 "exploit: {standard: {instance_prompt: a photo of sks face}}\n"))
    assert merged.resolved_variants()[0][2].params == {"posterior": {"sigma": "zero"},
                                                       "instance_prompt": "a photo of sks face"}


# -- prompt mismatch: the candidates are the variants, and the winner is named ---------------------
def test_prompt_candidates_can_be_replaced_by_extending_the_scenario(tmp_path: Path) -> None:
    base = tmp_path / "prompt-mismatch.yaml"
    base.write_text((CATALOGUE_DIR / "prompt-mismatch.yaml").read_text())
    mine = tmp_path / "my-prompts.yaml"
    mine.write_text("extends: prompt-mismatch.yaml\nid: my-prompts\nvariants:\n  - {label: a "
                    "selfie of sks person, exploit: {standard: {instance_prompt: a selfie of sks "
                    "person}}}\n  - {label: sks, exploit: {standard: {instance_prompt: sks}}}\n")
    labels = [label for label, _, _ in load_scenario(mine).resolved_variants()]
    assert labels == ["a selfie of sks person", "sks"]
    assert [label for label, _, _ in scenario("prompt-mismatch").resolved_variants()] == [
        "a photo of sks person", "a photo of sks face", "a dslr portrait of sks person"]


def _replicates(level: float, seed: int, k: int = 3, n: int = 6) -> list[list[float]]:
    g = torch.Generator().manual_seed(seed)
    return [[level + 0.01 * float(x) for x in torch.randn(n, generator=g)] for _ in range(k)]


def test_the_prompt_that_won_is_named_in_the_record_summary_and_report(tmp_path: Path) -> None:
    from audit.judge.case import CaseJudge
    from audit.results.records import new_record, plan_record, scenario_record
    from audit.results.summary import summary_table
    from reports import load_results, render_html

    options = AuditOptions(protection="pid", results_dir=tmp_path / "res")
    judge = CaseJudge(options.tier_settings, options.seed)
    scen = scenario("prompt-mismatch")
    plan = plan_case(scen, PID, options.tier_settings, 0)
    # subject_similarity ↓: clean 0.8, protected 0.3; 'a photo of sks face' restores most (0.7).
    levels = {("clean", None): 0.8, ("protected", None): 0.3, ("attacked", 1): 0.7,
              ("control", 1): 0.8,
              ("attacked", 2): 0.4, ("control", 2): 0.8}
    values: dict[tuple, dict] = {}
    for run in plan.runs:
        if run.role == "noise_floor":
            continue
        # variant 0 is the standard exploit: the protected runs
        level = levels.get((run.role, run.variant), 0.3)
        values.setdefault(run.identity, {"values": _replicates(level,
                                                               100 * run.replicate
                                                               + (run.variant or 0))[0],
                                         "direction": "down"})
    record = new_record("pid-prompt-mismatch-astronaut", options, scenario_record(scen),
                        "astronaut", "smoke")
    record.plan = plan_record(plan)
    record.apply(judge.judge(plan, scen, {"subject_similarity": values}, "subject_similarity"))
    best = record.exploiter_best
    assert best is not None and best.label == "a photo of sks face"
    assert best.instance_prompt == "a photo of sks face"
    assert best.variant == record.worst_variant == 1
    assert best.retained is not None and best.retained < 0.5
    assert "worst of 3 exploit variants: 'a photo of sks face'" in record.reason
    assert record.variants[0].exploit == "standard"
    # The terminal summary names it.
    buffer = io.StringIO()
    summary_table([record], SimpleNamespace(protection="pid", model="tiny", tier="smoke", seed=0,
                                            exploit="lora"), buffer)
    text = buffer.getvalue()
    assert (
        "exploiter's best variant in pid-prompt-mismatch-astronaut: 'a photo of sks face'" in text
        and "exploit lora" in text)
    # The report names it: the recorded audit's results file, holding this case.
    recorded = json.loads((Path(__file__).parent / "data"
                           / "results-pid-smoke.json").read_text(encoding="utf-8"))
    recorded["cases"] = [json.loads(json.dumps(record.dump(), allow_nan=True))]
    recorded["summary"] = {"cases": 1, "outcomes": {record.outcome: 1}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(recorded), encoding="utf-8")
    html = render_html([load_results(path)])
    assert "exploiter&#39;s best variant" in html or "exploiter's best variant" in html
    assert "<b>a photo of sks face</b>" in html
