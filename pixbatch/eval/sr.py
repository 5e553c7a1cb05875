"""Super-resolution evaluation to the standard protocol.

For each HR image: modcrop to a multiple of the scale; LR = MATLAB-bicubic downscale (bit-exact with
the benchmark LR sets), or a given LR file; SR = the model's output rounded to 8 bits; Y-PSNR/SSIM and
RGB PSNR with ``scale`` pixels shaved. The bicubic baseline upsamples the same LR with MATLAB bicubic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixbatch.eval.metrics import sr_metrics
from pixbatch.io.decode import DecodeError, decode_rgb8
from pixbatch.io.discover import IMAGE_SUFFIXES
from pixbatch.ops.imresize import imresize_uint8
from pixbatch.runtime.prepare import ModelFailedError, Runner
from pixbatch.tasks.upscale import upscale_tensor

SSIM_WINDOW = 11  # the Gaussian window of SSIM (Wang et al.): images must be at least this large


@dataclass
class SrResult:
    name: str
    model: dict[str, float]
    bicubic: dict[str, float]


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (bottom/right), as the SR protocol does."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def find_lr(lr_dir: Path, stem: str, scale: int) -> Path:
    for name in (f"{stem}x{scale}", f"{stem}_x{scale}", stem):
        for suffix in (".png", ".bmp", ".jpg", ".tif"):
            if (lr_dir / f"{name}{suffix}").is_file():
                return lr_dir / f"{name}{suffix}"
    raise FileNotFoundError(f"no LR image for {stem} in {lr_dir} (looked for {stem}x{scale}.png and {stem}.png)")


def run_sr(runner: Runner, lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div_(255)
    y = upscale_tensor(runner, x)  # whole image unless it exceeds the memory budget
    return (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def evaluate_sr(runner: Runner, hr_dir: Path, lr_dir: Path | None = None,
                on_error: Callable[[Path, str], None] | None = None, only: list[str] | None = None) -> list[SrResult]:
    """Scores of every HR image (of those ``only`` names, when given: each must be there). With
    ``on_error``, an image that cannot be read or run is reported there (path, reason) and left out;
    without, its error is raised."""
    scale = runner.info.scale
    paths = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if only is not None:
        if missing := sorted(set(only) - {p.name for p in paths}):
            raise FileNotFoundError(f"--only names {len(missing)} image(s) not in {hr_dir}: {', '.join(missing[:5])}")
        paths = [p for p in paths if p.name in set(only)]
    if not paths:
        raise FileNotFoundError(f"no images in {hr_dir}")
    results = []
    for path in paths:
        try:
            hr = modcrop(decode_rgb8(path), scale)
            if min(hr.shape[:2]) - 2 * scale < SSIM_WINDOW:
                raise ValueError(f"{hr.shape[1]}x{hr.shape[0]} px is too small for the protocol (SSIM's "
                                 f"{SSIM_WINDOW} px window after {scale} px shaved off each border)")
            lr = decode_rgb8(find_lr(lr_dir, path.stem, scale)) if lr_dir else imresize_uint8(hr, 1 / scale)
            if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
                raise ValueError(f"LR {lr.shape[1]}x{lr.shape[0]} does not match HR {hr.shape[1]}x{hr.shape[0]} "
                                 f"/ {scale}")
            sr = run_sr(runner, lr)
        except (DecodeError, FileNotFoundError, ValueError, ModelFailedError) as exc:
            if on_error is None:
                raise
            on_error(path, str(exc))
            continue
        results.append(SrResult(path.stem, sr_metrics(sr, hr, scale), sr_metrics(imresize_uint8(lr, scale), hr, scale)))
    if not results:
        raise ValueError(f"none of the {len(paths)} images in {hr_dir} could be evaluated")
    return results


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
