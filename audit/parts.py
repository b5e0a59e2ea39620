"""Every built-in part, registered once: transforms, protections, exploits, metrics.

A new part is one file (its function or class and its ``Params`` model) plus one
``register`` call here. References are lazy ``"module:attr"`` strings, so listing the parts
(``python -m audit ls``) imports neither torch nor any model library.
"""

from __future__ import annotations

from audit.registry import Params, Registry

TRANSFORMS = Registry("transform")
PROTECTIONS = Registry("protection")
EXPLOITS = Registry("exploit")
METRICS = Registry("metric")
REGISTRIES = {r.kind: r for r in (TRANSFORMS, PROTECTIONS, EXPLOITS, METRICS)}


class NoParams(Params):
    """A part without parameters."""


_C = "audit.transforms.corruptions"
TRANSFORMS.register(
    "jpeg", target=f"{_C}:jpeg", params=f"{_C}:JpegParams", version=2, differentiable=True,
    description="re-encode as baseline JPEG (Pillow/libjpeg) at a quality 1-100 (differentiable form: kornia)",
    source="DiffShortcut App. C.1 (q 75); PID §6.5 Table 7; IMPRESS §5.1 (q 15)",
)
TRANSFORMS.register(
    "gaussian_blur", target=f"{_C}:gaussian_blur", params=f"{_C}:GaussianBlurParams", version=2, differentiable=True,
    description="Gaussian smoothing (kornia), σ in pixels at the audited resolution",
    source="PID §6.5; DiffShortcut App. C.1 (PIL radius 5 = σ 5 px)",
)
TRANSFORMS.register(
    "random_gaussian_blur", target=f"{_C}:random_gaussian_blur", params=f"{_C}:RandomGaussianBlurParams",
    description="Gaussian blur (kornia), fixed kernel, σ ~ U[min, max] px per image", differentiable=True,
    source="MetaCloak's transformation set (kernel 7, σ ∈ [0.1, 2])", random=True,
)
TRANSFORMS.register(
    "gaussian_noise", target=f"{_C}:gaussian_noise", params=f"{_C}:GaussianNoiseParams", version=2,
    description="additive Gaussian noise, std or variance in [0,1] units, clamped", source="IMPRESS §5.1 baseline",
    random=True, differentiable=True,
)
TRANSFORMS.register(
    "uniform_noise", target=f"{_C}:uniform_noise", params=f"{_C}:UniformNoiseParams",
    description="additive uniform noise in [−amplitude, amplitude], clamped", source="PID §6.5 smoothing",
    random=True, differentiable=True,
)
TRANSFORMS.register(
    "resize", target=f"{_C}:resize_down_up", params=f"{_C}:ResizeParams", differentiable=True,
    description="bicubic downscale by a factor, then back up", source="IMPRESS §5.1 (512 → 256 → 512)",
)
TRANSFORMS.register(
    "random_resized_crop", target=f"{_C}:random_resized_crop", params=f"{_C}:RandomResizedCropParams", version=2,
    description="torchvision RandomResizedCrop: area fraction in scale, aspect in ratio, resized back",
    source="PID §6.5 Table 7 cropping (no range stated); torchvision defaults", random=True, differentiable=True,
)
TRANSFORMS.register(
    "denoise_gaussian", target="audit.transforms.denoise:denoise_gaussian",
    params="audit.transforms.denoise:GaussianDenoiseParams",
    description="Gaussian filter with σ calibrated per image by J-invariance (scikit-image), as Aydin's",
    source="PID §6.5 Table 7 denoising, footnote 5 (Aydin's Gaussian denoiser)",
)
TRANSFORMS.register(
    "denoise_wavelet", target="audit.transforms.denoise:denoise_wavelet",
    params="audit.transforms.denoise:WaveletDenoiseParams",
    description="BayesShrink wavelet denoising, noise σ estimated (scikit-image + PyWavelets)",
    source="Chang et al. IEEE TIP 2000; PID §6.5 denoising (another denoiser)",
)
TRANSFORMS.register(
    "denoise_nl_means", target="audit.transforms.denoise:denoise_nl_means",
    params="audit.transforms.denoise:NlMeansParams",
    description="non-local means, h = 0.8 × estimated noise σ (scikit-image)",
    source="Buades et al. CVPR 2005; PID §6.5 denoising (another denoiser)",
)
TRANSFORMS.register(
    "tvm", target="audit.transforms.tvm:tvm", params="audit.transforms.tvm:TvmParams", random=True,
    description="downsize, drop 2 % of values, TV-regularised reconstruction (Chambolle-Pock), upsample",
    source="DiffShortcut App. C.1 (TVM; open solver instead of MOSEK)",
)
TRANSFORMS.register(
    "level_jitter", target=f"{_C}:level_jitter", params=f"{_C}:LevelJitterParams",
    description="each pixel ± up to k 8-bit levels: no protective intent (the exploit's noise floor)",
    source="protection-audit control (model card: noise floor)", random=True,
)

PROTECTIONS.register(
    "none", target="audit.protections.simple:NoProtection", params="audit.protections.simple:NoProtectionParams",
    description="the clean images as they are (pipeline check: every case reports no effect)",
    source="—",
)
PROTECTIONS.register(
    "random", target="audit.protections.simple:RandomNoise", params="audit.protections.simple:RandomNoiseParams",
    description="uniform noise in [−ε, ε] of the same budget: the null baseline",
    source="PID Table 1 'Random'; PhotoGuard §5", random=True,
)
PROTECTIONS.register(
    "dir", target="audit.protections.folder:ProtectedFolder", params="audit.protections.folder:ProtectedFolderParams",
    description="a folder of already-protected images (--protection=dir:PATH), paired by file name with the clean ones",
    source="DESIGN 'Protections' (apps and services without code: Glaze, Mist, ...)",
)
PROTECTIONS.register(
    "pid", target="audit.protections.pid:PID", params="audit.protections.pid:PIDParams",
    description="PID: ℓ∞ PGD on the VAE encoder's posterior (add-log objective), prompt-independent",
    source="Li et al., ICML 2024, §5.1 eq. 10", random=True, uses_model=True,
)

EXPLOITS.register(
    "dreambooth", target="audit.exploits.dreambooth:finetune", params="audit.exploits.dreambooth:DreamboothParams",
    description="DreamBooth fine-tuning of the UNet (text encoder optional), then generation",
    source="Ruiz et al. CVPR 2023; PID App. A Table 8", random=True, uses_model=True,
)
EXPLOITS.register(
    "lora", target="audit.exploits.lora:finetune", params="audit.exploits.lora:LoraParams",
    description="DreamBooth with LoRA adapters (peft) on the UNet's and the text encoder's attention, then generation",
    source="Hu et al. ICLR 2022; PID App. C.1, Table 8c", random=True, uses_model=True,
)

_M = "audit.metrics"
METRICS.register(
    "subject_similarity", target=f"{_M}.subject:SubjectSimilarity", params="audit.parts:NoParams",
    description="SSIM (piq) of each generation to its nearest clean subject image",
    source="protection-audit (smoke tier's substitute for face metrics; model card)",
    direction="down", implementation="piq ssim, window 11, max over the subject images (weight-free)",
)
METRICS.register(
    "fds", target=f"{_M}.fds:FaceDetectionScore", params="audit.parts:NoParams",
    description="PID's FDS: facenet VGGFace2 embedding (MTCNN face), mean cosine to the training images'; no face = 0",
    source="PID App. A.2",
    direction="down", implementation="facenet-pytorch MTCNN + InceptionResnetV1, VGGFace2 weights (downloaded)",
)
METRICS.register(
    "ism", target=f"{_M}.insight:IdentityScoreMatching", params="audit.parts:NoParams",
    description="ArcFace (InsightFace buffalo_l) cosine to the mean clean-face embedding; no face: left out",
    source="Anti-DreamBooth §5 ISM",
    direction="down", implementation="insightface buffalo_l: SCRFD detector + ArcFace (downloaded)",
)
METRICS.register(
    "fdfr", target=f"{_M}.insight:FaceDetectionFailureRate", params="audit.parts:NoParams",
    description="share of generations without a detected face (InsightFace SCRFD, RetinaFace's successor)",
    source="Anti-DreamBooth §5 FDFR",
    direction="up", implementation="insightface SCRFD detector (downloaded)",
)
METRICS.register(
    "ims", target=f"{_M}.insight:IdentityMatchingSimilarity", params="audit.parts:NoParams",
    description="0.7·antelopev2 + 0.3·DeepFace VGG-Face cosine to the mean clean embedding (needs deepface)",
    source="DiffShortcut §5, App. A.2 IMS",
    direction="down", implementation="insightface antelopev2 + deepface VGG-Face (downloaded)",
)
METRICS.register(
    "dlib_identity_similarity", target=f"{_M}.identity:DlibIdentitySimilarity", params="audit.parts:NoParams",
    description="dlib ResNet face embedding, mean cosine to the clean subject's; offline, not FDS or ISM",
    source="protection-audit (offline identity metric; cf. PID App. A.2 FDS)",
    direction="down", implementation="dlib ResNet, face-recognition-models weights (bundled)",
)
METRICS.register(
    "mtcnn_detection_failure_rate", target=f"{_M}.face_detection:MtcnnDetectionFailureRate", params="audit.parts:NoParams",
    description="share of generations where MTCNN (bundled weights) finds no face; offline, not FDFR",
    source="protection-audit (offline; cf. Anti-DreamBooth §5 FDFR)",
    direction="up", implementation="facenet-pytorch MTCNN (bundled weights)",
)
METRICS.register(
    "brisque", target=f"{_M}.quality:Brisque", params="audit.parts:NoParams", version=2,  # 2: undefined slots kept (None)
    description="BRISQUE no-reference quality (the brisque package's libsvm model)",
    source="PID App. A.2; Anti-DreamBooth §5",
    direction="up", implementation="brisque 0.2.0 libsvm SVR, bundled model (weight-free)",
)
_CLIP = "open_clip ViT-B-32 'openai' (QuickGELU), weights from the HF hub (downloaded)"
METRICS.register(
    "iqs", target=f"{_M}.clip_quality:ImageQualityScore", params="audit.parts:NoParams",
    description="PID's IQS: 10³ · (CLIP cosine to 'A high-quality photo' − to 'A low-quality photo')",
    source="PID App. A.2", direction="down", implementation=_CLIP,
)
METRICS.register(
    "clip_iqac", target=f"{_M}.clip_quality:ClipIqac", params="audit.parts:NoParams",
    description="CLIP-IQAC: softmax over CLIP logits of 'a good/bad photo of face', good − bad, in [−1, 1]",
    source="DiffShortcut App. A.2 (after MetaCloak)", direction="down", implementation=_CLIP,
)
METRICS.register(
    "q", target=f"{_M}.clip_quality:QualityQ", params="audit.parts:NoParams",
    description="DiffShortcut's Q: mean of LIQE re-normalised to [−1, 1] and CLIP-IQAC (LIQE unavailable here)",
    source="DiffShortcut §5, App. A.2",
    direction="down", implementation="LIQE: none (pyiqa not a dependency) + CLIP-IQAC with " + _CLIP,
)
_INCEPTION = "piq InceptionV3 pool3, TF-FID weights pt_inception-2015-12-05 (downloaded)"
METRICS.register(
    "fid", target=f"{_M}.distribution:FrechetInceptionDistance", params="audit.parts:NoParams",
    description="FID of the generations against the clean subject images (one value per set)",
    source="PID App. A.2; PhotoGuard Table 6 (Heusel et al. 2017)",
    direction="up", implementation=_INCEPTION + "; exact Fréchet distance",
)
METRICS.register(
    "prd_precision", target=f"{_M}.distribution:PRDPrecision", params="audit.parts:NoParams",
    description="PRD precision F_1/8 of the generations against the clean subject images (one value per set)",
    source="PhotoGuard Table 6 PR (Sajjadi et al. NeurIPS 2018)",
    direction="down", implementation=_INCEPTION + "; PRD on scipy k-means",
)
METRICS.register(
    "prd_recall", target=f"{_M}.distribution:PRDRecall", params="audit.parts:NoParams",
    description="PRD recall F_8 of the generations against the clean subject images (one value per set)",
    source="PhotoGuard Table 6 PR (Sajjadi et al. NeurIPS 2018)",
    direction="down", implementation=_INCEPTION + "; PRD on scipy k-means",
)
METRICS.register(
    "lpips", target=f"{_M}.imperceptibility:ProtectionLpips", params="audit.parts:NoParams",
    description="imperceptibility: LPIPS between each protected image and its clean original (↑ = more visible)",
    source="PID Table 14; IMPRESS §3",
    direction="up", implementation="lpips 0.1.4 v0.1 VGG heads (bundled), torchvision VGG16 backbone (downloaded)",
)
for _name, _what in (("ssim", "SSIM"), ("psnr", "PSNR (dB)"), ("vifp", "VIFp"), ("fsim", "FSIM")):
    METRICS.register(
        f"edit_{_name}", target=f"{_M}.edits:Edit{_name.upper() if _name != 'vifp' else 'VIFp'}", params="audit.parts:NoParams",
        description=f"{_what} between the edit of a protected image and the edit of the clean one (editing exploits)",
        source="PhotoGuard §5 Table 6", direction="down", implementation=f"piq {_name if _name != 'vifp' else 'vif_p'} (weight-free)",
    )

# Metrics that need a detectable face (a tier may decide on another metric where faces are too small).
FACE_METRICS = frozenset({"fds", "ism", "fdfr", "ims", "dlib_identity_similarity", "mtcnn_detection_failure_rate"})
# The metrics computed on every exploit's generations (a weight-needing metric whose weights
# are absent answers 'unavailable' at once).
# PID's FID and IQS and DiffShortcut's Q and CLIP-IQAC are here too; PRD precision/recall
# (PhotoGuard's, on edits) and the edit similarities are for the editing exploits, by name.
EXPLOIT_METRICS = ("subject_similarity", "fds", "ism", "fdfr", "ims", "dlib_identity_similarity",
                   "mtcnn_detection_failure_rate", "brisque", "iqs", "fid", "clip_iqac", "q")
# Metric names of earlier versions: refused with the migration, never silently mapped (the
# old identity metric was not the papers' FDS or ISM that its name suggested).
RENAMED_METRICS = {
    "identity_similarity": "it is dlib's identity similarity, now 'dlib_identity_similarity'; PID's FDS is 'fds', "
                           "Anti-DreamBooth's ISM 'ism'",
    "face_detection_failure_rate": "it is MTCNN's detection failure rate, now 'mtcnn_detection_failure_rate'; "
                                   "Anti-DreamBooth's FDFR is 'fdfr'",
}


def renamed_metric(name: object) -> str | None:
    """The migration message for a metric name of an earlier version, or None."""
    why = RENAMED_METRICS.get(str(name))
    return f"metric '{name}' was renamed: {why}" if why else None
