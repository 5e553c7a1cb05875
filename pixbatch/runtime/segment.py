"""The segment pipeline: discover -> decode (workers) -> blended tiles -> post -> write.

Images are decoded whole (in DataLoader workers) up to the decompression-bomb limit; tiled (Big)TIFFs
are read region by region and their outputs streamed tile by tile into tiled BigTIFFs, so a
20000 x 20000 slide needs memory for one band of tiles only. Each image yields a mask (binary 0/255,
or class indices with a palette) and optionally a probability TIFF and a colour overlay; the mask is
written last, so its presence means the image is finished (resume skips it).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pixbatch.io.atomic import OutputExistsError, check_tiff_complete, commit, temp_path, write_bytes
from pixbatch.io.decode import DEFAULT_MAX_PIXELS, DecodeError, ImageMeta
from pixbatch.io.discover import Job, Plan
from pixbatch.io.encode import EncodeOptions, write_image
from pixbatch.io.regions import RegionSource, TiffRegionReader, TiledTiffWriter, is_tiled_tiff
from pixbatch.runtime.blend import predict_bands
from pixbatch.runtime.pipeline import (
    Report,
    _DecodeSet,
    decode_workers,
    device_pixel_budget,
    is_oom,
)
from pixbatch.runtime.prepare import ModelFailedError, Runner

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 128
BINARY_COLOR = (255, 0, 0)


@dataclass
class SegmentOptions:
    tile: int = DEFAULT_TILE  # window size in px
    overlap: int = DEFAULT_OVERLAP  # px shared by neighbouring windows (blended)
    batch_size: int = 0  # windows per batch; 0 = from the memory budget
    threshold: float | None = None  # binary models; None = the checkpoint's (else 0.5)
    probabilities: str | None = None  # None, "8bit" or "float"
    overlay: bool = False
    overlay_alpha: float = 0.5
    workers: int | None = None
    writers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    encode: EncodeOptions = field(default_factory=EncodeOptions)


def palette(n: int = 256) -> np.ndarray:
    """Distinct colours for class indices (0 = black): bits of the index spread over R, G and B."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def extra_paths(dst: Path, streamed: bool) -> tuple[Path, Path]:
    """Probability map and overlay written beside the mask."""
    return dst.with_name(f"{dst.stem}_prob.tif"), dst.with_name(f"{dst.stem}_overlay{'.tif' if streamed else '.png'}")


class _Post:
    """Turns blended logits into the outputs' pixels, band by band, on the device."""

    def __init__(self, runner: Runner, opts: SegmentOptions) -> None:
        self.classes = runner.info.out_channels
        training = runner.info.training or {}
        self.threshold = opts.threshold if opts.threshold is not None else float(training.get("threshold", 0.5))
        self.opts = opts
        self.device = runner.device
        self.colors = torch.from_numpy(palette()).to(runner.device)
        if self.classes == 1:
            self.colors[1] = torch.tensor(BINARY_COLOR)

    def __call__(self, logits: torch.Tensor, pixels: np.ndarray | None) -> dict[str, np.ndarray]:
        out = {}
        if self.classes == 1:
            prob = torch.sigmoid(logits)
            cls = (prob[0] > self.threshold).to(torch.uint8)
            out["mask"] = (cls * 255).unsqueeze(-1)
        else:
            prob = torch.softmax(logits, dim=0)
            cls = prob.argmax(0).to(torch.uint8)
            out["mask"] = cls.unsqueeze(-1)
        if self.opts.probabilities == "8bit":
            out["prob"] = prob.mul(255).round_().to(torch.uint8).permute(1, 2, 0)
        elif self.opts.probabilities == "float":
            out["prob"] = prob.permute(1, 2, 0).contiguous()
        if self.opts.overlay:
            rgb = _rgb8(pixels, self.device)
            color = self.colors[cls.long()].float()
            a = (cls > 0).unsqueeze(-1).float() * self.opts.overlay_alpha
            out["overlay"] = (rgb * (1 - a) + color * a).round_().to(torch.uint8)
        return {k: v.cpu().numpy() for k, v in out.items()}


def _rgb8(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Input rows as (h, w, 3) float 0-255 for the overlay: gray repeated, alpha dropped, 16-bit scaled."""
    c = pixels.shape[2]
    color = pixels[:, :, : c - 1] if c in (2, 4) else pixels
    t = torch.from_numpy(np.ascontiguousarray(color)).to(device).float()
    if pixels.dtype == np.uint16:
        t = t / 257.0
    return t.expand(-1, -1, 3) if t.shape[2] == 1 else t


class _ArraySink:
    """Collects bands of one output into an array; the writer encodes it when the image is done."""

    def __init__(self, height: int, width: int, sample: np.ndarray) -> None:
        self.arr = np.empty((height, width, sample.shape[2]), sample.dtype)

    def push(self, y0: int, rows: np.ndarray) -> None:
        self.arr[y0:y0 + rows.shape[0]] = rows


def _write_mask(arr: np.ndarray, classes: int, dst: Path, opts: EncodeOptions) -> None:
    if classes == 1:
        write_image(arr, ImageMeta("L", 8, "PNG"), dst, opts)
        return
    from PIL import Image

    im = Image.fromarray(arr[:, :, 0], "P")
    im.putpalette(palette().tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=opts.png_compression)
    write_bytes(buf.getbuffer(), dst, overwrite=opts.overwrite)


def _write_prob(arr: np.ndarray, dst: Path, opts: EncodeOptions) -> None:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr[:, :, 0] if arr.shape[2] == 1 else arr, photometric="minisblack",
                     compression="zlib" if opts.png_compression else None)
    write_bytes(buf.getbuffer(), dst, overwrite=opts.overwrite)


def _write_extra(write, *args) -> None:
    """Extras of an image that a killed run left behind are kept unless --overwrite."""
    try:
        write(*args)
    except OutputExistsError:
        pass


class Segmenter:
    """Runs one image (in memory or region by region) through the blended-tile predictor."""

    def __init__(self, runner: Runner, opts: SegmentOptions) -> None:
        self.runner, self.opts = runner, opts
        self.post = _Post(runner, opts)
        self.fp32_reruns = 0  # windows recomputed in fp32 by the precision guard
        if opts.batch_size:
            self.batch = opts.batch_size
        else:
            self.batch = max(1, device_pixel_budget(runner) // (opts.tile * opts.tile)) if runner.device.type == "cuda" else 1

    def _count_reruns(self, n: int) -> None:
        self.fp32_reruns += n

    def bands(self, source):
        """(y0, outputs) per band, with OOM back-off: the batch halves and the image restarts without
        emitting again the bands already emitted (the band layout does not depend on the batch); at
        batch 1 the image fails."""
        emitted = 0
        while True:
            try:
                for y0, logits in predict_bands(self.runner, source, self.opts.tile, self.opts.overlap, self.batch,
                                                on_rerun=self._count_reruns):
                    if y0 < emitted:
                        continue
                    pixels = source.read_rows(y0, y0 + logits.shape[1]) if self.opts.overlay else None
                    yield y0, self.post(logits, pixels)
                    emitted = y0 + logits.shape[1]
                return
            except Exception as exc:
                if not is_oom(exc) or self.batch == 1:
                    raise
                self.batch = max(1, self.batch // 2)
                if self.runner.device.type == "cuda":
                    torch.cuda.empty_cache()

    def run_in_memory(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        source = RegionSource(pixels)
        sinks: dict[str, _ArraySink] = {}
        for y0, outs in self.bands(source):
            for k, rows in outs.items():
                if k not in sinks:
                    sinks[k] = _ArraySink(source.height, source.width, rows)
                sinks[k].push(y0, rows)
        return {k: s.arr for k, s in sinks.items()}

    def run_streamed(self, src: Path, dst: Path, progress: bool = False, book=None) -> tuple[int, int]:
        """Huge TIFF in, tiled BigTIFF outputs, written as the bands arrive. Returns (height, width).
        Outputs go to temporary files; the extras are committed first and the mask last. ``progress``
        shows a bar of rows done, since one image can take minutes."""
        from tqdm import tqdm

        opts = self.opts
        prob_dst, overlay_dst = extra_paths(dst, streamed=True)
        targets = {"mask": dst}
        if opts.probabilities:
            targets["prob"] = prob_dst
        if opts.overlay:
            targets["overlay"] = overlay_dst
        tmps = {k: temp_path(p) for k, p in targets.items()}
        reader = TiffRegionReader(src)
        if book is not None:
            book.decoded(src, reader.frames, reader.notes)
        writers: dict[str, TiledTiffWriter] = {}
        try:
            h, w = reader.height, reader.width
            writers["mask"] = TiledTiffWriter(tmps["mask"], h, w, 1, np.uint8, photometric="minisblack")
            if "prob" in tmps:
                dtype = np.uint8 if opts.probabilities == "8bit" else np.float32
                writers["prob"] = TiledTiffWriter(tmps["prob"], h, w, self.post.classes, dtype,
                                                  photometric="minisblack")
            if "overlay" in tmps:
                writers["overlay"] = TiledTiffWriter(tmps["overlay"], h, w, 3, np.uint8, photometric="rgb")
            rows_bar = tqdm(total=h, unit="row", desc=src.name, leave=False, disable=not progress, file=sys.stderr,
                            dynamic_ncols=True)
            for _, outs in self.bands(reader):
                for k, rows in outs.items():
                    writers[k].push(rows)
                rows_bar.update(outs["mask"].shape[0])
            rows_bar.close()
            for k in list(writers):
                writers.pop(k).close()
            for tmp in tmps.values():  # all there on disk before any of them is committed
                check_tiff_complete(tmp)
            for k in [k for k in tmps if k != "mask"]:
                _write_extra(commit, tmps[k], targets[k], opts.encode.overwrite)
            commit(tmps["mask"], dst, opts.encode.overwrite)
        finally:
            for wr in writers.values():
                wr.abort()
            reader.close()
            for tmp in tmps.values():
                tmp.unlink(missing_ok=True)
        return h, w


def segment_images(dst: Path, runner: Runner, opts: SegmentOptions, plan: Plan, *, progress: bool = False,
                   log=print, info=None, report: Report | None = None) -> Report:
    """Segment every planned job and write its outputs. Never raises for a bad file."""
    from pixbatch.runtime.jobs import JobBook

    report = report if report is not None else Report()
    book = JobBook(plan, report, writers=opts.writers, progress=progress, log=log, info=info)
    streamed = [j for j in plan.todo if j.dst.suffix == ".tif" and is_tiled_tiff(j.src)]
    in_memory = [j for j in plan.todo if j not in streamed]
    workers = decode_workers(opts.workers, len(in_memory))
    seg = Segmenter(runner, opts)
    classes = runner.info.out_channels
    report.settings = {
        "model": runner.info.name, "arch": runner.info.arch, "classes": classes, "device": str(runner.device),
        "precision": str(runner.dtype).removeprefix("torch."), "tile": opts.tile, "overlap": opts.overlap,
        "batch": seg.batch, "threshold": seg.post.threshold if classes == 1 else None,
        "streamed": len(streamed), "workers": workers, "writers": book.writers,
    }

    def encode(job: Job, outs: dict[str, np.ndarray], meta: ImageMeta) -> tuple[float, float]:
        prob_dst, overlay_dst = extra_paths(job.dst, streamed=False)
        if "prob" in outs:
            _write_extra(_write_prob, outs["prob"], prob_dst, opts.encode)
        if "overlay" in outs:
            _write_extra(write_image, outs["overlay"], ImageMeta("RGB", 8, "PNG", meta.icc), overlay_dst, opts.encode)
        _write_mask(outs["mask"], classes, job.dst, opts.encode)  # last: its presence marks the image done
        h, w = outs["mask"].shape[:2]
        return h * w / 1e6, h * w / 1e6

    loader = DataLoader(_DecodeSet(in_memory, opts.max_pixels, book.owner), batch_size=None, shuffle=False,
                        num_workers=workers, prefetch_factor=4 if workers else None)
    try:
        for i, pixels, meta, error in loader:
            job = in_memory[i]
            if not book.accept(job.src, error, meta):
                continue
            try:
                outs = seg.run_in_memory(pixels.numpy())
            except Exception as exc:
                book.fail(job.src, _model_error(exc))
                continue
            book.write(job.src, job.dst, lambda job=job, outs=outs, meta=meta: encode(job, outs, meta))
        for job in streamed:
            if not book.claim(job.dst):
                book.elsewhere(job.src)
                continue
            try:
                h, w = seg.run_streamed(job.src, job.dst, progress, book)
            except OutputExistsError:
                book.skipped()
                continue
            except Exception as exc:
                book.fail(job.src, _model_error(exc))
                continue
            book.done(h * w / 1e6, h * w / 1e6)
        book.wait()
    finally:
        book.close()
        report.fp32_reruns = seg.fp32_reruns
    return report


def _model_error(exc: Exception) -> str:
    if is_oom(exc):
        return "out of memory even one window at a time; use a smaller --tile"
    if isinstance(exc, (DecodeError, ModelFailedError, ValueError, OSError)):
        return str(exc)
    return f"segmentation failed ({type(exc).__name__}: {exc})"
