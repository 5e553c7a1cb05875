"""Sources: where the engine reads images from. Image files are claimed and decoded in DataLoader worker
processes (a bad file is an error record, never an exception); tiled (Big)TIFFs going to TIFFs are read
region by region (io/regions.py); float planes already on the device are rows too (``TensorSource``)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pixbatch.io.decode import DecodeError, ImageMeta, decode_image
from pixbatch.io.discover import Job
from pixbatch.io.regions import is_tiled_tiff
from pixbatch.runtime.jobs import claim_output

STREAM_SUFFIXES = (".tif", ".tiff")


class RowSource(Protocol):
    """What the engine reads an image from: rows of an array in memory, or of a huge TIFF by region."""

    height: int
    width: int

    def read_rows(self, y0: int, y1: int) -> Any: ...


class TensorSource:
    """Rows of float planes (K, C, H, W) already on the device."""

    def __init__(self, planes: torch.Tensor) -> None:
        self.planes = planes
        self.height, self.width = planes.shape[-2:]

    def read_rows(self, y0: int, y1: int) -> torch.Tensor:
        return self.planes[..., y0:y1, :]


DecodeRecord = tuple[int, Any, "ImageMeta | None", str]  # (index in the in-memory jobs, pixels, meta, error)


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


def streams(job: Job) -> bool:
    """A tiled (Big)TIFF going to a TIFF output is read region by region and written tile by tile."""
    return job.dst.suffix.lower() in STREAM_SUFFIXES and is_tiled_tiff(job.src)
