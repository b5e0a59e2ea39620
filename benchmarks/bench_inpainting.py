"""Benchmark: does the built-in inpainting UNet (``tiny-inpainting``) inpaint?

    ./dev python benchmarks/bench_inpainting.py [--steps 20] [--out FILE]

The ``inpainting`` exploit (PhotoGuard §5) keeps the face — a centred ellipse — and regenerates
the rest under a prompt. An inpainting UNet does that by reading the mask and the masked
image's latent from its five extra input channels; diffusers' pipeline does not paste the kept
region back for a 9-channel UNet, so whatever of the face survives, the UNet put there. This
script measures it on the bundled subject's four views (never seen in training), PhotoGuard's
three prompts, the smoke tier's 20 DDIM steps, guidance 7.5, the same seeds for every UNet:

- ``tiny-inpainting`` as shipped;
- the same UNet before training: tiny's UNet with the five new channels at zero, which ignores
  the condition (the control: what a UNet that does not inpaint keeps of the face by chance);

and reports, per UNet, PSNR and SSIM (piq) between the edit and its input inside the kept
ellipse (↑: the face kept) and outside it (the regenerated part), and the kept region's PSNR
to *another* view's face (the kept face is the input's own, not an average face). Raw numbers
go to ``benchmarks/results/inpainting-unet.json``, the edits to ``inpainting-unet.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "inpainting-unet.json"


def region_scores(edits: torch.Tensor, inputs: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) over the region ``keep`` (1 = in the region), and SSIM of the region pasted onto
    gray in both images."""
    import piq

    keep = keep.expand_as(edits)
    mse = ((edits - inputs) ** 2 * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)
    psnr = float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())
    gray = torch.full_like(edits, 0.5)
    ssim = float(piq.ssim(torch.where(keep > 0, edits, gray), torch.where(keep > 0, inputs, gray),
                          data_range=1.0))
    return {"psnr_db": round(psnr, 2), "ssim": round(ssim, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from audit.data.subjects import load_subject
    from audit.diffusion import load_model
    from audit.diffusion.editing import EditConfig, edit, face_mask, load_inpainting_unet
    from audit.diffusion.tiny import inpainting_extension
    from audit.parts.exploits.editing import EDIT_PROMPTS
    from audit.run.progress import Progress

    torch.set_num_threads(1)
    model = load_model("tiny", "cpu")
    images = load_subject("astronaut", None, 64).images
    editor = load_inpainting_unet(model, None, allow_download=False)
    config = EditConfig(EDIT_PROMPTS, 1.0, args.steps, 7.5, "", 1.0, seed=args.seed,
                        mode="inpainting")
    inputs = images.repeat(len(EDIT_PROMPTS), 1, 1, 1)  # prompt-major, as the edits
    others = images.roll(1, 0).repeat(len(EDIT_PROMPTS), 1, 1, 1)  # another view, same slot
    keep = 1 - face_mask(len(inputs), 64)
    rows = {}
    for name, unet in (("tiny-inpainting", editor.unet),
                       ("untrained extension (new channels zero)",
                        inpainting_extension(model.unet))):
        start = time.time()
        edits = edit(model, images, config, 64, Progress(), unet)
        rows[name] = {"kept_face": region_scores(edits, inputs, keep),
                      "kept_face_vs_another_view": region_scores(edits, others, keep),
                      "regenerated": region_scores(edits, inputs, 1 - keep),
                      "seconds": round(time.time() - start, 1)}
        print(name, json.dumps(rows[name]), flush=True)
        if name == "tiny-inpainting":
            shown = edits
    _figure(images, keep[: len(images)], shown, args.out.with_suffix(".png"))
    result = {"what": __doc__.split("\n\n")[1], "model": model.fingerprint,
              "inpainting_unet": editor.fingerprint, "steps": args.steps, "seed": args.seed,
              "prompts": list(EDIT_PROMPTS), "images": len(images),
              "machine": {"cpu": _cpu(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": 1},
              "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def _figure(images: torch.Tensor, keep: torch.Tensor, edits: torch.Tensor, path: Path) -> None:
    """Rows: the views, what the UNet is given (the kept face on gray), one row of edits per
    prompt; 3× nearest upscaling."""
    import torchvision

    given = images * keep + 0.5 * (1 - keep)
    grid = torchvision.utils.make_grid(torch.cat([images, given, edits]), nrow=len(images))
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=3)[0]
    torchvision.utils.save_image(grid, path)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
