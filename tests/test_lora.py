"""LoRA through peft (PID App. C.1): only the adapters train, the base weights never change,
generation runs through the adapters, and the cache holds the adapters alone."""

from __future__ import annotations

import pytest
import torch

from audit.diffusion import state_fingerprint
from audit.diffusion.sampling import GenerationConfig, generate
from audit.errors import ModelError
from audit.parts.exploits.lora import LoraParams, add_adapters, finetune
from audit.run.progress import Progress

GEN = GenerationConfig(("a photo of sks person",), 2, 3, 7.5, "noisy, low quality", seed=0)


def params(**changes) -> LoraParams:
    base = dict(steps=3, lr=1e-2, batch_size=2, prior_preservation=False, num_class_images=0)
    return LoraParams(**{**base, **changes})


def _base_name(name: str) -> str:
    """peft wraps a target layer: its weight moves to '<layer>.base_layer.weight'."""
    return name.replace(".base_layer.", ".")


def _split(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    state = module.state_dict()
    return ({k: v for k, v in state.items() if "lora_" not in k},
            {k: v for k, v in state.items() if "lora_" in k})


@pytest.fixture(scope="module")
def lora_run(tiny, images):
    """One short LoRA fine-tune with adapters on both networks (PID's setting), and the adapters'
    init."""
    p = params()
    before = state_fingerprint(tiny.unet, tiny.text_encoder)
    unet, text_encoder, info = finetune(tiny, images, p.config(seed=3), Progress(None))
    init = tiny.fresh_copy()
    add_adapters(init, p.config(seed=3))
    return p, unet, text_encoder, info, init, before


def test_lora_trains_only_the_adapters_and_leaves_the_base_weights_bitwise(tiny, lora_run) -> None:
    p, unet, text_encoder, info, init, before = lora_run
    # the model handed in is untouched
    assert state_fingerprint(tiny.unet, tiny.text_encoder) == before
    for tuned, base, start in ((unet, tiny.unet, init.unet), (text_encoder, tiny.text_encoder,
                                                              init.text_encoder)):
        frozen, adapters = _split(tuned)
        base_state = base.state_dict()
        assert adapters, "no adapter was added"
        assert {_base_name(k) for k in frozen} == set(base_state)
        for name, value in frozen.items():  # every base weight, wrapped or not, is the base model's
            assert torch.equal(value, base_state[_base_name(name)]), name
        start_state = start.state_dict()
        # every adapter moved away from its init (B starts at 0)
        for name, value in adapters.items():
            assert not torch.equal(value, start_state[name]), name
        assert all(float(v.abs().sum()) == 0 for k, v in start_state.items() if "lora_B" in k)
    n_adapter = sum(v.numel() for m in (unet, text_encoder) for k,
                    v in m.state_dict().items() if "lora_" in k)
    assert info["trainable_parameters"] == n_adapter
    assert n_adapter < 0.1 * sum(v.numel() for v in tiny.unet.state_dict().values())
    assert not any("lora_" in k for k in tiny.unet.state_dict())  # fresh copies got the adapters


def test_the_adapters_sit_where_pid_puts_them(lora_run) -> None:
    """UNet: to_q/to_k/to_v/to_out.0 of every attention; text encoder: q/k/v/out_proj."""
    _, unet, text_encoder, _, _, _ = lora_run
    wrapped_unet = {k.split(".lora_A")[0].rsplit(".", 1)[-1] for k in unet.state_dict()
                    if ".lora_A" in k}
    assert wrapped_unet == {"to_q", "to_k", "to_v", "0"}  # to_out.0
    n_attention = sum(1 for n, _ in unet.named_modules() if n.endswith(".to_q"))
    assert sum(1 for k in unet.state_dict() if "to_q.lora_A." in k) == n_attention
    wrapped_te = {k.split(".lora_A")[0].rsplit(".", 1)[-1] for k in text_encoder.state_dict()
                  if ".lora_A" in k}
    assert wrapped_te == {"q_proj", "k_proj", "v_proj", "out_proj"}
    rank = {v.shape[0] for k, v in unet.state_dict().items() if ".lora_A." in k}
    assert rank == {16}


def test_generation_runs_through_the_adapters_and_the_cached_adapters_give_it_back(
        tiny, lora_run) -> None:
    p, unet, text_encoder, _, _, _ = lora_run
    adapted = generate(tiny, unet, text_encoder, GEN, 64, Progress(None))
    base = generate(tiny, tiny.unet, tiny.text_encoder, GEN, 64, Progress(None))
    assert not torch.equal(adapted, base)
    # What the cache stores: the adapters alone, and they give the same generations back.
    weights = p.trained_weights(unet, text_encoder)
    assert weights and all("lora_" in k for k in weights)
    assert {k.split(".")[0] for k in weights} == {"unet", "text_encoder"}
    unet2, text_encoder2 = p.load_trained(tiny, weights)
    # never silently the base text encoder
    with pytest.raises(ModelError, match="do not fit the text_encoder"):
        p.load_trained(tiny, {k: v for k, v in weights.items() if k.startswith("unet.")})
    assert torch.equal(generate(tiny, unet2, text_encoder2, GEN, 64, Progress(None)), adapted)
    # With the adapters switched off, the model is the base model again, bit for bit.
    unet2.disable_adapters()
    text_encoder2.disable_adapters()
    assert torch.equal(generate(tiny, unet2, text_encoder2, GEN, 64, Progress(None)), base)


def test_lora_is_reproducible_for_a_seed_and_varies_with_it(tiny, images, lora_run) -> None:
    p, unet, text_encoder, _, _, _ = lora_run
    again = finetune(tiny, images, p.config(seed=3), Progress(None))
    other = finetune(tiny, images, p.config(seed=4), Progress(None))
    first = p.trained_weights(unet, text_encoder)
    same, differ = p.trained_weights(*again[:2]), p.trained_weights(*other[:2])
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert not all(torch.equal(first[k], differ[k]) for k in first)


def test_text_encoder_without_adapters_stays_the_base_one(tiny, images) -> None:
    p = params(steps=1, train_text_encoder=False)
    unet, text_encoder, _ = finetune(tiny, images, p.config(seed=0), Progress(None))
    assert state_fingerprint(text_encoder) == state_fingerprint(tiny.text_encoder)
    assert not any("lora_" in k for k in text_encoder.state_dict())
    weights = p.trained_weights(unet, text_encoder)
    assert weights and all(k.startswith("unet.") for k in weights)


def test_lora_params_are_pid_table_8c_and_refuse_what_cannot_run(tiny, images) -> None:
    from audit.parts import EXPLOITS
    from audit.parts.registry import InvalidParams

    default = LoraParams()
    # Table 8c, SD 1.5
    assert (default.rank, default.lr, default.steps, default.batch_size) == (16, 1e-4, 800, 2)
    assert (default.train_text_encoder and default.prior_preservation and default.num_class_images
            == 200)
    # α = r
    assert default.config(seed=0).alpha == 16.0 and LoraParams(rank=32).config(0).alpha == 32.0
    assert (LoraParams(rank=8, alpha=4).config(7).alpha == 4.0
            and LoraParams(rank=8).config(7).seed == 7)
    part = EXPLOITS.get("lora")
    assert part.validate({"rank": 32}).rank == 32
    with pytest.raises(InvalidParams, match=r"unknown field 'rnak'.*did you mean 'rank'"):
        part.validate({"rnak": 32})
    with pytest.raises(InvalidParams, match=r"field 'rank'"):
        part.validate({"rank": 0})
    with pytest.raises(ModelError, match=r"target modules \['to_qq'\] match no module of the UNet"):
        finetune(tiny, images, params(steps=1, unet_target_modules=["to_qq"]).config(0),
                 Progress(None))
