"""MATLAB-compatible bicubic ``imresize``: the standard super-resolution degradation, and the
resampling of ``pixbatch upscale --outscale`` (streamed, row by row, by ``RowResampler``).

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


@functools.lru_cache(maxsize=64)
def resize_taps(in_len: int, out_len: int, scale: float, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One MATLAB bicubic resize pass as taps: output pixel j is ``sum_t w[j, t] * x[idx[j, t]]``
    (``idx`` int64 and ``w`` float64, both (out_len, taps); mirror padding folded into ``idx``)."""
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
    return mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)], w


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The (out_len x in_len) float64 matrix of one MATLAB bicubic resize pass."""
    idx, w = resize_taps(in_len, out_len, scale, antialias)
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), idx.shape[1]), idx.ravel()), w.ravel())
    return m


class RowResampler:
    """Resizes rows (K, C, n, in_w) that arrive top to bottom to (out_h, out_w) with the same
    antialiased bicubic, width first: each output row goes out as soon as the input rows it needs
    are in, so a streamed image is resized with a few rows of memory."""

    def __init__(self, in_h: int, in_w: int, out_h: int, out_w: int) -> None:
        self.out_h = out_h
        self.y_idx, self.y_w = resize_taps(in_h, out_h, out_h / in_h)
        self.x_idx, self.x_w = resize_taps(in_w, out_w, out_w / in_w)
        self.needs = self.y_idx.max(axis=1) + 1  # input rows that must be in before output row j
        self.lowest = np.minimum.accumulate(self.y_idx.min(axis=1)[::-1])[::-1]  # first input row row j+ use
        self.buf: torch.Tensor | None = None  # width-resized input rows from ``buf_y0`` on
        self.buf_y0 = 0
        self.received = 0
        self.done = 0  # output rows emitted

    def push(self, rows: torch.Tensor) -> tuple[int, torch.Tensor]:
        """Add the next input rows; returns (first output row, the output rows now final)."""
        dev, dtype = rows.device, rows.dtype
        x_idx = torch.from_numpy(self.x_idx).to(dev)
        x_w = torch.from_numpy(self.x_w).to(dev, dtype)
        wide = sum(rows[..., x_idx[:, t]] * x_w[:, t] for t in range(x_idx.shape[1]))
        self.buf = wide if self.buf is None else torch.cat([self.buf, wide], dim=-2)
        self.received += rows.shape[-2]
        start, end = self.done, self.done
        while end < self.out_h and self.needs[end] <= self.received:
            end += 1
        if end == start:
            return start, wide[..., :0, :]
        y_idx = torch.from_numpy(self.y_idx[start:end] - self.buf_y0).to(dev)
        y_w = torch.from_numpy(self.y_w[start:end]).to(dev, dtype)
        out = sum(self.buf.index_select(-2, y_idx[:, t]) * y_w[:, t, None] for t in range(y_idx.shape[1]))
        self.done = end
        if end < self.out_h:  # drop the rows no later output row reads
            keep = int(self.lowest[end]) - self.buf_y0
            self.buf, self.buf_y0 = self.buf[..., keep:, :], self.buf_y0 + keep
        else:
            self.buf = None
        return start, out


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
