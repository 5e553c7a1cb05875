"""Sinks: where a job's output rows go and how they become files. In memory, encoded by the writer pool;
or, for huge images, streamed into tiled BigTIFFs band by band. Either way outputs are committed atomically,
the extras first and the main output last (its presence marks the job done)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from pixbatch.io.atomic import OutputExistsError, check_tiff_complete, commit, temp_path
from pixbatch.io.decode import ImageMeta
from pixbatch.io.discover import Job
from pixbatch.io.encode import EncodeOptions
from pixbatch.io.regions import TiledTiffWriter
from pixbatch.ops.imresize import RowResampler
from pixbatch.runtime.device import StartupError
from pixbatch.runtime.sources import RowSource
from pixbatch.runtime.task import Task


def check_destination(dst: Path) -> None:
    """Fail before any work if the destination cannot be created or written."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
        probe = dst / f".pixbatch-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"cannot write to {dst}: {exc.strerror or exc}") from None


def host_array(t: torch.Tensor) -> np.ndarray:
    arr = t.cpu().numpy()
    return arr.astype(np.uint16) if arr.dtype == np.int32 else arr  # 16-bit samples travel as int32


class Sink(Protocol):
    """Takes one image's output rows, top to bottom, and commits them atomically, or discards them."""

    def push(self, y0: int, y: torch.Tensor) -> None: ...

    def commit(self) -> tuple[float, float]:
        """Make the outputs files (input and output MP); OutputExistsError if another run wrote the main one."""
        ...

    def discard(self) -> None:
        """The image failed: nothing of it may remain."""
        ...


class Outputs:
    """The files of one job as its rows arrive (a Sink): arrays in memory, encoded and committed by a
    writer thread, or tiled BigTIFFs written band by band to temporary files; ``commit`` commits them,
    the extras first and the main output last."""

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
            arr = host_array(t)
            if self.streamed:
                if name not in self.writers:
                    c = arr.shape[2]
                    self.writers[name] = TiledTiffWriter(self.tmps[name], h, w, c, arr.dtype, **self.task.tiff(name, c))
                self.writers[name].push(arr)
            else:
                if name not in self.arrays:
                    self.arrays[name] = np.empty((h, w, arr.shape[2]), arr.dtype)
                self.arrays[name][y0:y0 + n] = arr

    def commit(self) -> tuple[float, float]:
        return self._commit_streamed() if self.streamed else self._encode()

    def _encode(self) -> tuple[float, float]:
        """Encode and commit the in-memory outputs (run by a writer thread); input and output MP."""
        for name in self._order():
            try:
                self.task.encode(name, self.arrays[name], self.meta, self.paths[name], self.opts)
            except OutputExistsError:
                if name == self.task.main:
                    raise
                # extras that a killed run left behind are kept unless --overwrite
        return self._mp()

    def _commit_streamed(self) -> tuple[float, float]:
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
