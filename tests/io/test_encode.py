import numpy as np
import pytest
from PIL import Image

from pixbatch.io import encode
from pixbatch.io.decode import ImageMeta, decode_image
from pixbatch.io.encode import EncodeOptions, OutputExistsError, write_image
from tests.conftest import exif_with, gradient_rgb, srgb_icc

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_round_trip(tmp_path, suffix, channels, dtype):
    hi = 256 if dtype == np.uint8 else 65536
    a = np.random.default_rng(channels).integers(0, hi, (7, 13, channels)).astype(dtype)
    icc = srgb_icc() if channels >= 3 else None
    dst = tmp_path / f"out{suffix}"
    write_image(a, ImageMeta(MODES[channels], a.itemsize * 8, "PNG", icc=icc), dst, EncodeOptions())
    back, meta = decode_image(dst)
    assert back.dtype == dtype and np.array_equal(back, a)
    assert meta.mode == MODES[channels] and meta.icc == icc
    assert list(tmp_path.iterdir()) == [dst]  # no temporary file left behind


def test_exif_and_icc_copied_to_jpeg(tmp_path):
    dst = tmp_path / "out.jpg"
    meta = ImageMeta("RGB", 8, "JPEG", icc=srgb_icc(), exif=exif_with(1, t270="kept"))
    write_image(gradient_rgb(16, 16), meta, dst, EncodeOptions(quality=90))
    with Image.open(dst) as im:
        assert im.info["icc_profile"] == srgb_icc()
        assert im.getexif()[270] == "kept"


def test_rgba_to_jpeg_is_flattened_on_white(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    dst = tmp_path / "flat.jpg"
    write_image(a, ImageMeta("RGBA", 8, "PNG"), dst, EncodeOptions(quality=100))
    back, meta = decode_image(dst)
    assert meta.mode == "RGB" and back.min() >= 250


def test_existing_output_is_never_replaced(tmp_path):
    dst = tmp_path / "keep.png"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        write_image(gradient_rgb(4, 4), ImageMeta("RGB", 8, "PNG"), dst, EncodeOptions(overwrite=False))
    assert dst.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    write_image(gradient_rgb(4, 4), ImageMeta("RGB", 8, "PNG"), dst, EncodeOptions(overwrite=True))
    assert decode_image(dst)[0].shape == (4, 4, 3)


def test_failure_while_encoding_leaves_nothing(tmp_path, monkeypatch):
    dst = tmp_path / "sub" / "boom.png"

    def explode(arr, meta, f, fmt, opts):
        f.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(encode, "_encode", explode)
    with pytest.raises(OSError, match="disk full"):
        write_image(gradient_rgb(4, 4), ImageMeta("RGB", 8, "PNG"), dst, EncodeOptions())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no output, no temporary file


def test_16bit_to_jpeg_rounds_to_8bit(tmp_path):
    a = np.full((4, 4, 3), 65535, np.uint16)
    a[0, 0] = (257 * 10, 257 * 100, 257 * 200)
    dst = tmp_path / "d.png"
    write_image(a, ImageMeta("RGB", 16, "PNG"), dst, EncodeOptions())
    assert decode_image(dst)[1].bits == 16
    dst = tmp_path / "d.webp"
    write_image(a, ImageMeta("RGB", 16, "PNG"), dst, EncodeOptions(quality=100))
    assert decode_image(dst)[1].bits == 8


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
def test_every_output_carries_the_mark_and_inputs_do_not(tmp_path, suffix, bits):
    from pixbatch.io.decode import ImageMeta
    from pixbatch.io.discover import carries_output_mark
    from pixbatch.io.encode import EncodeOptions, write_image

    arr = gradient_rgb(6, 5).astype(np.uint16) * 257 if bits == 16 else gradient_rgb(6, 5)
    write_image(arr, ImageMeta("RGB", bits, "PNG"), tmp_path / f"out{suffix}", EncodeOptions())
    assert carries_output_mark(tmp_path / f"out{suffix}")
    Image.fromarray(gradient_rgb(6, 5)).save(tmp_path / f"photo{suffix}")
    assert not carries_output_mark(tmp_path / f"photo{suffix}")
