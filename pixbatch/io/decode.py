"""Decode any input to an HWC uint8/uint16 array with the metadata the writer needs.

Pillow reads 8-bit images; 16-bit PNGs go through torchvision's decoder and 16-bit TIFFs through
tifffile, because Pillow silently truncates 16-bit RGB to 8 bits. EXIF orientation is applied here,
once, for every path; ICC profile, EXIF (less orientation), alpha and bit depth travel as metadata.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb error threshold
ORIENTATION_TAG = 0x0112
MODES_BY_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# PNG metadata chunks (iCCP, eXIf, zTXt) may decompress to this much each and this much in all:
# large ICC profiles are real, and the bound still keeps a zlib bomb in a chunk from taking the memory.
PNG_CHUNK_LIMIT = 32 << 20
PNG_CHUNKS_TOTAL = 96 << 20


class DecodeError(Exception):
    """An input that cannot be turned into pixels; the message is the reason shown to the user."""


@dataclass
class ImageMeta:
    mode: str  # L, LA, RGB or RGBA (what the output will be)
    bits: int  # 8 or 16
    format: str  # decoder's name of the input format (PNG, JPEG, TIFF, ...)
    icc: bytes | None = None
    exif: bytes | None = None  # with the orientation tag removed (pixels are already upright)
    frames: int = 1  # frames or pages in the file; only the first is processed
    notes: tuple[str, ...] = ()  # decoder warnings (shown with -v), never printed by the libraries

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("LA", "RGBA")


def apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Make an HWC array upright according to its EXIF orientation (1-8)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: np.rot90(x, 2).transpose(1, 0, 2),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise DecodeError("image has no pixels")
    if max_pixels and width * height > max_pixels:
        raise DecodeError(
            f"image is {width}x{height} = {width * height / 1e6:.3g} MP, above the limit of "
            f"{max_pixels / 1e6:.3g} MP (possible decompression bomb); raise it with --max-pixels"
        )


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) >= 26 and head[12:16] == b"IHDR" else 8


def _exif_without_orientation(exif) -> bytes | None:
    if not exif:
        return None
    if ORIENTATION_TAG in exif:
        del exif[ORIENTATION_TAG]
    data = exif.tobytes()
    return data if len(data) > 8 else None


@contextlib.contextmanager
def captured_messages() -> Iterator[list[str]]:
    """Collect what the decoders would print on their own (Python warnings from Pillow, tifffile's
    log records) instead of letting it interleave with the report on stderr."""
    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning))
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def decode_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageMeta]:
    """Read one image. Raises DecodeError with a user-facing reason for anything unreadable."""
    with captured_messages() as notes:
        arr, meta = _decode_image(path, max_pixels)
    meta.notes = tuple(dict.fromkeys(n.replace("\n", " ").strip() for n in notes if n.strip()))
    return arr, meta


def _decode_image(path: Path, max_pixels: int) -> tuple[np.ndarray, ImageMeta]:
    from PIL import Image, PngImagePlugin, UnidentifiedImageError

    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, PNG_CHUNK_LIMIT)
    PngImagePlugin.MAX_TEXT_MEMORY = max(PngImagePlugin.MAX_TEXT_MEMORY, PNG_CHUNKS_TOTAL)
    frames = 1
    try:
        if path.stat().st_size == 0:
            raise DecodeError("empty file")
        if _is_tiff(path) and _tiff_is_high_depth(path):
            arr, orientation, icc, exif_bytes, fmt, frames = _decode_tiff(path, max_pixels)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.MAX_IMAGE_PIXELS = None  # we apply our own limit, with a clearer message
                with Image.open(path) as im:
                    frames = int(getattr(im, "n_frames", 1) or 1)
                    _check_size(path, im.width, im.height, max_pixels)
                    exif = im.getexif()
                    orientation = int(exif.get(ORIENTATION_TAG, 1) or 1)
                    icc = im.info.get("icc_profile") or None
                    fmt = im.format or "?"
                    if fmt == "PNG" and _png_bit_depth(path) == 16:
                        arr = _decode_png16(path)
                    else:
                        arr, icc = _decode_pillow(im, icc)
                    exif_bytes = _exif_without_orientation(exif)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, IndexError, struct.error) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated or corrupt file ({reason})"
        raise DecodeError(reason) from None
    arr = apply_orientation(arr, orientation)
    bits = 16 if arr.dtype == np.uint16 else 8
    return arr, ImageMeta(MODES_BY_CHANNELS[arr.shape[2]], bits, fmt, icc, exif_bytes, frames)


def _decode_pillow(im, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """8-bit (and 16-bit grayscale) Pillow images, normalised to L, LA, RGB or RGBA."""
    im.load()
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im)
        if a.dtype != np.uint16:
            if a.min() < 0 or a.max() > 65535:
                raise DecodeError(f"unsupported {mode} image with values outside 0..65535")
        return a.astype(np.uint16)[:, :, None], icc
    if mode == "F":
        raise DecodeError("32-bit floating-point images are not supported")
    if mode == "CMYK":
        im, icc = _cmyk_to_rgb(im, icc), _srgb_profile()
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    a = np.asarray(im)
    return (a[:, :, None] if a.ndim == 2 else a).copy(), icc


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _cmyk_to_rgb(im, icc: bytes | None):
    """Convert CMYK through its embedded profile to sRGB when it has one, naively otherwise."""
    if icc:
        try:
            import io

            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # a broken profile: fall back to the plain conversion
            pass
    return im.convert("RGB")


def _decode_png16(path: Path) -> np.ndarray:
    import torch
    from torchvision.io import ImageReadMode, decode_png

    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision >= 0.29 announces a move of its codecs to torchcodec; they still work on 0.19-0.29.
        warnings.simplefilter("ignore", DeprecationWarning)
        t = decode_png(data, ImageReadMode.UNCHANGED)
    return t.permute(1, 2, 0).contiguous().numpy().astype(np.uint16, copy=False)


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _tiff_is_high_depth(path: Path) -> bool:
    """True for TIFFs Pillow would truncate or cannot read: more than 8 bits per sample."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            return page.bitspersample > 8
    except Exception:  # let Pillow try it and report
        return False


def _decode_tiff(path: Path, max_pixels: int):
    """16-bit TIFF (gray, gray+alpha, RGB, RGBA) through tifffile, with orientation and ICC tags."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        _check_size(path, page.imagewidth, page.imagelength, max_pixels)
        if page.photometric == tifffile.PHOTOMETRIC.SEPARATED:
            raise DecodeError("16-bit CMYK TIFF is not supported")
        tags = page.tags
        orientation = int(tags["Orientation"].value) if "Orientation" in tags else 1
        icc = bytes(tags["InterColorProfile"].value) if "InterColorProfile" in tags else None
        a = page.asarray()
        planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1
        frames = len(tif.pages)
    if planar and a.ndim == 3:
        a = np.moveaxis(a, 0, -1)  # one plane per sample (S, H, W) -> interleaved (H, W, S)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise DecodeError(f"unsupported TIFF layout {a.shape}")
    if a.dtype.kind not in "ui" or a.dtype.itemsize > 2:
        raise DecodeError(f"unsupported {a.dtype} TIFF (pixbatch reads 8- and 16-bit integer images)")
    return a.astype(np.uint16), orientation, icc, None, "TIFF", frames


def rgb_samples(arr: np.ndarray) -> np.ndarray:
    """An HWC image's colour as (H, W, 3), at its own depth: alpha (of LA/RGBA) dropped, gray repeated."""
    color = arr[:, :, :-1] if arr.shape[2] in (2, 4) else arr
    return np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color


def decode_rgb8(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An upright (H, W, 3) uint8 RGB array, for evaluation and training on 8-bit RGB protocols:
    gray is repeated, alpha dropped, 16-bit samples rounded to 8 bits."""
    arr = rgb_samples(decode_image(path, max_pixels)[0])
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.ascontiguousarray(arr)
