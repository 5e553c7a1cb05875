"""Encode an HWC uint8/uint16 array with its metadata, and write it atomically.

The bytes go to a temporary file in the destination folder, which is then renamed into place, so
an output is either complete or absent. Without ``overwrite`` the final step is a hard link, which
fails rather than replace a file that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixbatch.io.decode import ImageMeta
from pixbatch.io.discover import TEMP_MARK


@dataclass(frozen=True)
class EncodeOptions:
    quality: int = 95  # JPEG/WebP
    png_compression: int = 1  # zlib level 0-9: 1 encodes ~4x faster than 6 for ~15 % larger files
    overwrite: bool = False


class OutputExistsError(FileExistsError):
    pass


def write_image(arr: np.ndarray, meta: ImageMeta, dst: Path, opts: EncodeOptions) -> None:
    """Encode ``arr`` (HWC, channels as in ``meta.mode``) to the format named by ``dst``'s suffix."""
    fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tif": "tiff",
           ".tiff": "tiff"}[dst.suffix.lower()]
    with atomic_path(dst, opts.overwrite) as tmp, open(tmp, "wb") as f:
        _encode(arr, meta, f, fmt, opts)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(dst: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``dst``; when the block completes it becomes ``dst`` in one step
    (never clobbering an existing file unless ``overwrite``); on any error it is deleted."""
    tmp = temp_path(dst)
    try:
        yield tmp
        commit(tmp, dst, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def temp_path(dst: Path) -> Path:
    """A fresh temporary name beside ``dst`` (hidden; removed by later runs if this process dies)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst.parent / f".{dst.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}.tmp"


def commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place (hard link: never replaces a file unless ``overwrite``)."""
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # atomic and never replaces an existing file
    except FileExistsError:
        raise OutputExistsError(f"{dst} already exists (use --overwrite to replace it)") from None
    except OSError:  # file systems without hard links: check, then rename
        if dst.exists():
            raise OutputExistsError(f"{dst} already exists (use --overwrite to replace it)") from None
        os.replace(tmp, dst)


def _encode(arr: np.ndarray, meta: ImageMeta, f, fmt: str, opts: EncodeOptions) -> None:
    if fmt == "tiff":
        return _write_tiff(arr, meta, f, opts)
    if arr.dtype == np.uint16:
        if fmt == "png":
            f.write(encode_png16(arr, meta.icc, meta.exif, opts.png_compression))
            return
        arr = _to_uint8(arr)  # JPEG and WebP hold 8 bits
    from PIL import Image

    if fmt == "jpeg" and arr.shape[2] in (2, 4):
        arr = _flatten_on_white(arr)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    im = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode)
    kwargs: dict = {}
    if meta.icc:
        kwargs["icc_profile"] = meta.icc
    if meta.exif:
        kwargs["exif"] = meta.exif
    if fmt == "png":
        kwargs["compress_level"] = opts.png_compression
    elif fmt == "jpeg":
        kwargs.update(quality=opts.quality, subsampling=0 if opts.quality >= 90 else 2)
    elif fmt == "webp":
        kwargs.update(quality=opts.quality, method=4)
    im.save(f, format=fmt.upper(), **kwargs)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _flatten_on_white(arr: np.ndarray) -> np.ndarray:
    """JPEG has no alpha: composite over white."""
    color, alpha = arr[:, :, :-1].astype(np.float32), arr[:, :, -1:].astype(np.float32) / 255
    return np.rint(color * alpha + 255 * (1 - alpha)).astype(np.uint8)


def _write_tiff(arr: np.ndarray, meta: ImageMeta, f, opts: EncodeOptions) -> None:
    import tifffile

    channels = arr.shape[2]
    kwargs: dict = {"photometric": "rgb" if channels >= 3 else "minisblack",
                    "compression": "zlib" if opts.png_compression else None}
    if channels in (2, 4):
        kwargs["extrasamples"] = ["unassalpha"]
    if meta.icc:
        kwargs["iccprofile"] = meta.icc
    tifffile.imwrite(f, arr[:, :, 0] if channels == 1 else arr, **kwargs)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(arr: np.ndarray, icc: bytes | None = None, exif: bytes | None = None, level: int = 1) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA), which Pillow cannot write for colour images.

    Every row uses the PNG "Up" filter (byte-wise difference to the row above), vectorised in numpy."""
    h, w, c = arr.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter requires
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), filtered], axis=1)
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    data = zlib.compress(raw.tobytes(), level)
    step = 1 << 20
    out += [_png_chunk(b"IDAT", data[i:i + step]) for i in range(0, len(data), step)] or [_png_chunk(b"IDAT", data)]
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)
