"""The upscale pipeline: discover -> decode (workers) -> plan (tiles, batches) -> run -> post -> write.

Decoding runs ahead in DataLoader workers (pinned memory on a GPU); windows of equal shape from any
number of images share a batch; post-processing (alpha, grayscale, rounding to the output bit depth)
happens on the device; a pool of writer threads encodes while the next batch computes.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pixbatch.io import claims
from pixbatch.io.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageMeta, decode_image
from pixbatch.io.discover import Job, Plan, plan_jobs
from pixbatch.io.encode import EncodeOptions, write_image
from pixbatch.runtime.device import StartupError
from pixbatch.runtime.jobs import CLAIMED_ELSEWHERE, JobBook
from pixbatch.runtime.prepare import NON_FINITE, ModelFailedError, Runner
from pixbatch.runtime.tiling import Window, plan_windows

MIN_TILE = 16
CPU_PIXEL_BUDGET = 512 * 512  # input pixels per window on the CPU: bounds RAM, costs no speed
CPU_BATCH_PIXELS = 256 * 256  # batching larger inputs is slower on the CPU (measured), tiny ones still batch


@dataclass
class UpscaleOptions:
    tile: int = 0  # input px; 0 = automatic
    tile_overlap: int | None = None  # None = the model's receptive field
    batch_size: int = 0  # planes per batch; 0 = automatic
    workers: int | None = None  # decode processes; None = automatic
    writers: int | None = None  # encode threads; None = automatic
    max_pixels: int = DEFAULT_MAX_PIXELS
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    fp32_for_16bit: bool = True  # 16-bit inputs are computed in fp32 unless a precision was forced


@dataclass
class Report:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    input_mp: float = 0.0
    output_mp: float = 0.0
    fp32_reruns: int = 0
    oom_retries: int = 0
    multi_frame: int = 0  # inputs with several frames or pages, of which the first was processed
    settings: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 123 if self.failed else 0

    def as_dict(self) -> dict:
        t = max(self.seconds, 1e-9)
        return {
            "done": self.done, "skipped": self.skipped, "failed": len(self.failed),
            "errors": [{"path": p, "reason": r} for p, r in self.failed],
            "seconds": round(self.seconds, 3), "images_per_s": round(self.done / t, 3),
            "input_mp": round(self.input_mp, 3), "output_mp": round(self.output_mp, 3),
            "output_mp_per_s": round(self.output_mp / t, 3),
            "fp32_reruns": self.fp32_reruns, "oom_retries": self.oom_retries, "multi_frame": self.multi_frame,
            "settings": self.settings,
        }


class _DecodeSet(Dataset):
    """Decodes in worker processes; a bad file becomes an error record, never an exception. With an
    ``owner``, each output is claimed for that run before its input is decoded."""

    def __init__(self, jobs: list[Job], max_pixels: int, owner: str | None = None) -> None:
        self.jobs, self.max_pixels, self.owner = jobs, max_pixels, owner

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        if self.owner is not None and not claims.claim(self.jobs[i].dst, self.owner):
            return i, torch.empty(0), None, CLAIMED_ELSEWHERE
        try:
            arr, meta = decode_image(self.jobs[i].src, self.max_pixels)
            return i, torch.from_numpy(arr), meta, ""
        except DecodeError as exc:
            return i, torch.empty(0), None, str(exc)
        except MemoryError:
            return i, torch.empty(0), None, "out of memory while decoding"
        except Exception as exc:  # a decoder bug must not take the batch down
            return i, torch.empty(0), None, f"cannot decode ({type(exc).__name__}: {exc})"


@dataclass
class _Work:
    """One image in flight: its model input planes on the device and its host output buffer."""

    job: Job | None
    meta: ImageMeta | None
    planes: torch.Tensor  # (K, 3, H, W) float32 in [0, 1]; K = 2 with alpha (premultiplied colour, alpha)
    out: np.ndarray | torch.Tensor  # (H*s, W*s, C) uint8 / uint16 for images; (K, 3, H*s, W*s) float for tensors
    pending: int = 0
    fp32: bool = False
    failed: bool = False

    def __post_init__(self) -> None:
        self.k = self.planes.shape[0]  # model inputs per window: 1, or 2 with alpha


@dataclass
class _Unit:
    work: _Work
    win: Window

    @property
    def key(self) -> tuple[int, int, bool]:
        return self.win.h, self.win.w, self.work.fp32


def planes_from_pixels(pixels: torch.Tensor, bits: int) -> torch.Tensor:
    """HWC uint8/uint16 -> (K, 3, H, W) float32 model input. Alpha images give two planes: colour
    premultiplied by alpha (so transparent pixels cannot bleed dark fringes into edges) and alpha."""
    x = pixels.permute(2, 0, 1).float().div_(255.0 if bits == 8 else 65535.0)  # full precision for 16-bit
    c = x.shape[0]
    color, alpha = (x[:-1], x[-1:]) if c in (2, 4) else (x, None)
    color = color.expand(3, -1, -1) if color.shape[0] == 1 else color
    if alpha is None:
        return color.unsqueeze(0).contiguous()
    return torch.stack([color * alpha, alpha.expand(3, -1, -1)])


def pixels_from_planes(y: torch.Tensor, mode: str, bits: int) -> torch.Tensor:
    """(K, 3, h, w) model output -> (h, w, C) rounded to the output bit depth, on the device."""
    color = y[0]
    alpha = y[1].mean(0, keepdim=True).clamp_(0, 1) if y.shape[0] == 2 else None
    if alpha is not None:
        # Un-premultiply; fully transparent pixels have no colour to recover and become black.
        color = torch.where(alpha > 1e-4, color / alpha.clamp_min(1e-4), torch.zeros_like(color))
    if mode in ("L", "LA"):
        color = color.mean(0, keepdim=True)
    out = color if alpha is None else torch.cat([color, alpha])
    maxv = 255.0 if bits == 8 else 65535.0
    q = out.clamp_(0, 1).mul_(maxv).round_()
    # 16-bit values travel as int32 (uint16 has only limited CUDA support); the host stores them as uint16.
    return q.permute(1, 2, 0).to(torch.uint8 if bits == 8 else torch.int32)


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


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class Engine:
    """Runs windows through a Runner in batches, with OOM back-off and the fp32 guard."""

    def __init__(self, runner: Runner, opts: UpscaleOptions, on_image_done: Callable[[_Work], None],
                 on_image_failed: Callable[[_Work, str], None], report: Report, *, float_output: bool = False) -> None:
        self.runner, self.opts, self.report = runner, opts, report
        self.on_image_done, self.on_image_failed = on_image_done, on_image_failed
        self.float_output = float_output  # keep raw float model output (tensors) instead of image pixels
        self.scale = runner.info.scale
        rf = runner.info.receptive_field
        self.overlap = opts.tile_overlap if opts.tile_overlap is not None else (rf if rf is not None else 32)
        self.budget = self._pixel_budget()
        self.tile = opts.tile or self._auto_tile()
        self.max_planes = opts.batch_size or 64
        self.queues: OrderedDict[tuple, deque[_Unit]] = OrderedDict()
        self.queued = 0  # input pixels waiting (all planes)

    def _pixel_budget(self) -> int:
        return device_pixel_budget(self.runner)

    def _auto_tile(self) -> int:
        side = int(math.sqrt(self.budget)) - 2 * self.overlap
        return max(MIN_TILE * 4, side // 8 * 8)

    def _batch_limit(self, h: int, w: int) -> int:
        budget = self.budget if self.runner.device.type == "cuda" else min(self.budget, CPU_BATCH_PIXELS)
        by_budget = max(1, budget // max(h * w, 1))
        return min(by_budget, self.max_planes) if not self.opts.batch_size else self.max_planes

    # -- queueing ------------------------------------------------------------------------------
    def add(self, work: _Work) -> None:
        h, w = work.planes.shape[-2:]
        whole = self.opts.tile == 0 and h * w <= self.budget
        windows = plan_windows(h, w, 0 if whole else self.tile, self.overlap,
                               multiple=self.runner.info.size_multiple)
        work.pending = len(windows)
        for win in windows:
            self._enqueue(_Unit(work, win))
        self.run_ready()

    def _enqueue(self, unit: _Unit) -> None:
        self.queues.setdefault(unit.key, deque()).append(unit)
        self.queued += unit.work.k * unit.win.h * unit.win.w

    def run_ready(self) -> None:
        """Run every full batch; then, while more than two batches' worth of pixels wait (shapes that
        rarely repeat), the oldest group, so latency and memory stay bounded."""
        for key in list(self.queues):
            q = self.queues.get(key)
            while q and self._planes(q) >= self._batch_limit(key[0], key[1]):
                self._run_group(key)
                q = self.queues.get(key)
        while self.queues and self.queued > 2 * self.budget:
            self._run_group(next(iter(self.queues)))

    def flush(self) -> None:
        while self.queues:
            self._run_group(next(iter(self.queues)))

    @staticmethod
    def _planes(q: deque[_Unit]) -> int:
        return sum(u.work.k for u in q)

    def _run_group(self, key: tuple) -> None:
        q = self.queues[key]
        limit = self._batch_limit(key[0], key[1])
        batch, planes = [], 0
        while q and (not batch or planes + q[0].work.k <= limit):
            unit = q.popleft()
            batch.append(unit)
            planes += unit.work.k
        if not q:
            del self.queues[key]
        self.queued -= planes * key[0] * key[1]
        self._run_batch(batch)

    # -- running -------------------------------------------------------------------------------
    def _run_batch(self, batch: list[_Unit]) -> None:
        batch = [u for u in batch if not u.work.failed]
        if not batch:
            return
        x = torch.cat([u.work.planes[:, :, u.win.y0:u.win.y0 + u.win.h, u.win.x0:u.win.x0 + u.win.w]
                       for u in batch])
        try:
            y = self._forward(x, fp32=batch[0].work.fp32)
        except Exception as exc:
            del x
            if is_oom(exc):
                self._back_off(batch)
            else:  # the model rejected this input: fail these images, keep going
                for work in {id(u.work): u.work for u in batch}.values():
                    self._fail(work, f"model failed ({type(exc).__name__}: {exc})")
            return
        finite = torch.isfinite(y).flatten(1).all(1).tolist()
        i = 0
        for u in batch:  # still not finite after the fp32 rerun: that image fails, never a black output
            if not all(finite[i:i + u.work.k]):
                self._fail(u.work, NON_FINITE)
            i += u.work.k
        self._store(batch, y)

    def _fail(self, work: _Work, reason: str) -> None:
        if not work.failed:
            work.failed = True
            self.on_image_failed(work, reason)

    def _forward(self, x: torch.Tensor, fp32: bool) -> torch.Tensor:
        if fp32 or self.runner.dtype == torch.float32:
            return self.runner.run_fp32(x) if fp32 else self.runner(x)
        y = self.runner(x)
        bad = ~torch.isfinite(y).flatten(1).all(1)
        if bool(bad.any()):  # the precision guard: redo those samples in fp32
            y[bad] = self.runner.run_fp32(x[bad])
            self.report.fp32_reruns += int(bad.sum())
        return y

    def _back_off(self, batch: list[_Unit]) -> None:
        """Out of memory: halve the batch; a single window is cut into windows half its core size."""
        self.report.oom_retries += 1
        if self.runner.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) > 1:
            self.max_planes = max(1, self.max_planes // 2)
            half = len(batch) // 2
            self._run_batch(batch[:half])
            self._run_batch(batch[half:])
            return
        unit = batch[0]
        win = unit.win
        tile = max(win.ch, win.cw) // 2
        if tile < MIN_TILE:
            self._fail(unit.work, f"out of memory even for a {win.h}x{win.w} window")
            return
        self.tile = min(self.tile, tile)
        self.budget = min(self.budget, win.h * win.w // 2)  # later images are cut to fit as well
        h, w = unit.work.planes.shape[-2:]
        subs = plan_windows(h, w, tile, self.overlap, multiple=self.runner.info.size_multiple,
                            region=(win.cy0, win.cx0, win.ch, win.cw))
        unit.work.pending += len(subs) - 1
        for sub in subs:
            self._run_batch([_Unit(unit.work, sub)])

    def _store(self, batch: list[_Unit], y: torch.Tensor) -> None:
        s, i = self.scale, 0
        results = []
        for u in batch:
            k = u.work.k
            oy, ox = (u.win.cy0 - u.win.y0) * s, (u.win.cx0 - u.win.x0) * s
            core = y[i:i + k, :, oy:oy + u.win.ch * s, ox:ox + u.win.cw * s]
            i += k
            if u.work.failed:
                continue
            if self.float_output:
                w = u.win
                u.work.out[:, :, w.cy0 * s:(w.cy0 + w.ch) * s, w.cx0 * s:(w.cx0 + w.cw) * s] = core
                self._finish_unit(u)
                continue
            results.append((u, pixels_from_planes(core, u.work.meta.mode, u.work.meta.bits)))
        if self.runner.device.type == "cuda" and results:
            host = [torch.empty(r.shape, dtype=r.dtype, pin_memory=True) for _, r in results]
            for h_, (_, r) in zip(host, results):
                h_.copy_(r, non_blocking=True)
            torch.cuda.current_stream(self.runner.device).synchronize()
            results = [(u, h_) for (u, _), h_ in zip(results, host)]
        for u, r in results:
            if u.work.failed:
                continue
            w = u.win
            u.work.out[w.cy0 * s:(w.cy0 + w.ch) * s, w.cx0 * s:(w.cx0 + w.cw) * s] = r.cpu().numpy()
            self._finish_unit(u)

    def _finish_unit(self, u: _Unit) -> None:
        u.work.pending -= 1
        if u.work.pending == 0:
            self.on_image_done(u.work)


def upscale_tensor(runner: Runner, x: torch.Tensor, *, tile: int = 0, overlap: int | None = None,
                   batch_size: int = 0, report: Report | None = None) -> torch.Tensor:
    """Upscale float images (N, 3, H, W) in [0, 1] through the tiling engine; float (N, 3, H*s, W*s) out.

    Each of the N images is its own piece of work, as in the image pipeline (same windows, batching,
    OOM back-off and precision guard), without the rounding: what tests and evaluation compare."""
    s = runner.info.scale
    x = x.to(runner.device, torch.float32)
    out = torch.empty(x.shape[0], 3, x.shape[2] * s, x.shape[3] * s, device=runner.device)
    errors: list[str] = []
    engine = Engine(runner, UpscaleOptions(tile=tile, tile_overlap=overlap, batch_size=batch_size),
                    lambda work: None, lambda work, reason: errors.append(reason), report or Report(),
                    float_output=True)
    for i in range(x.shape[0]):
        engine.add(_Work(None, None, x[i:i + 1], out[i:i + 1]))
    engine.flush()
    if errors:
        raise ModelFailedError(errors[0])
    return out


WORKER_MEMORY = 1 << 30  # bytes a decode worker may need: its interpreter, torch and a few prefetched images


def auto_workers(n_jobs: int) -> int:
    """Decode processes: none for a handful of files; else about half the cores (the rest compute)."""
    if n_jobs < 4:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // 2))


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


def decode_workers(requested: int | None, n_jobs: int) -> int:
    """Worker processes for decoding: ``requested`` (None = automatic), never more than the cores,
    the files to decode, or what free memory holds at ``WORKER_MEMORY`` each."""
    workers = auto_workers(n_jobs) if requested is None else requested
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


def upscale_images(sources: list[Path], dst: Path, runner: Runner, opts: UpscaleOptions, plan: Plan,
                   *, progress: bool = False, log: Callable[[str], None] = print,
                   info: Callable[[str], None] | None = None, report: Report | None = None) -> Report:
    """Run a planned job list through the model and write every output. Never raises for a bad file."""
    report = report if report is not None else Report()
    book = JobBook(plan, report, writers=opts.writers, progress=progress, log=log, info=info)
    jobs = plan.todo
    workers = decode_workers(opts.workers, len(jobs))
    scale = runner.info.scale

    def encode(work: _Work) -> tuple[float, float]:
        write_image(work.out, work.meta, work.job.dst, opts.encode)
        h, w = work.out.shape[:2]
        return h * w / 1e6 / scale ** 2, h * w / 1e6

    def on_image_done(work: _Work) -> None:
        work.planes = torch.empty(0)  # free the device copy before encoding
        book.write(work.job.src, work.job.dst, lambda: encode(work))

    def on_image_failed(work: _Work, reason: str) -> None:
        work.planes = torch.empty(0)
        book.fail(work.job.src, reason)

    engine = Engine(runner, opts, on_image_done, on_image_failed, report)
    report.settings = {
        "model": runner.info.name, "arch": runner.info.arch, "scale": runner.info.scale,
        "device": str(runner.device), "precision": str(runner.dtype).removeprefix("torch."),
        "channels_last": runner.channels_last, "compile": runner.compiled is not None, "kernels": runner.kernels,
        "tile": engine.tile, "tile_overlap": engine.overlap, "workers": workers, "writers": book.writers,
    }
    loader = DataLoader(_DecodeSet(jobs, opts.max_pixels, book.owner), batch_size=None, shuffle=False,
                        num_workers=workers, pin_memory=runner.device.type == "cuda",
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    try:
        for i, pixels, meta, error in loader:
            job = jobs[i]
            if not book.accept(job.src, error, meta):
                continue
            h, w = pixels.shape[:2]
            if pixels.dtype == torch.uint16:
                pixels = pixels.to(torch.int32)  # uint16 has only limited support on CUDA
            try:
                planes = planes_from_pixels(pixels.to(runner.device, non_blocking=True), meta.bits)
                out = np.empty((h * scale, w * scale, pixels.shape[2]), np.uint8 if meta.bits == 8 else np.uint16)
            except (MemoryError, torch.OutOfMemoryError) as exc:
                book.fail(job.src, f"not enough memory for a {w}x{h} image ({type(exc).__name__})")
                continue
            fp32 = opts.fp32_for_16bit and meta.bits == 16
            engine.add(_Work(job, meta, planes, out, fp32=fp32))
        engine.flush()
        book.wait()
    finally:
        book.close()
    return report


__all__ = ["Report", "UpscaleOptions", "check_destination", "plan_jobs", "upscale_images"]
