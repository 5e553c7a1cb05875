"""MATLAB-compatible bicubic ``imresize`` (the standard super-resolution degradation).

MATLAB's ``imresize(img, scale, 'bicubic')``: the cubic convolution kernel with a = -0.5, widened by
1/scale when shrinking (antialiasing), weights normalised per output pixel, symmetric (mirror)
padding at the borders, the first dimension resized before the second, each pass in double precision.
For a uint8 image each pass returns uint8, rounded half away from zero and saturated: with that,
``imresize_uint8`` reproduces the standard Set5 LR images bit for bit. Each 1-D pass is a dense
(out x in) matrix, so a batch is resized by two matrix products.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The (out_len x in_len) float64 matrix of one MATLAB bicubic resize pass."""
    width = 4.0 / scale if (scale < 1 and antialias) else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centres in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if (scale < 1 and antialias) else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric padding
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), taps), idx.ravel()), w.ravel())
    return m


def imresize(x: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """Resize the last two dims of a float tensor by ``scale`` (output size ceil(size * scale)),
    without rounding. Computes in x's dtype (use float64 to match MATLAB to the last bit)."""
    h, w = x.shape[-2:]
    oh, ow = math.ceil(h * scale), math.ceil(w * scale)
    mh = torch.from_numpy(resize_matrix(h, oh, scale, antialias)).to(x.device, x.dtype)
    mw = torch.from_numpy(resize_matrix(w, ow, scale, antialias)).to(x.device, x.dtype)
    return mh @ x @ mw.T  # height first, then width, as MATLAB orders equal scales


def imresize_uint8(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of an HWC (or HW) uint8 image, bit for bit."""
    t = torch.from_numpy(np.array(img, dtype=np.float64))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t
    h, w = t.shape[-2:]
    mh = torch.from_numpy(resize_matrix(h, math.ceil(h * scale), scale))
    mw = torch.from_numpy(resize_matrix(w, math.ceil(w * scale), scale))
    t = _round_uint8(mh @ t)  # MATLAB keeps the class between passes
    t = _round_uint8(t @ mw.T).to(torch.uint8)
    return (t.permute(1, 2, 0) if t.ndim == 3 else t).numpy()


def _round_uint8(t: torch.Tensor) -> torch.Tensor:
    return torch.floor(t + 0.5).clamp_(0, 255)  # half away from zero (values are >= 0 here)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (bottom/right), as the SR protocol does."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]
