"""Running a job: a planned job from its source to its sinks, for every task (docs/ARCHITECTURE.md).

``run_job`` reads decode records from the source (runtime/sources.py: worker processes, or an executor
that decoded elsewhere), wraps each image in a Canvas and hands it to the WindowEngine
(runtime/batcher.py), whose finished rows go to the image's Outputs (runtime/sinks.py); the writer pool
and the report are runtime/jobs.py's. Tiled (Big)TIFFs going to TIFFs are read by region and written
tile by tile, one at a time after the in-memory images, so memory is bounded by one band of windows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from pixbatch.io import claims
from pixbatch.io.atomic import OutputExistsError
from pixbatch.io.decode import MODES_BY_CHANNELS, ImageMeta
from pixbatch.io.discover import Job, Plan, is_video_input
from pixbatch.io.regions import RegionSource, TiffRegionReader
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.jobs import JobBook, Report, one_line
from pixbatch.runtime.sinks import Outputs
from pixbatch.runtime.sources import (
    STREAM_SUFFIXES,
    DecodeRecord,
    DecodeSet,
    RowSource,
    decode_workers,
    start_loader,
    streams,
)
from pixbatch.runtime.spec import JobSpec
from pixbatch.runtime.task import Task
from pixbatch.runtime.video import run_video


def split_jobs(task: Task, jobs: list[Job]) -> tuple[list[Job], list[Job], list[Job]]:
    """(in-memory jobs, streamed jobs, video jobs): tiled TIFFs going to TIFFs are read by region, unless
    the task needs its inputs whole; videos are read frame by frame (runtime/video.py)."""
    videos = [j for j in jobs if is_video_input(j.src)]
    streamed = [j for j in jobs if task.streams and streams(j)]
    chosen = set(streamed) | set(videos)
    return [j for j in jobs if j not in chosen], streamed, videos


def run_job(task: Task, plan: Plan, spec: JobSpec, *, progress: bool = False,
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
    book = JobBook(plan, report, writers=spec.writers, progress=progress, log=log, info=info, owner=owner)
    in_memory, streamed, videos = split_jobs(task, plan.todo)
    workers = 0 if decoded is not None else decode_workers(spec.workers, len(in_memory),
                                                                  runner.device.type == "cpu")
    engine = WindowEngine(runner, spec.windowing, report)
    report.settings = {
        "task": task.name, "model": runner.info.name, "arch": runner.info.arch, "scale": runner.info.scale,
        "device": str(runner.device), "precision": runner.precision,
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
            outputs = Outputs(task, job, meta, source, is_streamed, spec.encode)
        except ValueError as exc:  # e.g. an --outscale that leaves less than a pixel
            book.fail(job.src, str(exc))
            return None

        def failed(reason: str) -> None:
            outputs.discard()
            book.fail(job.src, reason)

        def done() -> None:
            if pool_commits:
                book.write(job.src, job.dst, outputs.commit)

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
                    book.done(*outputs.commit())
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
        DecodeSet(in_memory, spec.max_pixels, book.owner, spec.encode.overwrite), batch_size=None, shuffle=False, num_workers=workers,
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
                big = job.dst.suffix.lower() in STREAM_SUFFIXES and spec.max_pixels and oh * ow > spec.max_pixels
                if big:  # planning sent it to a TIFF: written band by band, never whole in memory
                    report.big_outputs += 1
                    book.info(f"note: {one_line(job.src)}: its {ow}x{oh} output is above --max-pixels "
                              f"({spec.max_pixels / 1e6:.3g} MP): written tile by tile as a tiled BigTIFF")
                start(job, meta, source, bool(big))
        engine.flush()
        for job in streamed:
            if book.claim(job, spec.encode.overwrite):
                run_streamed(job)
        for job in videos:
            if job.span is not None:  # a part of a split video: the run that split it holds the claim
                run_video(task, job, engine, book, spec, progress=progress)
            elif book.claim(job, spec.encode.overwrite):
                try:
                    run_video(task, job, engine, book, spec, progress=progress)
                finally:
                    claims.release(job.dst, book.owner)
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
