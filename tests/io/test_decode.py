import io
import re

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from pixbatch.io.decode import DecodeError, apply_orientation, decode_image
from pixbatch.io.encode import encode_png16
from tests.conftest import exif_with, gradient_rgb, srgb_icc


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(orientation):
    a = gradient_rgb(5, 7)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", exif=exif_with(orientation))
    buf.seek(0)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
    assert np.array_equal(apply_orientation(a, orientation), expected)


def test_jpeg_orientation_applied_and_removed_from_exif(tmp_path):
    a = gradient_rgb(20, 40)
    path = tmp_path / "rot.jpg"
    Image.fromarray(a).save(path, quality=95, exif=exif_with(6, t270="a description"))
    arr, meta = decode_image(path)
    assert arr.shape == (40, 20, 3)  # rotated upright: width and height swap
    exif = Image.Exif()
    exif.load(meta.exif)
    assert 0x0112 not in exif and exif[270] == "a description"


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_keeps_all_bits(tmp_path, channels):
    a = np.random.default_rng(channels).integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    path = tmp_path / "deep.png"
    icc = srgb_icc() if channels >= 3 else None  # an RGB profile is invalid on a grayscale PNG
    path.write_bytes(encode_png16(a, icc=icc))
    arr, meta = decode_image(path)
    assert arr.dtype == np.uint16 and meta.bits == 16 and np.array_equal(arr, a)
    assert meta.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    assert meta.icc == icc


def test_16bit_gray_png_written_by_pillow(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (6, 5), dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)  # mode I;16
    arr, meta = decode_image(path)
    assert meta.bits == 16 and np.array_equal(arr[:, :, 0], a)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_tiff_with_orientation(tmp_path, channels):
    a = np.random.default_rng(0).integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    path = tmp_path / "deep.tif"
    extra = [(274, "H", 1, 8, True)]  # orientation 8: rotate 90 degrees counter-clockwise
    kwargs = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    tifffile.imwrite(path, a[:, :, 0] if channels == 1 else a, photometric="rgb" if channels > 2 else "minisblack",
                     extratags=extra, **kwargs)
    arr, meta = decode_image(path)
    assert meta.bits == 16 and arr.dtype == np.uint16
    assert np.array_equal(arr, np.rot90(a, 1))


def test_palette_with_transparency_becomes_rgba(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    path = tmp_path / "pal.png"
    im.save(path, transparency=0)
    arr, meta = decode_image(path)
    assert meta.mode == "RGBA" and arr[0, 0, 3] == 0 and tuple(arr[1, 1]) == (0, 255, 0, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    arr, meta = decode_image(path)
    assert meta.mode == "RGB" and arr[4, 4, 0] > 200 and arr[4, 4, 1] < 60


def test_bilevel_becomes_grayscale(tmp_path):
    path = tmp_path / "bw.png"
    Image.new("1", (8, 8), 1).save(path)
    arr, meta = decode_image(path)
    assert meta.mode == "L" and arr.dtype == np.uint8 and arr.max() == 255


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("notes.png", b"this is not an image at all", "not an image (unrecognised format)"),
    ],
)
def test_bad_files_give_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=rf"^{re.escape(reason)}$"):
        decode_image(path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(gradient_rgb(64, 64)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(path)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(path)  # compresses to a few kB
    assert path.stat().st_size < 100_000
    with pytest.raises(DecodeError, match=r"4000x3000 = 12 MP, above the limit of 10 MP .*--max-pixels"):
        decode_image(path, max_pixels=10_000_000)
    assert decode_image(path, max_pixels=0)[0].shape == (3000, 4000, 1)


def test_decode_rgb8_is_upright_rgb_for_every_mode(tmp_path):
    """What SR evaluation and training read: EXIF orientation applied, gray repeated, alpha dropped,
    16-bit rounded to 8 bits."""
    from pixbatch.io.decode import decode_rgb8
    from pixbatch.io.encode import encode_png16

    a = gradient_rgb(6, 10)
    Image.fromarray(a).save(tmp_path / "rot.png", exif=exif_with(6))  # rotated 90 degrees clockwise
    got = decode_rgb8(tmp_path / "rot.png")
    assert got.shape == (10, 6, 3) and np.array_equal(got, np.rot90(a, -1))
    Image.fromarray(a[..., 0]).save(tmp_path / "gray.png")
    assert np.array_equal(decode_rgb8(tmp_path / "gray.png"), np.repeat(a[..., :1], 3, axis=2))
    Image.fromarray(np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])).save(tmp_path / "rgba.png")
    assert np.array_equal(decode_rgb8(tmp_path / "rgba.png"), a)
    (tmp_path / "deep.png").write_bytes(encode_png16(a.astype(np.uint16) * 257))
    assert np.array_equal(decode_rgb8(tmp_path / "deep.png"), a)
