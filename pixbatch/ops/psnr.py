"""PSNR of two images (and the Y channel it is measured on): what evaluation reports, what the OpenVINO
backend's accuracy probe checks and what decides whether an int8 model is kept."""

from __future__ import annotations

import numpy as np


def shave_border(img: np.ndarray, shave: int) -> np.ndarray:
    """``img`` without ``shave`` pixels at every border (the super-resolution protocols' crop)."""
    return img[shave:-shave, shave:-shave] if shave else img


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of BT.601 YCbCr in [16, 235] from RGB in [0, 255] (HWC), float64 (MATLAB's ``rgb2ycbcr``)."""
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def psnr(a: np.ndarray, b: np.ndarray, shave: int = 0, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images), in float64."""
    a, b = shave_border(a, shave).astype(np.float64), shave_border(b, shave).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(max_val**2 / mse))
