"""Model transfer (PID §6.3, Table 5): protect on one model, fine-tune another.

The built-in pair is ``tiny`` (SD 1.5-shaped) and ``tiny-2`` (SD 2.1-shaped): the same VAE
weights, another text encoder and UNet, v-prediction (``audit/diffusion/tiny.py``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audit.config.options import AuditOptions
from audit.config.settings import GenerationSettings
from audit.data.images import to_uint8
from audit.diffusion import load_model
from audit.diffusion.tiny import tiny_weights_path
from audit.errors import ModelError
from audit.parts.registry import PartSpec
from audit.run.cache import Cache
from audit.run.planner import Run
from audit.run.progress import Progress
from audit.run.stages import Stages

EXPLOIT = {"steps": 2, "lr": 1e-3, "batch_size": 2, "prior_preservation": False,
           "num_class_images": 0}


@pytest.fixture(scope="module")
def tiny2():
    return load_model("tiny-2", "cpu")


def test_tiny2_shares_the_vae_and_differs_where_sd21_differs(tiny, tiny2) -> None:
    """The component PID attacks (the VAE encoder) is the same weights; UNet, text encoder and
    the prediction target are not."""
    for (name, a), (_, b) in zip(tiny.vae.state_dict().items(), tiny2.vae.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert tiny.vae.config.scaling_factor == tiny2.vae.config.scaling_factor
    width = tiny2.text_encoder.config.hidden_size
    assert tiny2.unet.config.cross_attention_dim == width != tiny.text_encoder.config.hidden_size
    assert tiny2.unet.config.use_linear_projection and not tiny.unet.config.use_linear_projection
    assert (tiny2.scheduler.config.prediction_type == "v_prediction"
            and tiny.scheduler.config.prediction_type == "epsilon")
    assert tiny2.fingerprint != tiny.fingerprint


def test_shipped_vae_files_are_byte_identical() -> None:
    sums = {}
    for variant in ("tiny", "tiny-2"):
        folder = tiny_weights_path(variant)
        if not (folder / "SHA256SUMS").is_file():
            pytest.skip(f"{folder}: no trained weights shipped")
        sums[variant] = dict(line.split("  ")[::-1]
                             for line in (folder / "SHA256SUMS").read_text().splitlines())
    for name in ("vae/config.json", "vae/diffusion_pytorch_model.safetensors"):
        assert sums["tiny"][name] == sums["tiny-2"][name]
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert sums["tiny"][unet] != sums["tiny-2"][unet]


def test_a_transfer_exploit_fine_tunes_the_transfer_model(
        tiny, tiny2, images, tmp_path: Path) -> None:
    from audit.parts.exploits.dreambooth import DreamboothParams

    generation = GenerationSettings(
        images_per_prompt=1, steps=2, prompts=("a photo of sks person",))
    stages = Stages(Cache(tmp_path), lambda: tiny, lambda: torch.device("cpu"), lambda: 64,
                    Progress(),
                    transfer=lambda: tiny2)
    images_u8 = to_uint8(images)
    outputs = {}
    for role in ("protector", "transfer"):
        params = DreamboothParams(**EXPLOIT, model=role).model_dump()
        run = Run("attacked", 0, 0, (), PartSpec("exploit", "dreambooth", params), 0)
        outputs[role] = stages.exploit(run, images_u8, generation)
    assert outputs["transfer"].info["model"] == {"role": "transfer", "id": "tiny-2",
                                                 "fingerprint": tiny2.fingerprint}
    assert outputs["protector"].info["model"]["fingerprint"] == tiny.fingerprint
    assert outputs["transfer"].weights_key != outputs["protector"].weights_key
    weights = Cache(tmp_path).get("finetune", outputs["transfer"].weights_key)[0]
    # The fine-tuned state is tiny-2's UNet (its cross-attention reads 48-wide text features).
    k = next(n for n in weights if n.endswith("attn2.to_k.weight"))
    assert weights[k].shape[1] == tiny2.text_encoder.config.hidden_size


def test_no_transfer_model_is_a_clear_error(tiny) -> None:
    from audit.parts.exploits.dreambooth import DreamboothParams

    stages = Stages(Cache(Path("unused"), enabled=False), lambda: tiny, lambda: torch.device("cpu"),
                    lambda: 64, Progress())
    with pytest.raises(ModelError, match="--transfer-model"):
        stages.model_for(DreamboothParams(model="transfer"))


def test_the_default_transfer_model_is_the_other_embedded_one() -> None:
    assert AuditOptions(protection="pid").transfer_model_spec == "tiny-2"
    assert AuditOptions(protection="pid", model="tiny-2").transfer_model_spec == "tiny"
    assert AuditOptions(protection="pid", model="/some/folder").transfer_model_spec is None
    assert AuditOptions(
        protection="pid", model="/a", transfer_model="/b").transfer_model_spec == "/b"


def test_transfer_model_equal_to_model_is_refused() -> None:
    from audit.config.startup import _model

    with pytest.raises(ValueError, match="is --model itself"):
        _model(SimpleNamespace(model="tiny", transfer_model="tiny", allow_download=False))
    with pytest.raises(ValueError, match="--transfer-model=/nonexistent/x: model path"):
        _model(SimpleNamespace(model="tiny", transfer_model="/nonexistent/x", allow_download=False))


def test_the_case_protects_on_model_and_exploits_on_transfer_model(tmp_path: Path) -> None:
    """One replicate of the bundled model-transfer scenario through the engine, few steps."""
    from audit.config.scenario import CATALOGUE_DIR, load_scenario
    from audit.config.tiers import parse_overrides
    from audit.run.session import AuditSession

    overrides = parse_overrides(["pid.steps=2", "dreambooth.steps=2",
                                 "generation.images_per_prompt=1",
                                 "generation.steps=2"])
    options = AuditOptions(protection="pid", results_dir=tmp_path, device="cpu", replicates=1,
                           overrides=overrides,
                           exploit_workers=1)
    session = AuditSession(options, Progress(None))
    try:
        record = session.run_case(load_scenario(CATALOGUE_DIR / "model-transfer.yaml"), "astronaut",
                                  "transfer").dump()
    finally:
        session.close()
    assert record["outcome"] != "error", record["reason"]
    assert record["model"]["id"] == "tiny" and record["transfer_model"]["id"] == "tiny-2"
    assert record["transfer_model"]["fingerprint"] != record["model"]["fingerprint"]
    by_role = {e["role"]: e["info"]["model"]["id"] for e in record["exploits"].values()}
    assert by_role == {"clean": "tiny", "protected": "tiny", "attacked": "tiny-2",
                       "control": "tiny-2"}
    # PID was crafted once per replicate, on the protector's model (its key holds tiny's
    # fingerprint).
    assert len(record["protection_runs"]) == 1
