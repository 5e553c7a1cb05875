"""The one window plan every task uses: cores that partition the image, equal windows around them.

Along each axis the image lives in a *frame*: ``border`` mirrored pixels before the first real one,
the real pixels, and mirrored pixels after them up to a multiple of the model's size multiple (the
same bottom/right padding a whole-image run gets). Windows are equal, start on multiples of the size
multiple (pooling sees the pixel phases it sees on the whole image) and give each core at least
``context`` pixels on every side, or reach the frame's edge (a true image border).

Two weightings of the same plan turn window outputs into the image's output:
- *crop*: each window's core is kept as is; with ``context`` at least the receptive field, the
  stitched result equals the whole-image output.
- *blend*: around every inner core boundary, the two neighbouring windows are weighted by
  sin^2 / cos^2 ramps of the same angle over +-``context``/2 pixels, which sum to exactly one: no step
  at the boundary, and every prediction that counts still has at least half the context. Measured with
  the shipped U-Net on a 600 px photo (max error vs the whole image): 64 px of context, crop 1e-4 and
  blend 3e-3; 32 px, crop 0.29 and blend 0.16. Crop is exact when the context covers the model's
  reach; blending softens the seams when it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class Axis:
    size: int  # real pixels
    border: int  # mirrored pixels before the first real one (frame coordinate of real pixel 0)
    frame: int  # frame length: border + size + mirrored tail, a multiple of the size multiple
    window: int  # window length (every window), a multiple of the size multiple
    starts: tuple[int, ...]  # window starts in frame coordinates
    cuts: tuple[int, ...]  # core boundaries in frame coordinates: cuts[0] = border, cuts[-1] = border + size
    ramp: int  # blend half-width around each inner cut; 0 = crop

    def __len__(self) -> int:
        return len(self.starts)

    def _ramp_at(self, cut: int) -> int:
        return 0 if cut in (0, len(self.cuts) - 1) else self.ramp

    def support(self, i: int) -> tuple[int, int]:
        """Frame coordinates [lo, hi) where window i's weight is not zero (real pixels only)."""
        return self.cuts[i] - self._ramp_at(i), self.cuts[i + 1] + self._ramp_at(i + 1)

    def final(self, i: int) -> int:
        """Frame coordinate below which the output is final once windows 0..i are in."""
        return self.cuts[i + 1] - self._ramp_at(i + 1)

    def weights(self, i: int, scale: int = 1) -> np.ndarray:
        """Window i's weights over its support, in output pixels (``scale`` per input pixel)."""
        lo, hi = self.support(i)
        c = (np.arange(lo * scale, hi * scale) + 0.5) / scale  # output pixel centres, input coordinates
        return (_rise(c - self.cuts[i], self._ramp_at(i))
                * (1.0 - _rise(c - self.cuts[i + 1], self._ramp_at(i + 1)))).astype(np.float32)


def _rise(d: np.ndarray, r: int) -> np.ndarray:
    """0 before the cut, 1 after it; with r > 0 a sin^2 ramp over [-r, r]: rise(d) + rise(-d) = 1."""
    if r == 0:
        return (d >= 0).astype(np.float64)
    t = np.clip((d / r + 1.0) * 0.25 * np.pi, 0.0, 0.5 * np.pi)
    return np.sin(t) ** 2


def plan_axis(size: int, tile: int, context: int, *, multiple: int = 1, border: int = 0,
              blend: bool = False, fit: int = 0) -> Axis:
    """Windows along one axis of ``size`` real pixels: cores of at most about ``tile`` pixels (<= 0:
    one core), each inside a window with ``context`` more pixels on both sides; ``fit``: windows are
    this many pixels where the frame has them (a model of one input size; ``tile`` leaves room)."""
    m = max(1, multiple)
    border = round_up(border, m)
    frame = round_up(size + 2 * border, m)
    n = math.ceil(size / tile) if tile > 0 else 1
    cuts = [border + round(i * size / n) for i in range(n + 1)]
    cores = [b - a for a, b in zip(cuts, cuts[1:])]
    window = round_up(max(cores) + 2 * context + (m - 1), m)
    if fit:
        window = max(window, min(fit, frame))
    if n == 1 or window >= frame:
        return Axis(size, border, frame, frame, (0,), (border, border + size), 0)
    starts = tuple(min(max((c - context) // m * m, 0), frame - window) for c in cuts[:-1])
    ramp = min(context // 2, min(cores) // 2) if blend else 0  # every blended prediction keeps >= context/2
    return Axis(size, border, frame, window, starts, tuple(cuts), ramp)


@dataclass(frozen=True)
class WindowPlan:
    """Rows of windows (bands) over an image: window (i, j) starts at (ys.starts[i], xs.starts[j])."""

    ys: Axis
    xs: Axis

    @property
    def shape(self) -> tuple[int, int]:
        return self.ys.window, self.xs.window

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)


def plan_windows(height: int, width: int, tile: int, context: int, *, multiple: int = 1, border: int = 0,
                 blend: bool = False, fit: int = 0) -> WindowPlan:
    return WindowPlan(plan_axis(height, tile, context, multiple=multiple, border=border, blend=blend, fit=fit),
                      plan_axis(width, tile, context, multiple=multiple, border=border, blend=blend, fit=fit))


def extra_pixels(plan: WindowPlan) -> float:
    """Computed input pixels beyond the image's own, as a fraction (0.25 = 25 % extra)."""
    return len(plan) * plan.ys.window * plan.xs.window / (plan.ys.size * plan.xs.size) - 1


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into [0, n) without repeating the edge pixel (numpy's 'reflect'), any distance."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


@dataclass
class Windowing:
    """How images are cut into windows: ``--tile`` and ``--overlap`` mean the same in every command."""

    tile: int = 0  # core edge in input px (windows add ``overlap`` on each side); 0 = from the memory budget
    overlap: int | None = None  # context px on each side of a window's core; None = the receptive field
    blend: bool = False  # blend neighbouring windows with cosine ramps (else keep each core as is)
    mirror_borders: bool = False  # mirror ``overlap`` px beyond the true borders (overlap-tile strategy)
    batch_size: int = 0  # model inputs per batch; 0 = from the memory budget
    whole_pixels: int = 0  # on the CPU, images up to this many px run whole when tile = 0 (0 = the budget)
