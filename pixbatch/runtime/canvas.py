"""One image in flight through the windows: where its rows come from (a RowSource), its window plan, and where
its finished rows go; the reason a user reads when the model could not produce them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from pixbatch.io.decode import DecodeError
from pixbatch.runtime.prepare import ModelFailedError
from pixbatch.runtime.sources import RowSource
from pixbatch.runtime.windows import WindowPlan, reflect_index


def failure_reason(exc: BaseException) -> str:
    """What a user reads when the model could not produce an image's output."""
    return str(exc) if isinstance(exc, ModelFailedError) else f"model failed ({type(exc).__name__}: {exc})"


class BandReadError(Exception):
    """A band of an image could not be read or converted; the message is the reason shown."""


class Canvas:
    """One image in flight: where its rows come from, its window plan, and where finished rows go.

    ``to_planes`` turns rows read from ``source`` into (K, C, h, w) float32 model planes on the device
    (K = 2 for colour and alpha); ``on_rows(y0, out)`` receives finished output rows (K, C', n, W')
    top to bottom, each exactly once; then ``on_done()``, or ``on_failed(reason)`` once.

    ``prepare(canvas, engine)``, when given, is called once the image is known to need several
    windows and before any of them runs; it may measure whole-image state (e.g. the statistics of
    instance-norm layers) and return the context in which every batch of this image's windows runs
    (those windows are then batched only with each other)."""

    def __init__(self, source: RowSource, to_planes: Callable[[Any], torch.Tensor],
                 on_rows: Callable[[int, torch.Tensor], None], on_done: Callable[[], None],
                 on_failed: Callable[[str], None], *, fp32: bool = False,
                 prepare: Callable[..., Callable[[], AbstractContextManager] | None] | None = None,
                 ) -> None:
        self.source, self.to_planes = source, to_planes
        self.on_rows, self.on_done, self.on_failed = on_rows, on_done, on_failed
        self.fp32 = fp32
        self.prepare = prepare
        self.scope: Callable[[], AbstractContextManager] | None = None
        self.plan: WindowPlan | None = None
        self.band = 0
        self.left = 0  # windows of the current band not yet delivered
        self.planes: torch.Tensor | None = None  # the current band's input rows, frame columns
        self.acc: torch.Tensor | None = None  # the current band's weighted output rows
        self.carry: torch.Tensor | None = None  # rows the next band adds to (blending)
        self.closed = False

    @property
    def key(self) -> tuple[int, int, bool, int]:
        return self.plan.ys.window, self.plan.xs.window, self.fp32, id(self) if self.scope is not None else 0


def read_band(canvas: Canvas, band: int) -> torch.Tensor:
    """Model planes of one band of a canvas's windows: its rows of the frame, mirrored beyond the
    image where the frame extends past it, all frame columns (K, C, window, frame width)."""
    ys, xs = canvas.plan.ys, canvas.plan.xs
    y0 = ys.starts[band]
    rows = reflect_index(np.arange(y0, y0 + ys.window) - ys.border, ys.size)
    cols = reflect_index(np.arange(xs.frame) - xs.border, xs.size)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    try:
        planes = canvas.to_planes(canvas.source.read_rows(lo, hi))
    except (DecodeError, ValueError, OSError) as exc:
        raise BandReadError(str(exc)) from None
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise BandReadError(f"not enough memory for a {xs.size}x{hi - lo} band ({type(exc).__name__})") from None
    except Exception as exc:  # a reader or conversion bug must not take the batch down
        raise BandReadError(f"cannot read rows {lo}-{hi} ({type(exc).__name__}: {exc})") from None
    dev = planes.device
    if not np.array_equal(rows, np.arange(lo, hi)):
        planes = planes.index_select(-2, torch.from_numpy(rows - lo).to(dev))
    if not np.array_equal(cols, np.arange(xs.size)):
        planes = planes.index_select(-1, torch.from_numpy(cols).to(dev))
    return planes
