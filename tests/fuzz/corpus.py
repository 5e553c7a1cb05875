"""A seeded generator of hostile image files (nothing binary is kept in git), and of damaged ONNX models
and videos.

``make_corpus(folder, n, seed)`` writes at least ``n`` files into ``folder``: small valid seeds of every
format pixbatch reads (PNG, JPEG, WebP, TIFF, GIF, BMP) in many modes, then damaged and lying variants:
random byte flips, truncations at random offsets, swapped headers, garbage with image extensions, PNG
IHDRs declaring 100000 x 100000, zlib bombs in zTXt and iCCP chunks, 500-frame GIFs, multi-page TIFFs,
1-bit / I;16 / I / F modes, CMYK JPEG, palette with tRNS, all EXIF orientations, and file names with
spaces, unicode, newlines and a leading dash. Returns {file name: how it was made}.

    python -m tests.fuzz.corpus FOLDER [N]     # to look at one
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, *, extra: bytes = b"", rows: bytes | None = None) -> bytes:
    """An 8-bit RGB PNG with any IHDR size (the pixel data need not match it) and extra chunks."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    if rows is None:
        rows = b"".join(b"\0" + bytes(3 * min(width, 4)) for _ in range(min(height, 4)))
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def encoded(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def seeds(rng: np.random.Generator) -> dict[str, tuple[bytes, str]]:
    """Valid small images: name -> (bytes, what)."""
    def photo(h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 127 // max(h + w - 2, 1)], -1)
        return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)

    rgb = Image.fromarray(photo(24, 32))
    out: dict[str, tuple[bytes, str]] = {}
    out["seed.png"] = (encoded(rgb, "PNG"), "valid RGB PNG")
    out["seed.jpg"] = (encoded(rgb, "JPEG", quality=90), "valid JPEG")
    out["seed.webp"] = (encoded(rgb, "WEBP", quality=90), "valid WebP")
    out["seed.tif"] = (encoded(rgb, "TIFF"), "valid TIFF")
    out["seed.gif"] = (encoded(rgb.quantize(32), "GIF"), "valid GIF")
    out["seed.bmp"] = (encoded(rgb, "BMP"), "valid BMP")
    out["gray.png"] = (encoded(rgb.convert("L"), "PNG"), "8-bit gray")
    out["rgba.png"] = (encoded(rgb.convert("RGBA"), "PNG"), "RGBA")
    out["la.png"] = (encoded(rgb.convert("LA"), "PNG"), "gray + alpha")
    out["bilevel.png"] = (encoded(rgb.convert("1"), "PNG"), "1-bit")
    out["i16.png"] = (encoded(Image.fromarray(photo(24, 32)[:, :, 0].astype(np.uint16) * 257), "PNG"),
                      "16-bit gray (I;16)")
    out["int32.tif"] = (encoded(Image.fromarray(photo(24, 32)[:, :, 0].astype(np.int32) * 1000), "TIFF"),
                        "32-bit int (I)")
    out["float.tif"] = (encoded(Image.fromarray(photo(24, 32)[:, :, 0].astype(np.float32) / 255), "TIFF"),
                        "32-bit float (F)")
    out["cmyk.jpg"] = (encoded(rgb.convert("CMYK"), "JPEG"), "CMYK JPEG")
    pal = rgb.quantize(16)
    out["palette_trns.png"] = (encoded(pal, "PNG", transparency=0), "palette + tRNS")
    for o in range(1, 9):
        out[f"orientation_{o}.jpg"] = (encoded(rgb, "JPEG", exif=exif_orientation(o)), f"EXIF orientation {o}")
    frames = [Image.fromarray(photo(8, 8)).quantize(8) for _ in range(500)]
    out["frames500.gif"] = (encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), "500-frame GIF")
    pages = [Image.fromarray(photo(16, 16)) for _ in range(3)]
    out["pages3.tif"] = (encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:]), "3-page TIFF")
    names = {"with space.png": "a space in the name", "ünïcødé ✓.png": "unicode name",
             "new\nline.png": "a newline in the name", "-leading-dash.png": "a leading dash"}
    for name, what in names.items():
        out[name] = (encoded(rgb, "PNG"), what)
    return out


def specials() -> dict[str, tuple[bytes, str]]:
    """Lying headers and bombs."""
    out: dict[str, tuple[bytes, str]] = {}
    out["ihdr_100000.png"] = (raw_png(100000, 100000), "IHDR declaring 100000 x 100000")
    out["ihdr_1x100000.png"] = (raw_png(1, 100000), "IHDR declaring 1 x 100000")
    out["ihdr_zero.png"] = (raw_png(0, 0), "IHDR declaring 0 x 0")
    bomb = zlib.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in about 64 KiB
    out["ztxt_bomb.png"] = (raw_png(4, 4, extra=png_chunk(b"zTXt", b"Comment\0\0" + bomb)), "zTXt zlib bomb")
    out["iccp_bomb.png"] = (raw_png(4, 4, extra=png_chunk(b"iCCP", b"icc\0\0" + bomb)), "iCCP zlib bomb")
    out["idat_bomb.png"] = (raw_png(4, 4, rows=b"\0" * (32 << 20)), "IDAT far larger than the IHDR")
    out["empty.png"] = (b"", "empty file")
    out["signature_only.png"] = (PNG_SIGNATURE, "PNG signature only")
    out["jpeg_soi_only.jpg"] = (b"\xff\xd8", "JPEG start marker only")
    out["tiff_header_only.tif"] = (b"II*\0\x08\0\0\0", "TIFF header only")
    out["gif_header_only.gif"] = (b"GIF89a", "GIF header only")
    return out


def damage(files: dict[str, tuple[bytes, str]], valid: list[str], n: int, pick: random.Random) -> None:
    """Add truncations and bit flips of ``valid`` files (and, every third, of any file made so far) to
    ``files`` until it holds ``n``."""
    i = 0
    while len(files) < n:
        name = valid[i % len(valid)] if i % 3 else pick.choice(list(files))
        data = files[name][0]
        if not data:
            i += 1
            continue
        stem, ext = Path(name).stem.replace("\n", "_"), Path(name).suffix or ".png"
        if i % 2:
            cut = pick.randrange(0, len(data))
            files[f"trunc_{i:03d}_{stem}{ext}"] = (data[:cut], f"{name} cut at byte {cut} of {len(data)}")
        else:
            buf = bytearray(data)
            flips = pick.randrange(1, 24)
            for _ in range(flips):
                buf[pick.randrange(len(buf))] ^= 1 << pick.randrange(8)
            files[f"flip_{i:03d}_{stem}{ext}"] = (bytes(buf), f"{name} with {flips} bit flips")
        i += 1


def write(folder: Path, files: dict[str, tuple[bytes, str]]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: what for name, (_, what) in files.items()}


def make_corpus(folder: Path, n: int = 300, seed: int = 0) -> dict[str, str]:
    """Write at least ``n`` hostile files (seeded) into ``folder``; {name: what}."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    files: dict[str, tuple[bytes, str]] = {**seeds(rng), **specials()}
    valid = [k for k in files if k.startswith(("seed.", "gray", "rgba", "la.", "cmyk", "orientation_1"))]
    # swapped headers: one format's first bytes on another's body
    for i, (a, b) in enumerate((a, b) for a in valid[:6] for b in valid[:6] if a != b):
        head, body = files[a][0][:16], files[b][0]
        files[f"swap_{i:02d}{Path(b).suffix}"] = (head + body[16:], f"{a}'s header on {b}")
    # garbage with image extensions
    for i, ext in enumerate([".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".bmp"] * 3):
        files[f"garbage_{i:02d}{ext}"] = (rng.bytes(pick.randrange(1, 4096)), "random bytes")
    # truncations and byte flips of every seed, until there are enough
    damage(files, valid, n, pick)
    return write(folder, files)


def make_onnx_corpus(folder: Path, valid: bytes, n: int = 40, seed: int = 0) -> dict[str, str]:
    """At least ``n`` damaged copies of ``valid`` (a working ONNX model's bytes), and garbage named .onnx."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    files = {"valid.onnx": (valid, "a working model"), "empty.onnx": (b"", "empty file")}
    for i in range(4):
        files[f"garbage_{i}.onnx"] = (rng.bytes(pick.randrange(1, 4096)), "random bytes")
    damage(files, ["valid.onnx"], n, pick)
    return write(folder, files)


def make_video_corpus(folder: Path, clips: dict[str, bytes], n: int = 30, seed: int = 0) -> dict[str, str]:
    """At least ``n`` files: ``clips`` (working videos' bytes by name), garbage with video extensions, and
    truncations and bit flips of the clips."""
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    files = {name: (data, "a working clip") for name, data in clips.items()}
    for i, ext in enumerate((".mp4", ".mkv", ".mov", ".webm")):
        files[f"garbage_{i}{ext}"] = (rng.bytes(pick.randrange(1, 8192)), "random bytes")
    files["empty.mp4"] = (b"", "empty file")
    damage(files, list(clips), n, pick)
    return write(folder, files)


if __name__ == "__main__":
    made = make_corpus(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300)
    print(f"{len(made)} files in {sys.argv[1]}")
