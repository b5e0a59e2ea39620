"""The face metrics: FDS (PID), ISM and FDFR (Anti-DreamBooth), IMS (DiffShortcut), and the
offline dlib / MTCNN ones.

Logic tests inject small stand-in networks into the metrics' own code paths (the papers'
weights are downloads this machine cannot make) and check pairing, missing faces, direction,
aggregation and units against values computed by hand. Unavailable-path tests check that each
weight-needing metric says at once what is missing and where it looked. The dlib metric is
checked against dlib's own descriptors; FDS's loading code against a checkpoint in
facenet-pytorch's layout.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from audit.parts.metrics import faces as faces_module
from audit.parts.metrics.faces import Face, fds_values, ims_values, ism_values, mean_identity
from audit.parts.metrics.fds import FACENET_FILE, FaceDetectionScore
from audit.parts.metrics.insight import (
    FaceDetectionFailureRate,
    IdentityMatchingSimilarity,
    IdentityScoreMatching,
    find_pack,
)

# -- stand-in networks ----------------------------------------------------------------------


class TinyEmbedder(torch.nn.Module):
    """A fixed random projection of a 4×4 colour thumbnail, L2-normalised (like facenet's)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.proj = torch.nn.Linear(48, 16, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, 48, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.proj(self.pool(x).flatten(1)), dim=1)


def has_face(array: np.ndarray) -> bool:
    """Stand-in detector: a 'face' is anything that is not a flat image."""
    return float(array.std()) > 2.0


def tiny_crop(arrays) -> list[torch.Tensor | None]:
    """Stand-in for MTCNN: the whole image, standardised as facenet's crops are, or None."""
    return [torch.from_numpy(a).permute(2, 0, 1).float().sub(127.5).div(128) if has_face(a)
            else None for a in arrays]


def by_hand_embedding(image: torch.Tensor) -> np.ndarray:
    """What the stand-in FDS path should compute for one [0,1] image (no resize: ≥160 px)."""
    x = torch.round(image.clamp(0, 1) * 255).sub(127.5).div(128)[None]
    with torch.no_grad():
        return TinyEmbedder()(x)[0].double().numpy()


def colour_analyzer(rgb: np.ndarray) -> list[Face]:
    """Stand-in InsightFace: one face (the whole frame) whose embedding is the mean colour minus
    grey, none on a flat image."""
    if not has_face(rgb):
        return []
    h, w = rgb.shape[:2]
    return [Face((0.0, 0.0, float(w), float(h)), 0.9, rgb.reshape(-1, 3).mean(0) - 127.5)]


def colour(r: float, g: float, b: float, side: int = 32, seed: int = 0) -> torch.Tensor:
    """A textured image of a mean colour (so the stand-in detector sees a 'face')."""
    noise = 0.05 * torch.randn(3, side, side, generator=torch.Generator().manual_seed(seed))
    return (torch.tensor([r, g, b]).view(3, 1, 1) + noise).clamp(0, 1)


FLAT = torch.full((3, 32, 32), 0.5)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def uint8_mean(image: torch.Tensor) -> np.ndarray:
    return torch.round(image * 255).reshape(3, -1).double().mean(1).numpy() - 127.5


@pytest.fixture(scope="module")
def faces256() -> torch.Tensor:
    from audit.data.subjects import load_subject

    return load_subject("astronaut", None, 256).images


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """Every weights location points at an empty folder; downloads are not allowed."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "deepface"))
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("PROTECTION_AUDIT_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


# -- FDS (PID App. A.2) ----------------------------------------------------------------------


def test_fds_logic_all_pairs_mean_and_missing_faces_count_zero() -> None:
    metric = FaceDetectionScore(crop=tiny_crop, embed=TinyEmbedder(), label="tiny")
    side = 160  # MTCNN's crop size: nothing is resized, so the hand computation is exact
    refs = torch.stack([colour(0.8, 0.3, 0.2, side, 1), colour(0.2, 0.5, 0.7, side, 2),
                        torch.full((3, side, side), 0.5)])
    gens = torch.stack([colour(0.7, 0.3, 0.3, side, 3), torch.full((3, side, side), 0.2),
                        colour(0.1, 0.6, 0.8, side, 4)])
    result = metric.compute(gens, refs)
    r = [by_hand_embedding(refs[0]), by_hand_embedding(refs[1])]
    for i in (0, 2):
        g = by_hand_embedding(gens[i])
        # mean over ALL three training images; the faceless one contributes cosine 0
        assert result.values[i] == pytest.approx((cos(g, r[0]) + cos(g, r[1]) + 0.0) / 3, abs=1e-6)
    assert result.values[1] == 0.0  # no face in the generation: zero embedding, similarity 0
    assert result.missing == 1 and result.direction == "down" and result.name == "fds"
    assert any("1 of 3 generated" in n and "0" in n for n in result.notes)
    assert any("1 of 3 training" in n for n in result.notes)
    assert all(-1.0 <= v <= 1.0 for v in result.values) and "stand-in" in result.implementation


def test_fds_logic_pairs_values_with_generations_in_order() -> None:
    metric = FaceDetectionScore(crop=tiny_crop, embed=TinyEmbedder())
    refs = torch.stack([colour(0.8, 0.3, 0.2, seed=1)])
    gens = torch.stack([colour(0.8, 0.3, 0.2, seed=1), colour(0.1, 0.2, 0.9, seed=5), FLAT])
    forward = metric.compute(gens, refs).values
    backward = metric.compute(gens.flip(0), refs).values
    assert backward == forward[::-1]
    assert forward[0] == pytest.approx(1.0, abs=1e-6)  # the training image itself
    assert forward[0] > forward[1]  # same 'identity' beats another: lower = better protection


def test_fds_stand_ins_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="both"):
        FaceDetectionScore(crop=tiny_crop)


def test_fds_loads_a_checkpoint_in_facenet_layout_and_names_its_hash(
        monkeypatch, tmp_path, images) -> None:
    """The real path: facenet-pytorch's MTCNN and InceptionResnetV1, the checkpoint found in
    $PROTECTION_AUDIT_WEIGHTS and loaded strictly. The weights here are random (the VGGFace2
    file is a download), so only structure, pairing and provenance are checked, not values."""
    from facenet_pytorch import InceptionResnetV1

    from audit.parts.metrics.weights import file_sha256

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False)
    net.logits = torch.nn.Linear(512, 8631)
    torch.save(net.state_dict(), tmp_path / FACENET_FILE)
    monkeypatch.setenv("PROTECTION_AUDIT_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    metric = FaceDetectionScore()
    assert metric.missing_why() is None
    result = metric.compute(images[:2], images)
    assert result.unavailable is None and len(result.values) == 2 and result.missing == 0
    assert all(-1.0 <= v <= 1.0 for v in result.values)
    assert file_sha256(tmp_path / FACENET_FILE) in result.implementation
    assert "facenet-pytorch 2.6.0" in result.implementation


# -- ISM, FDFR (Anti-DreamBooth §5) ------------------------------------------------------------


def write_standin_pack(folder) -> None:
    """A model pack in InsightFace's layout with two tiny ONNX stand-ins: a detector with
    SCRFD's 9 outputs (scores, box and 5-landmark distances at strides 8/16/32, 2 anchors;
    'face' = bright region) and a recogniser with ArcFace's 112-px input (a projection of the
    crop's mean colour). InsightFace routes and runs them as it would det_10g and w600k_r50."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True)
    kps = 4 * np.array([-0.6, -0.4, 0.6, -0.4, 0.0, 0.1, -0.4, 0.6, 0.4, 0.6], dtype=np.float32)
    heads = {"score": (2, 1, np.full(2, -2.0), 8.0 / 3), "bbox": (8, 4, np.full(8, 40.0), 0.0),
             "kps": (20, 10, np.tile(kps, 2), 0.0)}
    nodes, inits, outs = [], [], {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"p{s}"], kernel_shape=[s, s],
                                      strides=[s, s]))
        for head, (ch, k, bias, gain) in heads.items():
            inits += [numpy_helper.from_array(np.full((ch, 3, 1, 1), gain, np.float32),
                                              f"w_{head}{s}"),
                      numpy_helper.from_array(bias.astype(np.float32), f"b_{head}{s}"),
                      numpy_helper.from_array(np.array([-1, k], np.int64), f"shape_{head}{s}")]
            nodes.append(helper.make_node("Conv", [f"p{s}", f"w_{head}{s}", f"b_{head}{s}"],
                                          [f"c_{head}{s}"]))
            last = f"c_{head}{s}"
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [last], [f"sig{s}"]))
                last = f"sig{s}"
            nodes.append(helper.make_node("Transpose", [last], [f"t_{head}{s}"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [f"t_{head}{s}", f"shape_{head}{s}"],
                                          [f"{head}_{s}"]))
            outs[head].append(helper.make_tensor_value_info(f"{head}_{s}", TensorProto.FLOAT,
                                                            ["n", k]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])
    graph = helper.make_graph(nodes, "standin_scrfd", [image],
                              outs["score"] + outs["bbox"] + outs["kps"], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              folder / "det_standin.onnx")
    projection = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "proj"], ["fc1"])]
    graph = helper.make_graph(nodes, "standin_arcface",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT,
                                                             ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(projection, "proj")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
              folder / "rec_standin.onnx")


# scikit-image's deprecation inside InsightFace's alignment
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_ism_and_fdfr_run_a_pack_through_insightface(no_weights) -> None:
    """The real loading path — pack found in $PROTECTION_AUDIT_WEIGHTS, InsightFace's
    FaceAnalysis, detection, 5-point alignment, recognition — with stand-in ONNX networks
    (the buffalo_l weights are a download): structure, pairing and provenance, not values."""
    write_standin_pack(no_weights / "weights" / "buffalo_l")
    bright = [colour(0.9, 0.8, 0.5, 96, i) for i in range(3)]
    refs = torch.stack(bright[:2])
    gens = torch.stack([bright[2], torch.full((3, 96, 96), 0.3), colour(0.95, 0.6, 0.9, 96, 7)])
    ism, fdfr = IdentityScoreMatching(), FaceDetectionFailureRate()
    assert ism.missing_why() is None and fdfr.missing_why() is None
    ism_result, fdfr_result = ism.compute(gens, refs), fdfr.compute(gens, refs)
    # the dark image has no 'face' for the stand-in detector
    assert fdfr_result.values == [0.0, 1.0, 0.0]
    assert ism_result.values[1] is None and ism_result.missing == 1
    assert ism_result.values[0] > ism_result.values[2]  # the subject's 'colour' beats another
    for result in (ism_result, fdfr_result):
        assert "pack buffalo_l [det_standin.onnx sha256:" in result.implementation and (
            "rec_standin.onnx sha256:") in result.implementation
        assert "insightface 2.1" in result.implementation




def test_ism_logic_mean_clean_identity_and_faceless_generations_left_out() -> None:
    metric = IdentityScoreMatching(analyzer=colour_analyzer, label="mean colour")
    refs = torch.stack([colour(0.9, 0.2, 0.2, seed=1), colour(0.7, 0.3, 0.1, seed=2), FLAT])
    gens = torch.stack([colour(0.8, 0.2, 0.2, seed=3), FLAT, colour(0.2, 0.3, 0.9, seed=4)])
    result = metric.compute(gens, refs)
    unit = [uint8_mean(r) / np.linalg.norm(uint8_mean(r)) for r in refs[:2]]
    identity = (unit[0] + unit[1]) / 2  # the faceless clean image is not part of the identity
    assert result.values[1] is None  # no face: the slot is undefined (left out), not 0
    assert [result.values[0], result.values[2]] == pytest.approx(
        [cos(uint8_mean(gens[0]), identity), cos(uint8_mean(gens[2]), identity)], abs=1e-9)
    assert result.missing == 1 and any("left out" in n for n in result.notes)
    assert any("1 of 3 clean" in n for n in result.notes)
    assert result.values[0] > result.values[2] and result.direction == "down"


def test_ism_logic_uses_the_biggest_face() -> None:
    small, big = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])

    def two_faces(rgb: np.ndarray) -> list[Face]:
        return [Face((0, 0, 10, 10), 0.99, small), Face((0, 0, 30, 30), 0.6, big)]

    def one_face(rgb: np.ndarray) -> list[Face]:
        return [Face((0, 0, 30, 30), 0.9, big)]

    refs = torch.stack([colour(0.5, 0.5, 0.5)])
    assert IdentityScoreMatching(analyzer=one_face).compute(refs, refs).values == pytest.approx(
        [1.0])
    ism = IdentityScoreMatching(analyzer=lambda rgb: two_faces(rgb) if rgb.mean() > 100
                                else one_face(rgb))
    # the big face, not the confident small one
    assert ism.compute(refs, refs).values == pytest.approx([1.0])


def test_ism_without_any_clean_face_is_unavailable() -> None:
    result = IdentityScoreMatching(analyzer=colour_analyzer).compute(torch.stack([colour(
        0.2, 0.4, 0.6)]), FLAT[None])
    assert result.values == [] and "no face was detected in any clean image" in result.unavailable


def test_fdfr_logic_one_per_image_and_its_mean_is_the_rate() -> None:
    metric = FaceDetectionFailureRate(analyzer=colour_analyzer, label="flat = no face")
    gens = torch.stack([colour(0.3, 0.3, 0.3), FLAT, FLAT, colour(0.6, 0.2, 0.4, seed=2)])
    result = metric.compute(gens, gens[:1])
    assert result.values == [0.0, 1.0, 1.0, 0.0] and result.mean == 0.5
    assert result.direction == "up" and result.name == "fdfr"


# -- IMS (DiffShortcut §5, App. A.2) -----------------------------------------------------------


def test_ims_logic_weights_the_two_networks_and_counts_a_missed_face_as_zero() -> None:
    def other_network(rgb: np.ndarray) -> list[Face]:  # sees only reddish faces, embeds (r, b)
        m = rgb.reshape(-1, 3).mean(0) - 127.5
        return ([Face((0, 0, 8, 8), 0.9, np.array([m[0], m[2]]))] if has_face(rgb) and m[0] > 0
                else [])

    metric = IdentityMatchingSimilarity(antelope=colour_analyzer, vgg=other_network,
                                        label="two stand-ins")
    refs = torch.stack([colour(0.9, 0.3, 0.2, seed=1), colour(0.8, 0.2, 0.3, seed=2)])
    gens = torch.stack([colour(0.85, 0.25, 0.25, seed=3), colour(0.1, 0.4, 0.9, seed=4), FLAT])
    result = metric.compute(gens, refs)
    ip_identity = mean_identity([uint8_mean(r) for r in refs])
    vgg_identity = mean_identity([uint8_mean(r)[[0, 2]] for r in refs])
    g0, g1 = uint8_mean(gens[0]), uint8_mean(gens[1])
    assert result.values[0] == pytest.approx(0.7 * cos(g0, ip_identity) + 0.3
                                             * cos(g0[[0, 2]], vgg_identity), abs=1e-9)
    # VGG missed it: 0 in its term
    assert result.values[1] == pytest.approx(0.7 * cos(g1, ip_identity), abs=1e-9)
    assert result.values[2] == 0.0 and result.missing == 2 and result.direction == "down"


def test_ims_is_never_computed_from_one_network_under_its_name(no_weights) -> None:
    with pytest.raises(ValueError, match="both"):
        IdentityMatchingSimilarity(antelope=colour_analyzer)
    result = IdentityMatchingSimilarity().compute(torch.stack([colour(0.5, 0.4, 0.3)]),
                                                  torch.stack([colour(0.5, 0.4, 0.3)]))
    assert (result.values == [] and "antelopev2" in result.unavailable
            and "deepface" in result.unavailable)


# -- the pure aggregations ---------------------------------------------------------------------

vectors = arrays(np.float64, st.integers(2, 6).map(lambda n: (n, 8)),
                 elements=st.floats(-10, 10, allow_nan=False, allow_subnormal=False))


@settings(max_examples=60, deadline=None)
@given(gen=vectors, ref=vectors, scale=st.floats(0.01, 100))
def test_fds_and_ism_are_cosines_in_range_and_scale_free(gen, ref, scale) -> None:
    gen_list, ref_list = list(gen), list(ref)
    fds = fds_values(gen_list, ref_list)
    assert len(fds) == len(gen_list) and all(-1 - 1e-9 <= v <= 1 + 1e-9 for v in fds)
    assert fds_values([g * scale for g in gen_list], ref_list) == pytest.approx(fds, abs=1e-9)
    if mean_identity(ref_list) is not None and np.linalg.norm(mean_identity(ref_list)) > 1e-6:
        ism = ism_values(gen_list, ref_list)
        assert all(v is not None and -1 - 1e-9 <= v <= 1 + 1e-9 for v in ism)
    # a missing face: 0 in FDS (both sides), left out (None) in ISM
    assert fds_values([None, *gen_list[:1]], ref_list)[0] == 0.0
    assert fds_values(gen_list[:1], [None] * len(ref_list)) == [0.0]


@settings(max_examples=40, deadline=None)
@given(ip=vectors, vgg=vectors, weight=st.floats(0, 1))
def test_ims_is_the_weighted_sum_of_two_isms(ip, vgg, weight) -> None:
    n = min(len(ip), len(vgg))
    ip_l, vgg_l = list(ip[:n]), list(vgg[:n])
    if min(np.linalg.norm(mean_identity(ip_l)), np.linalg.norm(mean_identity(vgg_l))) < 1e-6:
        return
    ims = ims_values(ip_l, ip_l, vgg_l, vgg_l, weight)
    expected = [weight * a + (1 - weight) * b for a, b in zip(ism_values(ip_l, ip_l),
                                                              ism_values(vgg_l, vgg_l),
                                                              strict=True)]
    assert ims == pytest.approx(expected, abs=1e-9)


# -- weights absent: unavailable at once, saying what and where ----------------------------------


@pytest.mark.parametrize("name, needs", [
    ("fds", [FACENET_FILE, "torch/checkpoints", "weights/" + FACENET_FILE]),
    ("ism", ["buffalo_l", ".insightface/models/buffalo_l", "weights/buffalo_l"]),
    ("fdfr", ["buffalo_l", ".insightface/models/buffalo_l"]),
    ("ims", ["antelopev2", ".insightface/models/antelopev2", "deepface"]),
])
def test_missing_weights_are_unavailable_in_well_under_a_second(
        no_weights, faces256, name, needs) -> None:
    from audit.parts import METRICS

    metric = METRICS.get(name).load()()  # a fresh instance: nothing loaded before
    started = time.perf_counter()
    result = metric.compute(faces256[:2], faces256)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{name} took {elapsed:.2f} s to say it is unavailable"
    assert result.values == [] and result.unavailable
    for text in needs:
        assert text in result.unavailable, (text, result.unavailable)
    assert "--allow-download" in result.unavailable or name == "ims"
    assert "(missing)" in metric.implementation_name()


def test_insightface_pack_found_in_the_weights_folder_even_one_level_deep(no_weights) -> None:
    pack = no_weights / "weights" / "antelopev2" / "antelopev2"
    pack.mkdir(parents=True)
    assert find_pack("antelopev2") is None  # an empty folder is no pack
    (pack / "glintr100.onnx").write_bytes(b"x")
    assert find_pack("antelopev2") == pack
    flat = no_weights / "home" / ".insightface" / "models" / "buffalo_l"
    flat.mkdir(parents=True)
    (flat / "w600k_r50.onnx").write_bytes(b"x")
    assert find_pack("buffalo_l") == flat


def test_sha256_of_weights_is_the_files() -> None:
    import hashlib

    from audit.parts.metrics.weights import file_sha256

    path = faces_module.__file__
    assert file_sha256(path) == hashlib.sha256(open(path, "rb").read()).hexdigest()


# -- the offline metrics: dlib against dlib itself -------------------------------------------------


def test_dlib_identity_similarity_equals_dlibs_own_descriptors(faces256) -> None:
    """The metric's values against cosines of descriptors computed by calling dlib directly on
    the same 8-bit images (256 px: no resizing on either side)."""
    import dlib

    from audit.data.images import to_uint8
    from audit.parts.metrics.identity import DlibIdentitySimilarity, models_folder

    folder = models_folder()
    detector = dlib.get_frontal_face_detector()
    aligner = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(image: np.ndarray) -> np.ndarray:
        box = max(detector(image, 0), key=lambda r: r.width() * r.height())
        return np.asarray(net.compute_face_descriptor(image, aligner(image, box)))

    arrays_u8 = [np.ascontiguousarray(a.permute(1, 2, 0).numpy()) for a in to_uint8(faces256)]
    d = [descriptor(a) for a in arrays_u8]
    expected = [np.mean([cos(d[i], d[j]) for j in range(len(d))]) for i in range(len(d))]
    result = DlibIdentitySimilarity().compute(faces256, faces256)
    assert result.missing == 0 and result.values == pytest.approx(expected, abs=1e-4)


# -- the verdict: FDS decides; the smoke tier's substitute and the standard tier's fallback ------


def test_bundled_scenarios_decide_on_fds() -> None:
    from audit.config.scenario import catalogue_files, load_scenario
    from audit.run.planner import editing_exploit

    for path in catalogue_files():
        scenario = load_scenario(path)
        # the editing scenarios (PhotoGuard §5) compare edits: they decide on edit_ssim
        expected = "edit_ssim" if editing_exploit(scenario) is not None else "fds"
        assert scenario.verdict.metric == expected, path


def test_smoke_tier_states_its_substitute() -> None:
    from audit.config.tiers import get_tier
    from audit.judge.case import metric_choice

    scenario = SimpleNamespace(verdict=SimpleNamespace(metric="fds"))
    names, metric, note = metric_choice(get_tier("smoke"), 64, scenario)
    assert metric == "subject_similarity" and "fds" in names and "subject_similarity" in names
    assert note is not None and note.startswith("tier 'smoke' decides on subject_similarity "
                                                    "instead of the scenario's fds")


def _values(fds_unavailable: str | None) -> dict:
    entry = {"values": [0.1], "unavailable": fds_unavailable}
    return {"fds": {("run",): entry},
            "dlib_identity_similarity": {("run",): {"values": [0.2], "unavailable": None}}}


def test_standard_tier_falls_back_when_fds_is_unavailable_and_flags_it() -> None:
    from audit.config.tiers import get_tier
    from audit.judge.case import CaseJudge, metric_choice

    judge = CaseJudge(get_tier("standard"), 0)
    names, metric, note = metric_choice(get_tier("standard"), 512,
                                        SimpleNamespace(verdict=SimpleNamespace(metric="fds")))
    assert metric == "fds" and "dlib_identity_similarity" in names  # the fallback is computed too
    assert note is None
    flags: list[str] = []
    decides, fallback, note = judge.fallback("fds", _values("weights missing"), flags)
    assert decides == "dlib_identity_similarity" and note is not None and fallback is not None
    assert "fds is unavailable (weights missing)" in note
    assert "falls back to dlib_identity_similarity" in note
    assert fallback.fallback == "dlib_identity_similarity"
    assert any(f.startswith("verdict on a fallback metric") for f in flags)
    # FDS available: it decides, nothing noted
    flags = []
    assert judge.fallback("fds", _values(None), flags) == ("fds", None, None) and flags == []


def test_paper_tier_has_no_fallback() -> None:
    from audit.config.tiers import get_tier
    from audit.judge.case import CaseJudge

    flags: list[str] = []
    assert CaseJudge(get_tier("paper"), 0).fallback(
        "fds", _values("weights missing"), flags) == ("fds", None, None)
    assert flags == []  # the case then ends as an error naming what is missing


def test_old_metric_names_are_refused_with_their_migration() -> None:
    from audit.config.tiers import get_tier, parse_overrides, validate_overrides
    from audit.parts.registry import InvalidParams

    for old, new in (("identity_similarity", "dlib_identity_similarity"),
                     ("face_detection_failure_rate", "mtcnn_detection_failure_rate")):
        with pytest.raises(InvalidParams, match=f"was renamed.*{new}"):
            validate_overrides(
                get_tier("smoke", parse_overrides([f"verdict.fallback_metric={old}"])))
        from audit.parts.metrics.build import UnknownMetric, get_metric

        with pytest.raises(UnknownMetric, match=f"was renamed.*{new}"):
            get_metric(old)
