"""Image-quality metrics as the super-resolution literature computes them (BasicSR conventions).

PSNR and SSIM on the Y channel of ITU-R BT.601 YCbCr (MATLAB ``rgb2ycbcr``), on images rounded to
8 bits, with ``shave`` pixels removed at every border; SSIM with an 11x11 Gaussian window (sigma 1.5)
over the valid region.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr in [16, 235] from RGB in [0, 255] (HWC), float64."""
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _shave(img: np.ndarray, shave: int) -> np.ndarray:
    return img[shave:-shave, shave:-shave] if shave else img


def psnr(a: np.ndarray, b: np.ndarray, shave: int = 0, max_val: float = 255.0) -> float:
    a, b = _shave(a, shave).astype(np.float64), _shave(b, shave).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(max_val**2 / mse))


@functools.cache
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    return torch.from_numpy(np.outer(g, g))[None, None]


def ssim(a: np.ndarray, b: np.ndarray, shave: int = 0, max_val: float = 255.0) -> float:
    """Mean SSIM of two single-channel images (Wang et al. 2004), valid-region filtering."""
    x = torch.from_numpy(_shave(a, shave).astype(np.float64))[None, None]
    y = torch.from_numpy(_shave(b, shave).astype(np.float64))[None, None]
    w = _gaussian_window()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def sr_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """Y-PSNR, Y-SSIM and RGB PSNR of an 8-bit RGB result, ``scale`` pixels shaved."""
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    return {"psnr_y": psnr(ys, yh, scale), "ssim_y": ssim(ys, yh, scale), "psnr_rgb": psnr(sr, hr, scale)}
