"""PSNR of two images: what evaluation reports and what the OpenVINO backend's accuracy probe checks."""

from __future__ import annotations

import numpy as np


def shave_border(img: np.ndarray, shave: int) -> np.ndarray:
    """``img`` without ``shave`` pixels at every border (the super-resolution protocols' crop)."""
    return img[shave:-shave, shave:-shave] if shave else img


def psnr(a: np.ndarray, b: np.ndarray, shave: int = 0, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images), in float64."""
    a, b = shave_border(a, shave).astype(np.float64), shave_border(b, shave).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(max_val**2 / mse))
