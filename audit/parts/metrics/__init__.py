"""Metrics of exploit outputs (identity, face detection, quality, distribution, edits) and of
imperceptibility, registered here beside their code with the direction that means better
protection; ``build.py`` makes a metric object from its name."""

from __future__ import annotations

from audit.parts.registry import Registry

METRICS = Registry("metric")

_M = "audit.parts.metrics"
METRICS.register(
    "subject_similarity", target=f"{_M}.subject:SubjectSimilarity",
    params="audit.parts.registry:NoParams",
    description="SSIM (piq) of each generation to its nearest clean subject image",
    source="protection-audit (smoke tier's substitute for face metrics; model card)",
    direction="down", implementation="piq ssim, window 11, max over the subject images "
                                     "(weight-free)",
)
METRICS.register(
    "gram_style_similarity", target=f"{_M}.style:GramStyleSimilarity",
    params="audit.parts.registry:NoParams",
    description="cosine of each generation's Gram-matrix style statistics to the style's works' "
                "(random-filter features)",
    source="Gatys et al. CVPR 2016 eq. 3; Ustyuzhaninov et al. ICLR 2017 (smoke tier's style "
           "metric)",
    direction="down", implementation="64 fixed random 5×5 ReLU filters, 2 scales (weight-free)",
)
METRICS.register(
    "clip_style_similarity", target=f"{_M}.style:ClipStyleSimilarity",
    params="audit.parts.registry:NoParams",
    description="cosine of each generation's CLIP embedding to the mean embedding of the style's "
                "works",
    source="Glaze §6 / IMPRESS §5.2 (CLIP style classifiers), one-class form",
    direction="down", implementation="open_clip ViT-B-32 'openai' (downloaded)",
)
METRICS.register(
    "fds", target=f"{_M}.fds:FaceDetectionScore", params="audit.parts.registry:NoParams",
    description="PID's FDS: facenet VGGFace2 embedding (MTCNN face), mean cosine to the training "
                "images'; no face = 0",
    source="PID App. A.2",
    direction="down", implementation="facenet-pytorch MTCNN + InceptionResnetV1, VGGFace2 weights "
                                     "(downloaded)",
)
METRICS.register(
    "ism", target=f"{_M}.insight:IdentityScoreMatching", params="audit.parts.registry:NoParams",
    description="ArcFace (InsightFace buffalo_l) cosine to the mean clean-face embedding; no face: "
                "left out",
    source="Anti-DreamBooth §5 ISM",
    direction="down", implementation="insightface buffalo_l: SCRFD detector + ArcFace (downloaded)",
)
METRICS.register(
    "fdfr", target=f"{_M}.insight:FaceDetectionFailureRate", params="audit.parts.registry:NoParams",
    description="share of generations without a detected face (InsightFace SCRFD, RetinaFace's "
                "successor)",
    source="Anti-DreamBooth §5 FDFR",
    direction="up", implementation="insightface SCRFD detector (downloaded)",
)
METRICS.register(
    "ims", target=f"{_M}.insight:IdentityMatchingSimilarity",
    params="audit.parts.registry:NoParams",
    description="0.7·antelopev2 + 0.3·DeepFace VGG-Face cosine to the mean clean embedding (needs "
                "deepface)",
    source="DiffShortcut §5, App. A.2 IMS",
    direction="down", implementation="insightface antelopev2 + deepface VGG-Face (downloaded)",
)
METRICS.register(
    "dlib_identity_similarity", target=f"{_M}.identity:DlibIdentitySimilarity",
    params="audit.parts.registry:NoParams",
    description="dlib ResNet face embedding, mean cosine to the clean subject's; offline, not FDS "
                "or ISM",
    source="protection-audit (offline identity metric; cf. PID App. A.2 FDS)",
    direction="down", implementation="dlib ResNet, face-recognition-models weights (bundled)",
)
METRICS.register(
    "mtcnn_detection_failure_rate", target=f"{_M}.face_detection:MtcnnDetectionFailureRate",
    params="audit.parts.registry:NoParams",
    description="share of generations where MTCNN (bundled weights) finds no face; offline, not "
                "FDFR",
    source="protection-audit (offline; cf. Anti-DreamBooth §5 FDFR)",
    direction="up", implementation="facenet-pytorch MTCNN (bundled weights)",
)
METRICS.register(
    # 2: undefined slots kept (None)
    "brisque", target=f"{_M}.quality:Brisque", params="audit.parts.registry:NoParams", version=2,
    description="BRISQUE no-reference quality (the brisque package's libsvm model)",
    source="PID App. A.2; Anti-DreamBooth §5",
    direction="up", implementation="brisque 0.2.0 libsvm SVR, bundled model (weight-free)",
)
_CLIP = "open_clip ViT-B-32 'openai' (QuickGELU), weights from the HF hub (downloaded)"
METRICS.register(
    "iqs", target=f"{_M}.clip_quality:ImageQualityScore", params="audit.parts.registry:NoParams",
    description="PID's IQS: 10³ · (CLIP cosine to 'A high-quality photo' − to 'A low-quality "
                "photo')",
    source="PID App. A.2", direction="down", implementation=_CLIP,
)
METRICS.register(
    "clip_iqac", target=f"{_M}.clip_quality:ClipIqac", params="audit.parts.registry:NoParams",
    description="CLIP-IQAC: softmax over CLIP logits of 'a good/bad photo of face', good − bad, in "
                "[−1, 1]",
    source="DiffShortcut App. A.2 (after MetaCloak)", direction="down", implementation=_CLIP,
)
METRICS.register(
    "q", target=f"{_M}.clip_quality:QualityQ", params="audit.parts.registry:NoParams",
    description="DiffShortcut's Q: mean of LIQE re-normalised to [−1, 1] and CLIP-IQAC (LIQE "
                "unavailable here)",
    source="DiffShortcut §5, App. A.2",
    direction="down",
    implementation="LIQE: none (pyiqa not a dependency) + CLIP-IQAC with " + _CLIP,
)
_INCEPTION = "piq InceptionV3 pool3, TF-FID weights pt_inception-2015-12-05 (downloaded)"
METRICS.register(
    "fid", target=f"{_M}.distribution:FrechetInceptionDistance",
    params="audit.parts.registry:NoParams",
    description="FID of the generations against the clean subject images (one value per set)",
    source="PID App. A.2; PhotoGuard Table 6 (Heusel et al. 2017)",
    direction="up", implementation=_INCEPTION + "; exact Fréchet distance",
)
METRICS.register(
    "prd_precision", target=f"{_M}.distribution:PRDPrecision",
    params="audit.parts.registry:NoParams",
    description="PRD precision F_1/8 of the generations against the clean subject images (one "
                "value per set)",
    source="PhotoGuard Table 6 PR (Sajjadi et al. NeurIPS 2018)",
    direction="down", implementation=_INCEPTION + "; PRD on scipy k-means",
)
METRICS.register(
    "prd_recall", target=f"{_M}.distribution:PRDRecall", params="audit.parts.registry:NoParams",
    description="PRD recall F_8 of the generations against the clean subject images (one value per "
                "set)",
    source="PhotoGuard Table 6 PR (Sajjadi et al. NeurIPS 2018)",
    direction="down", implementation=_INCEPTION + "; PRD on scipy k-means",
)
METRICS.register(
    "lpips", target=f"{_M}.imperceptibility:ProtectionLpips",
    params="audit.parts.registry:NoParams",
    description="imperceptibility: LPIPS between each protected image and its clean original (↑ = "
                "more visible)",
    source="PID Table 14; IMPRESS §3",
    direction="up", implementation="lpips 0.1.4 v0.1 VGG heads (bundled), torchvision VGG16 "
                                   "backbone (downloaded)",
)
for _name, _what in (("ssim", "SSIM"), ("psnr", "PSNR (dB)"), ("vifp", "VIFp"), ("fsim", "FSIM")):
    METRICS.register(
        f"edit_{_name}", target=f"{_M}.edits:Edit{_name.upper() if _name != 'vifp' else 'VIFp'}",
        params="audit.parts.registry:NoParams",
        description=f"{_what} between the edit of a protected image and the edit of the clean one "
                    "(editing exploits)",
        source="PhotoGuard §5 Table 6", direction="down",
        implementation=f"piq {_name if _name != 'vifp' else 'vif_p'} (weight-free)",
    )

# Metrics that need a detectable face (a tier may decide on another metric where faces are too
# small).
FACE_METRICS = frozenset({"fds", "ism", "fdfr", "ims", "dlib_identity_similarity",
                          "mtcnn_detection_failure_rate"})
# The metrics computed on every exploit's generations (a weight-needing metric whose weights
# are absent answers 'unavailable' at once).
# PID's FID and IQS and DiffShortcut's Q and CLIP-IQAC are here too; PRD precision/recall
# (PhotoGuard's, on edits) and the edit similarities are for the editing exploits, by name.
EXPLOIT_METRICS = ("subject_similarity", "fds", "ism", "fdfr", "ims", "dlib_identity_similarity",
                   "mtcnn_detection_failure_rate", "brisque", "iqs", "fid", "clip_iqac", "q")
# The metrics of an artist's style (subject kind 'style'): computed on its exploits instead of the
# face metrics.
STYLE_METRICS = ("gram_style_similarity", "clip_style_similarity")
# Metric names of earlier versions: refused with the migration, never silently mapped (the
# old identity metric was not the papers' FDS or ISM that its name suggested).
RENAMED_METRICS = {
    "identity_similarity": "it is dlib's identity similarity, now 'dlib_identity_similarity'; "
                           "PID's FDS is 'fds', Anti-DreamBooth's ISM 'ism'",
    "face_detection_failure_rate": "it is MTCNN's detection failure rate, now "
                                   "'mtcnn_detection_failure_rate'; Anti-DreamBooth's FDFR is "
                                   "'fdfr'",
}


def renamed_metric(name: object) -> str | None:
    """The migration message for a metric name of an earlier version, or None."""
    why = RENAMED_METRICS.get(str(name))
    return f"metric '{name}' was renamed: {why}" if why else None
