"""Image transforms an exploiter applies before exploiting (corruptions, denoisers, TVM),
registered here beside their code: ``name``, parameters, source, and whether each is random,
uses the model or has a differentiable form."""

from __future__ import annotations

from audit.parts.registry import Registry

TRANSFORMS = Registry("transform")

_C = "audit.parts.transforms.corruptions"
TRANSFORMS.register(
    "jpeg", target=f"{_C}:jpeg", params=f"{_C}:JpegParams", version=2, differentiable=True,
    description="re-encode as baseline JPEG (Pillow/libjpeg) at a quality 1-100 (differentiable "
                "form: kornia)",
    source="DiffShortcut App. C.1 (q 75); PID §6.5 Table 7; IMPRESS §5.1 (q 15)",
)
TRANSFORMS.register(
    "gaussian_blur", target=f"{_C}:gaussian_blur", params=f"{_C}:GaussianBlurParams", version=2,
    differentiable=True,
    description="Gaussian smoothing (kornia), σ in pixels at the audited resolution",
    source="PID §6.5; DiffShortcut App. C.1 (PIL radius 5 = σ 5 px)",
)
TRANSFORMS.register(
    "random_gaussian_blur", target=f"{_C}:random_gaussian_blur",
    params=f"{_C}:RandomGaussianBlurParams",
    description="Gaussian blur (kornia), fixed kernel, σ ~ U[min, max] px per image",
    differentiable=True,
    source="MetaCloak's transformation set (kernel 7, σ ∈ [0.1, 2])", random=True,
)
TRANSFORMS.register(
    "gaussian_noise", target=f"{_C}:gaussian_noise", params=f"{_C}:GaussianNoiseParams", version=2,
    description="additive Gaussian noise, std or variance in [0,1] units, clamped",
    source="IMPRESS §5.1 baseline",
    random=True, differentiable=True,
)
TRANSFORMS.register(
    "uniform_noise", target=f"{_C}:uniform_noise", params=f"{_C}:UniformNoiseParams",
    description="additive uniform noise in [−amplitude, amplitude], clamped",
    source="PID §6.5 smoothing",
    random=True, differentiable=True,
)
TRANSFORMS.register(
    "resize", target=f"{_C}:resize_down_up", params=f"{_C}:ResizeParams", differentiable=True,
    description="bicubic downscale by a factor, then back up", source="IMPRESS §5.1 (512 → 256 → "
            "512)",
)
TRANSFORMS.register(
    "random_resized_crop", target=f"{_C}:random_resized_crop",
    params=f"{_C}:RandomResizedCropParams", version=2,
    description="torchvision RandomResizedCrop: area fraction in scale, aspect in ratio, resized "
                "back",
    source="PID §6.5 Table 7 cropping (no range stated); torchvision defaults", random=True,
    differentiable=True,
)
TRANSFORMS.register(
    "denoise_gaussian", target="audit.parts.transforms.denoise:denoise_gaussian",
    params="audit.parts.transforms.denoise:GaussianDenoiseParams",
    description="Gaussian filter with σ calibrated per image by J-invariance (scikit-image), as "
                "Aydin's",
    source="PID §6.5 Table 7 denoising, footnote 5 (Aydin's Gaussian denoiser)",
)
TRANSFORMS.register(
    "denoise_wavelet", target="audit.parts.transforms.denoise:denoise_wavelet",
    params="audit.parts.transforms.denoise:WaveletDenoiseParams",
    description="BayesShrink wavelet denoising, noise σ estimated (scikit-image + PyWavelets)",
    source="Chang et al. IEEE TIP 2000; PID §6.5 denoising (another denoiser)",
)
TRANSFORMS.register(
    "denoise_nl_means", target="audit.parts.transforms.denoise:denoise_nl_means",
    params="audit.parts.transforms.denoise:NlMeansParams",
    description="non-local means, h = 0.8 × estimated noise σ (scikit-image)",
    source="Buades et al. CVPR 2005; PID §6.5 denoising (another denoiser)",
)
TRANSFORMS.register(
    "tvm", target="audit.parts.transforms.tvm:tvm", params="audit.parts.transforms.tvm:TvmParams",
    random=True,
    description="downsize, drop 2 % of values, TV-regularised reconstruction (Chambolle-Pock), "
                "upsample",
    source="DiffShortcut App. C.1 (TVM; open solver instead of MOSEK)",
)
TRANSFORMS.register(
    "level_jitter", target=f"{_C}:level_jitter", params=f"{_C}:LevelJitterParams",
    description="each pixel ± up to k 8-bit levels: no protective intent (the exploit's noise "
                "floor)",
    source="protection-audit control (model card: noise floor)", random=True,
)
_I = "audit.parts.transforms.impress"
TRANSFORMS.register(
    "impress", target=f"{_I}:impress", params=f"{_I}:ImpressParams",
    description="IMPRESS: Adam on x until D(E(x)) = x, within an LPIPS budget of the input "
                "([0,1] units, fp32, batched)",
    source="Cao et al. NeurIPS 2023 §4.2 eq. 4.3, Alg. 1; the authors' impress.py (Adam, cosine)",
    random=True, uses_model=True, differentiable=True,
)
_R = "audit.parts.transforms.restoration"
TRANSFORMS.register(
    "noisy_upscale", target=f"{_R}:noisy_upscale", params=f"{_R}:NoisyUpscaleParams",
    description="Gaussian noise (std, [0,1], seeded, 8-bit), ×4 upscaler (Real-ESRGAN x4plus "
                "offline), back to size",
    source="Hönig et al. ICLR 2025 (robust-style-mimicry) noisy upscaling; σ 0.05 / 0.1",
    random=True,
)
TRANSFORMS.register(
    "restoration", target=f"{_R}:restoration", params=f"{_R}:RestorationParams", random=True,
    description="[noise] → [face restorer] → ¼ size → ×4 super-resolution (restorers by name; "
                "missing: unavailable)",
    source="DiffShortcut §4.2 and Alg. 1 lines 2-3 (CodeFormer w 0.5, then ×4 SR); 'gau-sr'",
)
_D = "audit.parts.transforms.diffpure"
TRANSFORMS.register(
    "latent_diffpure", target=f"{_D}:latent_diffpure", params=f"{_D}:LatentDiffPureParams",
    description="SDEdit with the purifier's latent model: noise to t, t DDPM steps back, "
                "quality or empty prompt",
    source="DiffShortcut App. C.1 item 5 (LatentDiffPure, t 300, CFG 7.5); Meng et al. ICLR "
           "2022 (SDEdit)",
    random=True, uses_model=True,
)
TRANSFORMS.register(
    "ddspure", target=f"{_D}:ddspure", params=f"{_D}:DdsPureParams", random=True, uses_model=True,
    description="SDEdit from the t with (1 − ᾱ_t)/ᾱ_t = σ² (σ in the model's diffusion units)",
    source="Carlini et al. ICLR 2023 (DDS); DiffShortcut App. C.1 item 5 (DDSPure)",
)
TRANSFORMS.register(
    "gridpure", target=f"{_D}:gridpure", params=f"{_D}:GridPureParams", random=True,
    uses_model=True,
    description="half-side windows + corner window purified (SDEdit t 10), overlap-averaged, "
                "γ-blended, iterated",
    source="Zhao et al. 2024 (GrIDPure), its authors' gridpure.py; DiffShortcut App. C.1 (7)",
)
