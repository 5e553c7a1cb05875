"""The one job engine: discover -> decode -> plan -> run -> post -> write -> report, for every task.

A task (``pixbatch.tasks``) says how decoded pixels become model planes, how model output becomes
output pixels, and which files each job writes. Everything else lives here, once:

- decoding in DataLoader worker processes (a bad file is an error record, never an exception);
- the window plan of every image (``runtime.windows``), cropped or blended;
- ``WindowEngine``: windows of any number of images batched by shape, band by band, with the
  out-of-memory back-off (a batch halves; a single window is computed in smaller pieces and still
  delivered once) and the precision guard (samples that are not finite in reduced precision are
  recomputed in fp32; still not finite, the image fails, never a black output);
- outputs in memory (encoded by the writer pool) or, for tiled (Big)TIFF inputs, streamed into tiled
  BigTIFFs band by band, so memory is bounded by one band of windows whatever the image size;
- atomic commits (extras first, the main output last: its presence marks the job done), claims,
  error lines, the progress bar and the report (``runtime.jobs``).
"""

from __future__ import annotations

import gc
import math
import os
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pixbatch.io import claims
from pixbatch.io.atomic import OutputExistsError, check_tiff_complete, commit, temp_path
from pixbatch.io.decode import DEFAULT_MAX_PIXELS, MODES_BY_CHANNELS, DecodeError, ImageMeta, decode_image
from pixbatch.io.discover import Job, Plan
from pixbatch.io.encode import EncodeOptions
from pixbatch.io.regions import RegionSource, TiffRegionReader, TiledTiffWriter, is_tiled_tiff
from pixbatch.ops.imresize import RowResampler
from pixbatch.runtime.device import StartupError
from pixbatch.runtime.jobs import JobBook, Report, claim_output, one_line
from pixbatch.runtime.prepare import NON_FINITE, ModelFailedError, Runner
from pixbatch.runtime.windows import WindowPlan, plan_windows, reflect_index

MIN_TILE = 16
CPU_PIXEL_BUDGET = 512 * 512  # input pixels per window on the CPU: bounds RAM, costs no speed
CPU_BATCH_PIXELS = 256 * 256  # batching larger inputs is slower on the CPU (measured), tiny ones still batch
DEFAULT_CONTEXT = 32  # context px when the model's receptive field is unknown
STREAM_SUFFIXES = (".tif", ".tiff")


@dataclass
class Windowing:
    """How images are cut into windows: ``--tile`` and ``--overlap`` mean the same in every command."""

    tile: int = 0  # core edge in input px (windows add ``overlap`` on each side); 0 = from the memory budget
    overlap: int | None = None  # context px on each side of a window's core; None = the receptive field
    blend: bool = False  # blend neighbouring windows with cosine ramps (else keep each core as is)
    mirror_borders: bool = False  # mirror ``overlap`` px beyond the true borders (overlap-tile strategy)
    batch_size: int = 0  # model inputs per batch; 0 = from the memory budget
    whole_pixels: int = 0  # on the CPU, images up to this many px run whole when tile = 0 (0 = the budget)


@dataclass
class JobOptions:
    windowing: Windowing = field(default_factory=Windowing)
    workers: int | None = None  # decode processes; None = automatic
    writers: int | None = None  # encode threads; None = automatic
    max_pixels: int = DEFAULT_MAX_PIXELS
    encode: EncodeOptions = field(default_factory=EncodeOptions)


class RowSource(Protocol):
    """What the engine reads an image from: rows of an array in memory, or of a huge TIFF by region."""

    height: int
    width: int

    def read_rows(self, y0: int, y1: int) -> Any: ...


def failure_reason(exc: BaseException) -> str:
    """What a user reads when the model could not produce an image's output."""
    return str(exc) if isinstance(exc, ModelFailedError) else f"model failed ({type(exc).__name__}: {exc})"


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def host_flags(flags: torch.Tensor) -> list[bool]:
    """Per-sample flags read back to the host: the one data-dependent step of a batch (the precision
    guard), kept in one place so a dry run on fake tensors can stand in for it."""
    return flags.tolist()


def finite_rows(y: torch.Tensor) -> list[bool]:
    """Per sample of ``y``: whether every value is finite. A sum is finite only if every term is, and
    summing reads the batch once without a mask (about 25x cheaper on the CPU than ``isfinite().all()``:
    0.6 against 15 ms for a 1024x1024 RGB output on one core); the exact check runs only when some sum
    is not finite (a non-finite value, or finite values that overflowed)."""
    sums = host_flags(torch.isfinite(y.sum(dim=tuple(range(1, y.dim())))))
    return sums if all(sums) else host_flags(torch.isfinite(y).flatten(1).all(1))


def device_pixel_budget(runner: Runner) -> int:
    """Input pixels one batch may hold. On a GPU, measured: bytes one input pixel costs at peak."""
    if runner.device.type != "cuda":
        return CPU_PIXEL_BUDGET
    dev = runner.device
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    probe = torch.rand(1, runner.info.in_channels, 128, 128, device=dev)
    runner.run_eager(probe)  # eager: no compilation for a throw-away shape
    per_px = max((torch.cuda.max_memory_allocated(dev) - base) / probe[0, 0].numel(), 1.0)
    free, _ = torch.cuda.mem_get_info(dev)
    return max(int(free * 0.5 / per_px), 64 * 64)


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
                 prepare: Callable[[Canvas, WindowEngine], Callable[[], AbstractContextManager] | None] | None = None,
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


class BandReadError(Exception):
    """A band of an image could not be read or converted; the message is the reason shown."""


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


@dataclass
class _Unit:
    canvas: Canvas
    band: int
    col: int
    k: int  # model inputs (planes) of this window; fixed when queued, whatever becomes of the canvas

    def input(self) -> torch.Tensor:
        xs = self.canvas.plan.xs
        return self.canvas.planes[..., xs.starts[self.col]:xs.starts[self.col] + xs.window]


class WindowEngine:
    """Runs the windows of many images through a Runner: batches of equal shapes across images, band
    by band within an image, with the OOM back-off and the fp32 precision guard."""

    def __init__(self, runner: Runner, windowing: Windowing, report: Report) -> None:
        self.runner, self.report = runner, report
        info = runner.info
        self.scale, self.multiple = info.scale, info.size_multiple
        rf = info.receptive_field
        self.context = windowing.overlap if windowing.overlap is not None else (rf if rf is not None else DEFAULT_CONTEXT)
        self.border = self.context if windowing.mirror_borders else 0
        self.blend = windowing.blend
        self.budget = device_pixel_budget(runner)
        self.auto = windowing.tile == 0
        cpu = runner.device.type != "cuda"
        self.whole = windowing.whole_pixels if cpu and windowing.whole_pixels else self.budget
        self.tile = windowing.tile or max(4 * MIN_TILE, (int(math.sqrt(self.budget)) - 2 * self.context) // 8 * 8)
        self.batch_size = windowing.batch_size
        self.max_planes = windowing.batch_size or 64
        self.queues: OrderedDict[tuple, deque[_Unit]] = OrderedDict()
        self.queued = 0  # input pixels waiting (all planes)

    def plan(self, height: int, width: int) -> WindowPlan:
        tile = 0 if self.auto and height * width <= self.whole else self.tile
        return plan_windows(height, width, tile, self.context, multiple=self.multiple, border=self.border,
                            blend=self.blend)

    def _batch_limit(self, h: int, w: int) -> int:
        if self.batch_size:
            return self.max_planes
        budget = self.budget if self.runner.device.type == "cuda" else min(self.budget, CPU_BATCH_PIXELS)
        return min(max(1, budget // max(h * w, 1)), self.max_planes)

    # -- images in -------------------------------------------------------------------------------
    def add(self, canvas: Canvas) -> None:
        """Queue an image. One of several bands is driven to its end here (its rows are read band by
        band, so memory holds one band); single-band images wait for their batch to fill."""
        canvas.plan = self.plan(canvas.source.height, canvas.source.width)
        if canvas.prepare is not None and len(canvas.plan) > 1:
            try:
                canvas.scope = canvas.prepare(canvas, self)
            except BandReadError as exc:
                self._fail(canvas, str(exc))
                return
            except Exception as exc:
                self._fail(canvas, failure_reason(exc))
                return
        if not self._start_band(canvas):
            return
        if len(canvas.plan.ys) == 1:
            self.run_ready()
            return
        while not canvas.closed:
            if canvas.left == 0:
                if not self._start_band(canvas):
                    return
            else:
                self._run_group(canvas.key)

    def _start_band(self, canvas: Canvas) -> bool:
        """Read the rows of the canvas's current band and queue its windows; False if it failed."""
        xs = canvas.plan.xs
        try:
            planes = read_band(canvas, canvas.band)
        except BandReadError as exc:
            self._fail(canvas, str(exc))
            return False
        canvas.planes = planes
        canvas.left = len(xs)
        for j in range(len(xs)):
            self._enqueue(_Unit(canvas, canvas.band, j, planes.shape[0]))
        return True

    def _enqueue(self, unit: _Unit) -> None:
        self.queues.setdefault(unit.canvas.key, deque()).append(unit)
        self.queued += unit.k * unit.canvas.plan.ys.window * unit.canvas.plan.xs.window

    # -- batching --------------------------------------------------------------------------------
    def run_ready(self) -> None:
        """Run every full batch; then, while more than two batches' worth of pixels wait (shapes that
        rarely repeat), the oldest group, so latency and memory stay bounded."""
        for key in list(self.queues):
            q = self.queues.get(key)
            while q and sum(u.k for u in q) >= self._batch_limit(key[0], key[1]):
                self._run_group(key)
                q = self.queues.get(key)
        while self.queues and self.queued > 2 * self.budget:
            self._run_group(next(iter(self.queues)))

    def flush(self) -> None:
        while self.queues:
            self._run_group(next(iter(self.queues)))

    def _run_group(self, key: tuple) -> None:
        q = self.queues[key]
        limit = self._batch_limit(key[0], key[1])
        batch, planes = [], 0
        while q and (not batch or planes + q[0].k <= limit):
            unit = q.popleft()
            batch.append(unit)
            planes += unit.k
        if not q:
            del self.queues[key]
        self.queued -= planes * key[0] * key[1]
        self._run_batch(batch)

    # -- running ---------------------------------------------------------------------------------
    def _run_batch(self, batch: list[_Unit]) -> None:
        batch = [u for u in batch if not u.canvas.closed]
        if not batch:
            return
        fp32, scope = batch[0].canvas.fp32, batch[0].canvas.scope
        x = torch.cat([u.input() for u in batch])
        try:
            # windows with whole-image state run eagerly: a compiled graph would specialise on that state
            eager = scope is not None
            with scope() if scope is not None else nullcontext():
                y = self._window_output(x, fp32, eager) if len(batch) == 1 else self._forward(x, fp32, eager)
        except Exception as exc:
            del x
            if len(batch) > 1 and is_oom(exc):  # halve the batch and retry the same windows
                self._after_oom()
                self.max_planes = max(1, self.max_planes // 2)
                half = len(batch) // 2
                self._run_batch(batch[:half])
                self._run_batch(batch[half:])
                return
            reason = failure_reason(exc)
            for canvas in {id(u.canvas): u.canvas for u in batch}.values():
                self._fail(canvas, reason)
            return
        del x
        finite = finite_rows(y)
        i = 0
        for u in batch:  # still not finite after the fp32 rerun: that image fails, never a black output
            k = u.k
            if not all(finite[i:i + k]):
                self._fail(u.canvas, NON_FINITE)
            elif not u.canvas.closed:
                self._deliver(u, y[i:i + k])
            i += k

    def _forward(self, x: torch.Tensor, fp32: bool, eager: bool = False) -> torch.Tensor:
        run = self.runner.run_eager if eager else self.runner
        if fp32 or self.runner.dtype == torch.float32:
            return self.runner.run_fp32(x) if fp32 else run(x)
        y = run(x)
        finite = finite_rows(y)
        if not all(finite):  # the precision guard: redo those samples in fp32
            bad = torch.tensor([not f for f in finite], device=y.device)
            y[bad] = self.runner.run_fp32(x[bad])
            self.report.fp32_reruns += int(bad.sum())
        return y

    def _after_oom(self) -> None:
        self.report.oom_retries += 1
        if self.runner.device.type == "cuda":
            torch.cuda.empty_cache()

    def _window_output(self, x: torch.Tensor, fp32: bool, eager: bool = False) -> torch.Tensor:
        """One window's output; out of memory, it is computed in core-cropped pieces of half the size
        inside the window (with the same context), so it is still delivered once and whole."""
        try:
            return self._forward(x, fp32, eager)
        except Exception as exc:
            if not is_oom(exc):
                raise
        self._after_oom()
        h, w = x.shape[-2:]
        tile = (max(h, w) - 2 * self.context) // 2
        if tile < MIN_TILE:
            raise ModelFailedError(f"out of memory even for a {w}x{h} window; use a smaller --tile")
        self.tile = min(self.tile, tile)  # later images are cut to fit as well
        self.budget = min(self.budget, h * w // 2)
        sub = plan_windows(h, w, tile, self.context, multiple=self.multiple)
        s, y = self.scale, None
        for i, sy in enumerate(sub.ys.starts):
            for j, sx in enumerate(sub.xs.starts):
                part = self._window_output(x[..., sy:sy + sub.ys.window, sx:sx + sub.xs.window], fp32, eager)
                if y is None:
                    y = part.new_empty(part.shape[0], part.shape[1], h * s, w * s)
                (cy0, cy1), (cx0, cx1) = sub.ys.cuts[i:i + 2], sub.xs.cuts[j:j + 2]
                y[..., cy0 * s:cy1 * s, cx0 * s:cx1 * s] = part[..., (cy0 - sy) * s:(cy1 - sy) * s,
                                                                (cx0 - sx) * s:(cx1 - sx) * s]
        return y

    def _deliver(self, unit: _Unit, y: torch.Tensor) -> None:
        """Weigh one window's output into its band; a complete band's final rows go out."""
        canvas, s = unit.canvas, self.scale
        ys, xs = canvas.plan.ys, canvas.plan.xs
        i, j = unit.band, unit.col
        ylo, yhi = ys.support(i)
        xlo, xhi = xs.support(j)
        part = y[..., (ylo - ys.starts[i]) * s:(yhi - ys.starts[i]) * s, (xlo - xs.starts[j]) * s:(xhi - xs.starts[j]) * s]
        if canvas.acc is None:
            canvas.acc = y.new_zeros(y.shape[0], y.shape[1], (yhi - ylo) * s, xs.size * s)
            if canvas.carry is not None:
                canvas.acc[..., :canvas.carry.shape[-2], :] = canvas.carry
                canvas.carry = None
        target = canvas.acc[..., (xlo - xs.border) * s:(xhi - xs.border) * s]
        if self.blend:
            wy = torch.from_numpy(ys.weights(i, s)).to(y.device)
            wx = torch.from_numpy(xs.weights(j, s)).to(y.device)
            target.add_(part * (wy[:, None] * wx[None, :]))
        else:
            target.copy_(part)
        canvas.left -= 1
        if canvas.left == 0:
            self._finish_band(canvas)

    def _finish_band(self, canvas: Canvas) -> None:
        ys, s, i = canvas.plan.ys, self.scale, canvas.band
        ylo, _ = ys.support(i)
        n = (ys.final(i) - ylo) * s
        acc, canvas.acc, canvas.planes = canvas.acc, None, None
        last = i == len(ys) - 1
        try:
            canvas.on_rows((ylo - ys.border) * s, acc[..., :n, :])
        except Exception as exc:  # the writer could not take the rows (disk full, ...)
            self._fail(canvas, f"cannot write the output ({type(exc).__name__}: {exc})")
            return
        if last:
            canvas.closed = True
            canvas.on_done()
        else:
            canvas.carry = acc[..., n:, :].clone() if n < acc.shape[-2] else None
            canvas.band += 1

    def _fail(self, canvas: Canvas, reason: str) -> None:
        if not canvas.closed:
            canvas.closed = True
            canvas.planes = canvas.acc = canvas.carry = None
            canvas.on_failed(reason)


class TensorSource:
    """Rows of float planes (K, C, H, W) already on the device."""

    def __init__(self, planes: torch.Tensor) -> None:
        self.planes = planes
        self.height, self.width = planes.shape[-2:]

    def read_rows(self, y0: int, y1: int) -> torch.Tensor:
        return self.planes[..., y0:y1, :]


def run_planes(runner: Runner, x: torch.Tensor, windowing: Windowing | None = None, *,
               report: Report | None = None, prepare=None) -> torch.Tensor:
    """Float images (N, C, H, W) through the engine, each its own image (same windows, batching,
    OOM back-off and precision guard as a job), without rounding: float (N, C', H*s, W*s) out.
    ``prepare`` is a task's ``tiled`` hook (see ``Canvas``)."""
    s = runner.info.scale
    x = x.to(runner.device, torch.float32)
    engine = WindowEngine(runner, windowing or Windowing(), report if report is not None else Report())
    out: list[torch.Tensor | None] = [None]
    errors: list[str] = []

    def on_rows(n: int, y0: int, rows: torch.Tensor) -> None:
        if out[0] is None:
            out[0] = rows.new_empty(x.shape[0], rows.shape[1], x.shape[2] * s, x.shape[3] * s)
        out[0][n:n + 1, :, y0:y0 + rows.shape[-2]] = rows

    for n in range(x.shape[0]):
        engine.add(Canvas(TensorSource(x[n:n + 1]), lambda p: p, lambda y0, rows, n=n: on_rows(n, y0, rows),
                          lambda: None, errors.append, prepare=prepare))
    engine.flush()
    if errors:
        raise ModelFailedError(errors[0])
    return out[0]


# -- jobs: decode, tasks, outputs -------------------------------------------------------------------
class Task:
    """What a command says about its job; the engine does the rest. Subclasses set ``name``,
    ``windowing`` defaults and ``main`` (the output whose file marks the job done, written last)."""

    name = "task"
    main = "image"

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        """(h, w, C) uint8/uint16 rows -> (K, C_in, h, w) float32 model planes on the device."""
        raise NotImplementedError

    def post(self, y: torch.Tensor, meta: ImageMeta, rows: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        """Finished model output rows (K, C', n, W') -> output pixels {name: (n, W', c)} on the device.
        ``rows()`` reads the input rows they came from (for overlays)."""
        raise NotImplementedError

    def fp32(self, meta: ImageMeta) -> bool:
        """Whether this image is computed in fp32 whatever the runner's precision."""
        return False

    def tiled(self, canvas: Canvas, engine: WindowEngine) -> Callable[[], AbstractContextManager] | None:
        """Called before the windows of an image that needs several run: whole-image state they must
        share (see ``Canvas``); None when windows need nothing beyond their own pixels."""
        return None

    def input_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The decoded image as the model should see it (e.g. resized); in-memory jobs only."""
        return pixels

    @property
    def streams(self) -> bool:
        """Whether tiled TIFF inputs may be read by region (False when ``input_pixels`` needs them whole)."""
        return True

    def outputs(self, dst: Path, streamed: bool) -> dict[str, Path]:
        """Every file a job writes, by output name (extras are known at planning time)."""
        return {self.main: dst}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output size of an input; when it differs from the model's (input x scale), the model's
        float output is resized (antialiased bicubic, streamed row by row) before ``post``."""
        s = self.runner.info.scale
        return height * s, width * s

    def encode(self, name: str, arr: np.ndarray, meta: ImageMeta, path: Path, opts: EncodeOptions) -> None:
        """Write one in-memory output atomically."""
        raise NotImplementedError

    def tiff(self, name: str, channels: int) -> dict:
        """tifffile arguments of a streamed output."""
        return {"photometric": "rgb" if channels in (3, 4) else "minisblack",
                "extrasamples": (2,) if channels in (2, 4) else None}

    def settings(self) -> dict:
        return {}


class DecodeSet(Dataset):
    """Decodes in worker processes; a bad file becomes an error record, never an exception. With an
    ``owner``, each output is claimed for that run before its input is decoded."""

    def __init__(self, jobs: list[Job], max_pixels: int, owner: str | None = None, overwrite: bool = False) -> None:
        self.jobs, self.max_pixels, self.owner, self.overwrite = jobs, max_pixels, owner, overwrite

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        arr, meta, error = decode_job(self.jobs[i], self.max_pixels, self.owner, self.overwrite)
        return i, torch.from_numpy(arr) if arr is not None else torch.empty(0), meta, error


def decode_job(job: Job, max_pixels: int, owner: str | None,
               overwrite: bool = False) -> tuple[np.ndarray | None, ImageMeta | None, str]:
    """Claim a job's output (with an ``owner``) and decode its input: (pixels, meta, "") or (None,
    None, reason); never raises for a bad file or an unwritable claim."""
    if owner is not None and (reason := claim_output(job.dst, owner, overwrite)):
        return None, None, reason
    try:
        arr, meta = decode_image(job.src, max_pixels)
        return arr, meta, ""
    except DecodeError as exc:
        return None, None, str(exc)
    except MemoryError:
        return None, None, "out of memory while decoding"
    except Exception as exc:  # a decoder bug must not take the batch down
        return None, None, f"cannot decode ({type(exc).__name__}: {exc})"


WORKER_MEMORY = 1 << 30  # bytes a decode worker may need: its interpreter, torch and a few prefetched images


def auto_workers(n_jobs: int, cpu_compute: bool = False) -> int:
    """Decode processes: none for a handful of files; else about half the cores (the rest compute).
    None either where the model computes on a CPU of two cores: it already keeps both busy, and a
    decode process beside it and the encode threads only takes turns with it (measured on 2 cores,
    48 photos of 256 px -> edsr_tiny_x4: OpenVINO 12.7 img/s decoding in the main process against
    8.4-10.5 with one decode process, PyTorch 10.5-10.9 against 7.5-10.0; unet_drive on 80 DRIVE
    images: PyTorch 6.5 s against 7.1 s, OpenVINO 7.8-8.3 s against 7.3-7.7 s)."""
    cores = os.cpu_count() or 2
    if n_jobs < 4 or (cpu_compute and cores <= 2):
        return 0
    return max(1, min(8, cores // 2))


def available_memory() -> int | None:
    """Bytes the system can give without swapping (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def decode_workers(requested: int | None, n_jobs: int, cpu_compute: bool = False) -> int:
    """Worker processes for decoding: ``requested`` (None = automatic), never more than the cores,
    the files to decode, or what free memory holds at ``WORKER_MEMORY`` each."""
    workers = auto_workers(n_jobs, cpu_compute) if requested is None else requested
    memory = available_memory()
    cap = min(os.cpu_count() or 1, n_jobs, memory // WORKER_MEMORY if memory is not None else workers)
    return max(0, min(workers, cap))


def check_destination(dst: Path) -> None:
    """Fail before any work if the destination cannot be created or written."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
        probe = dst / f".pixbatch-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"cannot write to {dst}: {exc.strerror or exc}") from None


def streams(job: Job) -> bool:
    """A tiled (Big)TIFF going to a TIFF output is read region by region and written tile by tile."""
    return job.dst.suffix.lower() in STREAM_SUFFIXES and is_tiled_tiff(job.src)


def _host(t: torch.Tensor) -> np.ndarray:
    arr = t.cpu().numpy()
    return arr.astype(np.uint16) if arr.dtype == np.int32 else arr  # 16-bit samples travel as int32


class _Outputs:
    """The outputs of one job as its rows arrive: arrays in memory, or tiled BigTIFFs being written to
    temporary files; ``finish`` commits them, the extras first and the main output last."""

    def __init__(self, task: Task, job: Job, meta: ImageMeta, source: RowSource, streamed: bool,
                 opts: EncodeOptions) -> None:
        self.task, self.job, self.meta, self.source, self.opts = task, job, meta, source, opts
        self.paths = task.outputs(job.dst, streamed)
        self.streamed = streamed
        self.arrays: dict[str, np.ndarray] = {}
        self.writers: dict[str, TiledTiffWriter] = {}
        self.tmps = {k: temp_path(p) for k, p in self.paths.items()} if streamed else {}
        self.scale = task.runner.info.scale
        self.rows_done = 0  # model output rows received
        h, w = self.source.height * self.scale, self.source.width * self.scale
        self.size = task.output_size(self.source.height, self.source.width)
        self.resampler = RowResampler(h, w, *self.size) if self.size != (h, w) else None

    def push(self, y0: int, y: torch.Tensor) -> None:
        self.rows_done += y.shape[-2]
        if self.resampler is not None:
            y0, y = self.resampler.push(y)
            if y.shape[-2] == 0:
                return
        (h, w), n = self.size, y.shape[-2]
        ratio = self.source.height / h  # input rows per output row, for overlays
        outs = self.task.post(y, self.meta, lambda: self.source.read_rows(int(y0 * ratio), int((y0 + n) * ratio)))
        for name, t in outs.items():
            arr = _host(t)
            if self.streamed:
                if name not in self.writers:
                    c = arr.shape[2]
                    self.writers[name] = TiledTiffWriter(self.tmps[name], h, w, c, arr.dtype, **self.task.tiff(name, c))
                self.writers[name].push(arr)
            else:
                if name not in self.arrays:
                    self.arrays[name] = np.empty((h, w, arr.shape[2]), arr.dtype)
                self.arrays[name][y0:y0 + n] = arr

    def encode(self) -> tuple[float, float]:
        """Encode and commit the in-memory outputs (run by a writer thread); input and output MP."""
        for name in self._order():
            try:
                self.task.encode(name, self.arrays[name], self.meta, self.paths[name], self.opts)
            except OutputExistsError:
                if name == self.task.main:
                    raise
                # extras that a killed run left behind are kept unless --overwrite
        return self._mp()

    def commit_streamed(self) -> tuple[float, float]:
        for name in list(self.writers):
            self.writers.pop(name).close()
        for tmp in self.tmps.values():  # all there on disk before any of them is committed
            check_tiff_complete(tmp)
        for name in self._order():
            try:
                commit(self.tmps[name], self.paths[name], self.opts.overwrite)
            except OutputExistsError:
                if name == self.task.main:
                    raise
        return self._mp()

    def discard(self) -> None:
        for wr in self.writers.values():
            wr.abort()
        self.writers.clear()
        for tmp in self.tmps.values():
            tmp.unlink(missing_ok=True)
        self.arrays.clear()

    def _order(self) -> list[str]:
        return [k for k in self.paths if k != self.task.main] + [self.task.main]

    def _mp(self) -> tuple[float, float]:
        return self.source.height * self.source.width / 1e6, self.size[0] * self.size[1] / 1e6


DecodeRecord = tuple[int, Any, "ImageMeta | None", str]  # (index in the in-memory jobs, pixels, meta, error)


def start_loader(loader: Iterable) -> Iterator:
    """Iterate ``loader``; a DataLoader's worker processes are forked with the parent's objects frozen
    for the garbage collector, so a child never runs the destructor of an object it inherited (an
    OpenVINO compiled model's waits for threads that a forked child does not have: the decode worker
    hangs, and the job with it)."""
    if not isinstance(loader, DataLoader) or loader.num_workers == 0:
        return iter(loader)
    gc.collect()  # what is garbage now is finalised here, in the parent
    gc.freeze()
    try:
        return iter(loader)  # the workers fork here
    finally:
        gc.unfreeze()


def split_jobs(task: Task, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """(in-memory jobs, streamed jobs): tiled TIFFs going to TIFFs are read by region, unless the task
    needs its inputs whole."""
    streamed = [j for j in jobs if task.streams and streams(j)]
    chosen = set(streamed)
    return [j for j in jobs if j not in chosen], streamed


def run_job(task: Task, plan: Plan, opts: JobOptions, *, progress: bool = False,
            log: Callable[[str], None] = print, info: Callable[[str], None] | None = None,
            report: Report | None = None, decoded: Iterable[DecodeRecord] | None = None,
            owner: str | None = None) -> Report:
    """Run every planned job of ``task`` and write its outputs. Never raises for a bad file.

    Images are decoded by worker processes here, unless ``decoded`` already holds their records (an
    executor that decodes elsewhere, e.g. Ray tasks; indices refer to ``split_jobs``'s in-memory
    list). ``owner`` is the name this run claims outputs under (default: this process)."""
    from tqdm import tqdm

    runner = task.runner
    report = report if report is not None else Report()
    book = JobBook(plan, report, writers=opts.writers, progress=progress, log=log, info=info, owner=owner)
    in_memory, streamed = split_jobs(task, plan.todo)
    workers = 0 if decoded is not None else decode_workers(opts.workers, len(in_memory),
                                                                  runner.device.type == "cpu")
    engine = WindowEngine(runner, opts.windowing, report)
    report.settings = {
        "task": task.name, "model": runner.info.name, "arch": runner.info.arch, "scale": runner.info.scale,
        "device": str(runner.device), "precision": str(runner.dtype).removeprefix("torch."),
        "channels_last": runner.channels_last, "compile": runner.compiled is not None and runner.compiled.graph_compiled, "kernels": runner.kernels,
        "backend": runner.backend,
        "tile": engine.tile, "overlap": engine.context, "blend": engine.blend, **task.settings(),
        "streamed": len(streamed), "workers": workers, "writers": book.writers,
    }

    def start(job: Job, meta: ImageMeta, source: RowSource, is_streamed: bool, *, pool_commits: bool = True):
        """Queue one image; when it is done, the writer pool encodes or commits its outputs (unless
        ``pool_commits`` is False: a huge TIFF read by region is committed by ``run_streamed``). None when
        the task cannot size its output (that image failed)."""
        try:
            outputs = _Outputs(task, job, meta, source, is_streamed, opts.encode)
        except ValueError as exc:  # e.g. an --outscale that leaves less than a pixel
            book.fail(job.src, str(exc))
            return None

        def failed(reason: str) -> None:
            outputs.discard()
            book.fail(job.src, reason)

        def done() -> None:
            if pool_commits:
                book.write(job.src, job.dst, outputs.commit_streamed if is_streamed else outputs.encode)

        engine.add(Canvas(source, task.model_input, outputs.push, done, failed, fp32=task.fp32(meta),
                          prepare=task.tiled))
        return outputs

    def run_streamed(job: Job) -> None:
        try:
            reader = TiffRegionReader(job.src)
        except Exception as exc:
            book.fail(job.src, f"cannot read {job.src.name} by region ({exc})")
            claims.release(job.dst, book.owner)
            return
        outputs = None
        try:
            book.decoded(job.src, reader.frames, reader.notes)
            bits = 16 if reader.dtype == np.uint16 else 8
            meta = ImageMeta(MODES_BY_CHANNELS.get(reader.channels, "RGB"), bits, "TIFF")
            with tqdm(total=reader.height, unit="row", desc=job.src.name, leave=False, disable=not progress,
                      file=sys.stderr, dynamic_ncols=True) as bar:
                outputs = start(job, meta, _Counted(reader, bar), True, pool_commits=False)
                engine.flush()  # a small image's only window may be waiting for a batch to fill
            if outputs is not None and outputs.rows_done == reader.height * runner.info.scale:  # else failed, booked
                try:
                    book.done(*outputs.commit_streamed())
                except OutputExistsError:
                    book.skipped(job.src)
                except Exception as exc:
                    book.fail(job.src, f"cannot write {job.dst}: {exc}")
        finally:
            if outputs is not None:
                outputs.discard()
            reader.close()
            claims.release(job.dst, book.owner)

    loader = decoded if decoded is not None else DataLoader(
        DecodeSet(in_memory, opts.max_pixels, book.owner, opts.encode.overwrite), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=runner.device.type == "cuda", prefetch_factor=4 if workers else None, persistent_workers=False)
    try:
        for i, pixels, meta, error in start_loader(loader):
            job = in_memory[i]
            if book.accept(job.src, error, meta):
                try:
                    arr = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
                    source = RegionSource(task.input_pixels(arr))
                except (MemoryError, torch.OutOfMemoryError):
                    book.fail(job.src, "out of memory while preparing the image")
                    continue
                try:
                    oh, ow = task.output_size(source.height, source.width)
                except ValueError as exc:
                    book.fail(job.src, str(exc))
                    continue
                big = job.dst.suffix.lower() in STREAM_SUFFIXES and opts.max_pixels and oh * ow > opts.max_pixels
                if big:  # planning sent it to a TIFF: written band by band, never whole in memory
                    report.big_outputs += 1
                    book.info(f"note: {one_line(job.src)}: its {ow}x{oh} output is above --max-pixels "
                              f"({opts.max_pixels / 1e6:.3g} MP): written tile by tile as a tiled BigTIFF")
                start(job, meta, source, bool(big))
        engine.flush()
        for job in streamed:
            if book.claim(job, opts.encode.overwrite):
                run_streamed(job)
        book.wait()
    finally:
        book.close()
    return report


class _Counted:
    """A row source that advances a progress bar of rows read (one huge image can take minutes)."""

    def __init__(self, source: RowSource, bar) -> None:
        self.source, self.bar = source, bar
        self.height, self.width = source.height, source.width
        self.seen = 0

    def read_rows(self, y0: int, y1: int):
        if y1 > self.seen:
            self.bar.update(min(y1, self.height) - self.seen)
            self.seen = y1
        return self.source.read_rows(y0, y1)
