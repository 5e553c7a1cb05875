"""Cut an image into equal, overlapping windows in input space, each owning a disjoint core.

Every core gets at least ``overlap`` pixels of real context on each side, or reaches the true
image border, where the model sees exactly what it sees on the whole image. With ``overlap`` at
least the receptive field, stitching the cores reproduces whole-image output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    y0: int  # window (model input) in input pixels
    x0: int
    h: int
    w: int
    cy0: int  # core: the region of the input whose output this window owns
    cx0: int
    ch: int
    cw: int


def _axis(start: int, length: int, size: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int, int, int]]:
    """(window start, window length, core start, core length) along one axis of ``size`` pixels,
    for cores tiling [start, start + length)."""
    n = max(1, math.ceil(length / tile))
    edges = [start + round(i * length / n) for i in range(n + 1)]  # balanced cores, none tiny
    core_max = max(b - a for a, b in zip(edges, edges[1:]))
    win = core_max + 2 * overlap
    win = -(-win // multiple) * multiple
    if win >= size:
        return [(0, size, a, b - a) for a, b in zip(edges, edges[1:])]
    return [(min(max(a - overlap, 0), size - win), win, a, b - a) for a, b in zip(edges, edges[1:])]


def plan_windows(height: int, width: int, tile: int, overlap: int, *, multiple: int = 1,
                 region: tuple[int, int, int, int] | None = None) -> list[Window]:
    """Windows whose cores tile ``region`` (y, x, h, w; default the whole image). ``tile`` <= 0 or
    a region no larger than one tile gives one window over the whole region plus its context."""
    ry, rx, rh, rw = region or (0, 0, height, width)
    if tile <= 0:
        tile = max(rh, rw)
    ys = _axis(ry, rh, height, tile, overlap, multiple)
    xs = _axis(rx, rw, width, tile, overlap, multiple)
    return [Window(y0, x0, h, w, cy, cx, ch, cw) for (y0, h, cy, ch) in ys for (x0, w, cx, cw) in xs]


def extra_pixels(windows: list[Window]) -> float:
    """Computed input pixels beyond the image's own, as a fraction (0.25 = 25 % extra)."""
    core = sum(w.ch * w.cw for w in windows)
    return sum(w.h * w.w for w in windows) / core - 1 if core else 0.0
