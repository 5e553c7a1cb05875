"""Huge images by region: read rows of a tiled or stripped (Big)TIFF without decoding the rest, and
write an image tile by tile into a tiled BigTIFF, so memory is bounded by a band, not by the image.

``RegionSource`` gives the same row interface over an image decoded whole, so one predictor serves
both."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pixbatch.io.decode import DecodeError, captured_messages

OUT_TILE = 256  # tile edge of the TIFFs we write


class RegionSource:
    """Rows of an HWC array held in memory (what decode_image returned)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.height, self.width, self.channels = arr.shape
        self.dtype = arr.dtype

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        return self.arr[y0:y1]

    def close(self) -> None:
        pass


def is_tiled_tiff(path: Path) -> bool:
    """A TIFF whose first page is stored in tiles: read region by region, written as tiled BigTIFF."""
    import tifffile

    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with captured_messages(), tifffile.TiffFile(path) as tf:  # a damaged file's complaints stay off stderr
            return bool(tf.pages[0].is_tiled)
    except Exception:  # not a readable TIFF: the decoder reports it properly
        return False


class TiffRegionReader:
    """Rows [y0, y1) of a TIFF's first page, decoding only the tiles (or strips) they touch.

    Decoded segments of the current band are cached and dropped once the reader moves past them;
    ``segments_decoded`` counts decodes (tests use it to show the image is never read whole)."""

    def __init__(self, path: Path) -> None:
        import tifffile

        with captured_messages() as notes:
            self.tf = tifffile.TiffFile(path)
            page = self.tf.pages[0]
            self.frames = len(self.tf.pages)
        self.notes = tuple(notes)
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            self.tf.close()
            raise ValueError("planar (separate) TIFF samples are not supported for region reading; "
                             "convert to contiguous samples")
        if page.dtype not in (np.uint8, np.uint16):
            self.tf.close()
            raise ValueError(f"TIFF sample type {page.dtype} is not supported (8- or 16-bit unsigned)")
        self.page = page
        self.height, self.width = int(page.imagelength), int(page.imagewidth)
        self.channels = int(page.samplesperpixel)
        self.dtype = np.dtype(page.dtype)
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = int(page.rowsperstrip or self.height), self.width
            self.seg_h = min(self.seg_h, self.height)
        self.across = -(-self.width // self.seg_w)
        self.cache: dict[int, np.ndarray] = {}  # segment row -> decoded (seg_h, width, C)
        self.segments_decoded = 0
        self.lock = threading.Lock()

    def _segment_row(self, r: int) -> np.ndarray:
        if r in self.cache:
            return self.cache[r]
        fh = self.tf.filehandle
        row = np.zeros((self.seg_h, self.across * self.seg_w, self.channels), self.dtype)
        for c in range(self.across):
            index = r * self.across + c
            offset, count = self.page.dataoffsets[index], self.page.databytecounts[index]
            if count == 0:
                continue  # sparse tile: zeros
            try:
                with self.lock:
                    fh.seek(offset)
                    data = fh.read(count)
                tile, _, shape = self.page.decode(data, index, jpegtables=self.page.jpegtables)
                if tile is None:
                    raise ValueError("no data")
            except Exception as exc:
                raise DecodeError(f"truncated or corrupt TIFF: segment {index} cannot be decoded ({exc})") from None
            tile = np.asarray(tile).reshape(-1, tile.shape[-3], tile.shape[-2], tile.shape[-1])[0]
            h = min(tile.shape[0], self.seg_h)
            row[:h, c * self.seg_w:c * self.seg_w + tile.shape[1]] = tile[:h]
            self.segments_decoded += 1
        row = row[:, : self.width]
        self.cache[r] = row
        return row

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        r0, r1 = y0 // self.seg_h, (y1 - 1) // self.seg_h
        for r in [r for r in self.cache if r < r0]:
            del self.cache[r]
        parts = []
        for r in range(r0, r1 + 1):
            seg = self._segment_row(r)
            top = r * self.seg_h
            parts.append(seg[max(y0 - top, 0): min(y1 - top, self.seg_h)])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self.cache.clear()
        self.tf.close()


class TiledTiffWriter:
    """Writes an (H, W[, C]) image into a tiled BigTIFF from row bands pushed in order.

    tifffile pulls tiles from an iterator; that iterator runs in a thread fed by a small queue, so
    the caller pushes bands and memory holds at most a few tile rows."""

    def __init__(self, path: Path, height: int, width: int, channels: int, dtype, *, photometric: str,
                 compression: str | None = "zlib", extrasamples=None) -> None:
        import tifffile

        self.height, self.width, self.channels = height, width, channels
        self.dtype = np.dtype(dtype)
        self.pending = np.zeros((0, width, channels), self.dtype)
        self.rows_in = 0
        self.q: queue.Queue = queue.Queue(maxsize=4)
        shape = (height, width) if channels == 1 else (height, width, channels)
        from pixbatch.io.encode import TIFF_MARK

        kwargs = {"photometric": photometric, "compression": compression, "tile": (OUT_TILE, OUT_TILE), **TIFF_MARK}
        if channels > 1:
            kwargs["planarconfig"] = "contig"
        if extrasamples:
            kwargs["extrasamples"] = extrasamples
        self.error: BaseException | None = None
        self.ended = False  # the end marker (None) has been taken from the queue

        def run() -> None:
            try:
                with tifffile.TiffWriter(path, bigtiff=True) as tw:
                    tw.write(self._tiles(), shape=shape, dtype=self.dtype, **kwargs)
            except BaseException as exc:  # surfaced to the caller on push/close
                self.error = exc
                while not self.ended:  # drain so the producer never blocks
                    self.ended = self.q.get() is None

        self.thread = threading.Thread(target=run, name="pixbatch-tiff-writer", daemon=True)
        self.thread.start()

    def _tiles(self) -> Iterator[np.ndarray]:
        t = OUT_TILE
        while True:
            band = self.q.get()
            if band is None:
                self.ended = True
                return
            if self.channels == 1:
                band = band[..., 0]
            for x in range(0, self.width, t):
                tile = np.zeros((t, t) + band.shape[2:], self.dtype)
                block = band[:, x:x + t]
                tile[: block.shape[0], : block.shape[1]] = block
                yield tile

    def push(self, rows: np.ndarray) -> None:
        """Append rows (n, W, C) in order; full tile rows go to the file."""
        if self.error is not None:
            raise self.error
        self.pending = np.concatenate([self.pending, rows.reshape(rows.shape[0], self.width, self.channels)])
        self.rows_in += rows.shape[0]
        while self.pending.shape[0] >= OUT_TILE:
            self.q.put(self.pending[:OUT_TILE].copy())
            self.pending = self.pending[OUT_TILE:]

    def close(self) -> None:
        if self.rows_in != self.height and self.error is None:
            self.q.put(None)
            self.thread.join()
            raise RuntimeError(f"tiled TIFF got {self.rows_in} of {self.height} rows")
        if self.pending.shape[0]:
            self.q.put(self.pending)
            self.pending = self.pending[:0]
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self.q.put(None)
        self.thread.join()
