"""Overlap-tile prediction with smooth blending, streamed in horizontal bands.

The image is mirror-padded at its true borders only; equal tiles on a regular grid (positions that
are multiples of the model's size multiple, so pooling sees the same pixel phases as on the whole
image) are run in batches; their logits are blended with a raised-cosine window whose ramps over the
overlap sum to one, so no seam is measurable. Rows are emitted as soon as no later tile touches them:
memory is bounded by one band of tiles, whatever the image height.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from pixbatch.runtime.prepare import NON_FINITE, ModelFailedError, Runner


@dataclass(frozen=True)
class Axis:
    length: int  # real pixels
    tile: int  # window length (padded coordinates)
    overlap: int
    pad: int  # mirrored pixels before the first real one
    starts: tuple[int, ...]  # window starts, padded coordinates
    extent: int  # padded length covered by the windows

    @property
    def stride(self) -> int:
        return self.tile - self.overlap


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def plan_axis(length: int, tile: int, overlap: int, multiple: int = 1) -> Axis:
    """Windows along one axis. ``tile`` and ``overlap`` are rounded to ``multiple``; an axis that fits
    in one tile (with its mirrored margins) gets a single window of just the size it needs."""
    overlap = _round_up(overlap, multiple)
    tile = max(_round_up(tile, multiple), 2 * overlap + multiple)
    pad = _round_up(math.ceil(overlap / 2), multiple) if overlap else 0
    need = length + 2 * pad
    if need <= tile:
        t = _round_up(need, multiple)
        return Axis(length, t, 0, pad, (0,), t)
    stride = tile - overlap
    n = math.ceil((need - overlap) / stride)
    return Axis(length, tile, overlap, pad, tuple(k * stride for k in range(n)), n * stride + overlap)


def window_1d(axis: Axis) -> np.ndarray:
    """Raised-cosine ramps over the overlap at both ends, flat in between (ones for a single window).
    Ramps of neighbouring windows are sin^2 and cos^2 of the same angle: they sum to exactly 1."""
    w = np.ones(axis.tile, np.float64)
    if len(axis.starts) > 1 and axis.overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(axis.overlap) + 0.5) / axis.overlap) ** 2
        w[: axis.overlap] = ramp
        w[-axis.overlap:] = ramp[::-1]
    return w


def weight_sum(axis: Axis, w: np.ndarray) -> np.ndarray:
    total = np.zeros(axis.extent, np.float64)
    for s in axis.starts:
        total[s:s + axis.tile] += w
    return total


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into [0, n) without repeating the edge pixel (numpy's 'reflect'), any distance."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


class RowSource(Protocol):
    """What the predictor reads from: an in-memory image or a region reader of a huge TIFF."""

    height: int
    width: int
    channels: int

    def read_rows(self, y0: int, y1: int) -> np.ndarray: ...


def _to_planes(pixels: np.ndarray, device: torch.device, in_channels: int) -> torch.Tensor:
    """(h, w, C) uint8/uint16 -> (in_channels, h, w) float in [0, 1]: gray repeated, alpha dropped."""
    maxv = 255.0 if pixels.dtype == np.uint8 else 65535.0
    c = pixels.shape[2]
    color = pixels[:, :, : c - 1] if c in (2, 4) else pixels
    t = torch.from_numpy(np.ascontiguousarray(color)).to(device)
    x = t.permute(2, 0, 1).to(torch.float32).div_(maxv)
    if x.shape[0] == 1 and in_channels == 3:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 3 and in_channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(3, 1, 1)).sum(0, keepdim=True)
    return x


def predict_bands(runner: Runner, source: RowSource, tile: int, overlap: int, batch: int = 1,
                  on_rerun: Callable[[int], None] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended logits of the whole image as (first real row, (C, rows, width) float32 on the device)
    bands, top to bottom. ``source`` has height/width/channels and read_rows(y0, y1). Windows whose
    reduced-precision output is not finite run again in fp32 (``on_rerun`` counts them); still not
    finite, the image fails with ModelFailedError."""
    m = runner.info.size_multiple
    ay = plan_axis(source.height, tile, overlap, m)
    ax = plan_axis(source.width, tile, overlap, m)
    dev = runner.device
    wy, wx = window_1d(ay), window_1d(ax)
    w2d = torch.from_numpy(np.outer(wy, wx).astype(np.float32)).to(dev)
    norm_y = weight_sum(ay, wy)
    inv_x = torch.from_numpy((1.0 / weight_sum(ax, wx)).astype(np.float32)).to(dev)
    cols = reflect_index(np.arange(ax.extent) - ax.pad, source.width)
    c_out = runner.info.out_channels
    acc = torch.zeros(c_out, ay.tile, ax.extent, device=dev)

    for k, ys in enumerate(ay.starts):
        # Read the real rows this band of windows needs, mirror them into the padded frame.
        rows = reflect_index(np.arange(ys, ys + ay.tile) - ay.pad, source.height)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        band = source.read_rows(lo, hi)[rows - lo][:, cols]
        windows = []
        for xs in ax.starts:
            windows.append((xs, _to_planes(band[:, xs:xs + ax.tile], dev, runner.info.in_channels)))
            if len(windows) == batch or xs == ax.starts[-1]:
                batch_in = torch.stack([p for _, p in windows])
                logits = runner(batch_in)
                if not bool(torch.isfinite(logits).all()):
                    if runner.dtype != torch.float32:  # the precision guard
                        logits = runner.run_fp32(batch_in)
                        if on_rerun is not None:
                            on_rerun(len(windows))
                    if not bool(torch.isfinite(logits).all()):
                        raise ModelFailedError(NON_FINITE)
                for (x0, _), y in zip(windows, logits):
                    acc[:, :, x0:x0 + ax.tile] += y * w2d
                windows = []
        del band
        # Rows no later window touches are final: normalise, crop to the real image, emit.
        last = k == len(ay.starts) - 1
        done = ay.tile if last else ay.stride
        y_first, y_end = max(ys, ay.pad), min(ys + done, ay.pad + source.height)
        if y_end > y_first:
            inv_y = torch.from_numpy((1.0 / norm_y[y_first:y_end]).astype(np.float32)).to(dev)
            out = acc[:, y_first - ys:y_end - ys] * inv_y.view(1, -1, 1) * inv_x.view(1, 1, -1)
            yield y_first - ay.pad, out[:, :, ax.pad:ax.pad + source.width]
        if not last:
            acc[:, : ay.overlap] = acc[:, ay.stride:].clone()
            acc[:, ay.overlap:] = 0
