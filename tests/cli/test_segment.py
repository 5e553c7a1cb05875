import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.io import regions
from tests.conftest import gradient_rgb


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = gradient_rgb(70, 90, seed=1)
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(rgb).save(src / "b.jpg", quality=90)
    Image.fromarray(rgb[:, :, 0]).save(src / "sub" / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(src / "rgba.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(src / "deep.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return src


def test_folder_to_masks_probabilities_and_overlays(folder, tmp_path, seg_checkpoint):
    out = tmp_path / "out"
    result = run("--json", "segment", folder, out, "--model", seg_checkpoint, "--probabilities", "--overlay")
    assert result.exit_code == 123, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == 5 and summary["failed"] == 1
    assert result.stderr.count("error:") == 1 and "broken.png" in result.stderr
    for rel in ["a", "b", "sub/gray", "rgba", "deep"]:
        mask = Image.open(out / f"{rel}.png")
        assert mask.mode == "L" and mask.size == (90, 70)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        prob = tifffile.imread(out / f"{rel}_prob.tif")
        assert prob.shape == (70, 90) and prob.dtype == np.uint8
        # the mask is the thresholded probability map
        np.testing.assert_array_equal(np.asarray(mask) == 255, prob > 127.5)
        overlay = Image.open(out / f"{rel}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == (90, 70)
    again = run("--json", "segment", folder / "a.png", out, "--model", seg_checkpoint)
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == 1


def test_float_probabilities_and_threshold(tmp_path, seg_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(40, 50)).save(src)
    result = run("segment", src, tmp_path / "o", "--model", seg_checkpoint, "--probabilities", "--prob-format",
                 "float", "--threshold", "0.3")
    assert result.exit_code == 0, result.output
    prob = tifffile.imread(tmp_path / "o" / "a_prob.tif")
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    mask = np.asarray(Image.open(tmp_path / "o" / "a.png"))
    np.testing.assert_array_equal(mask == 255, prob > 0.3)


def test_multiclass_masks_are_palette_pngs(tmp_path, seg3_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(40, 50)).save(src)
    result = run("segment", src, tmp_path / "o", "--model", seg3_checkpoint, "--probabilities")
    assert result.exit_code == 0, result.output
    mask = Image.open(tmp_path / "o" / "a.png")
    assert mask.mode == "P" and mask.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    prob = tifffile.imread(tmp_path / "o" / "a_prob.tif")
    assert prob.shape == (40, 50, 3)
    np.testing.assert_array_equal(np.asarray(mask), prob.argmax(-1))


def test_tiled_tiff_is_streamed_and_matches_the_in_memory_path(tmp_path, seg_checkpoint, monkeypatch):
    """A tiled TIFF goes through region by region: the page is never decoded whole, no read spans more
    rows than one window, and the tiled BigTIFF outputs equal the in-memory outputs of the same pixels."""
    img = gradient_rgb(700, 610, seed=5)
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "slide.tif", img, tile=(128, 128), photometric="rgb", compression="zlib")
    Image.fromarray(img).save(src / "slide_copy.png")
    spans = []
    read_rows = regions.TiffRegionReader.read_rows

    def spy(self, y0, y1):
        spans.append(y1 - y0)
        return read_rows(self, y0, y1)

    def whole_page(*a, **k):
        raise AssertionError("the huge image was decoded whole")

    monkeypatch.setattr(regions.TiffRegionReader, "read_rows", spy)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", whole_page)
    out = tmp_path / "out"
    # 192 px tiles with 32 px of context on each side: windows of at most 256 rows
    result = run("--json", "segment", src, out, "--model", seg_checkpoint, "--tile", "192", "--overlap", "32",
                 "--probabilities", "--overlay")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["streamed"] == 1
    assert spans and max(spans) <= 256
    with tifffile.TiffFile(out / "slide.tif") as tf:
        assert tf.is_bigtiff and tf.pages[0].is_tiled
        streamed = tf.pages[0].asarray()
    np.testing.assert_array_equal(streamed, np.asarray(Image.open(out / "slide_copy.png")))
    np.testing.assert_array_equal(tifffile.imread(out / "slide_prob.tif"), tifffile.imread(out / "slide_copy_prob.tif"))
    np.testing.assert_array_equal(tifffile.imread(out / "slide_overlay.tif"),
                                  np.asarray(Image.open(out / "slide_copy_overlay.png")))
    assert not list(out.glob(".*tmp"))


def test_models_of_the_other_task_are_refused(tmp_path, seg_checkpoint, tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(20, 20)).save(src)
    result = run("segment", src, tmp_path / "o", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert "error: edsr_tiny_x2 is a super-resolution model; use `pixbatch upscale`" in result.output
    result = run("upscale", src, tmp_path / "o", "--model", seg_checkpoint)
    assert result.exit_code == 1 and "error: unet is a segmentation model; use `pixbatch segment`" in result.output


def test_tile_and_overlap_mean_the_core_and_its_context(tmp_path, seg_checkpoint):
    """--tile is the core edge and --overlap the context on each side, as in upscale: an overlap of
    half the tile is fine (windows of 256 px for 128 px tiles)."""
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(300, 200)).save(src)
    result = run("--json", "segment", src, tmp_path / "o", "--model", seg_checkpoint, "--tile", "128",
                 "--overlap", "64")
    assert result.exit_code == 0, result.output
    settings = json.loads(result.stdout)["settings"]
    assert settings["tile"] == 128 and settings["overlap"] == 64 and settings["blend"] is False
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == (300, 200)


def test_a_corrupt_tiled_tiff_fails_alone_and_leaves_nothing_behind(tmp_path, seg_checkpoint):
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "cut.tif", gradient_rgb(600, 500, seed=6), tile=(128, 128), photometric="rgb",
                     compression="zlib")
    data = (src / "cut.tif").read_bytes()
    (src / "cut.tif").write_bytes(data[: len(data) // 2])  # the header survives, half the tiles do not
    Image.fromarray(gradient_rgb(40, 40)).save(src / "fine.png")
    out = tmp_path / "out"
    result = run("segment", src, out, "--model", seg_checkpoint, "--tile", "256", "--overlap", "64", "--probabilities")
    assert result.exit_code == 123, result.output
    assert result.stderr.count("\nerror:") + result.stderr.startswith("error:") == 1
    assert "cut.tif: truncated or corrupt TIFF: segment" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["fine.png", "fine_prob.tif"]


def test_16bit_gray_tiled_tiff_streams_like_the_in_memory_path(tmp_path, seg_checkpoint):
    """Microscopy-style input: 16-bit grayscale, tiled; the streamed outputs equal those of the same
    pixels decoded whole (a strip TIFF), and the overlay scales 16-bit to 8-bit."""
    img = (gradient_rgb(300, 280, seed=7)[:, :, 1].astype(np.uint16) * 257 + 128)
    src = tmp_path / "src"
    src.mkdir()
    tifffile.imwrite(src / "deep_tiled.tif", img, tile=(64, 64), photometric="minisblack")
    tifffile.imwrite(src / "deep_strips.tif", img, photometric="minisblack")
    out = tmp_path / "out"
    result = run("--json", "segment", src, out, "--model", seg_checkpoint, "--tile", "128", "--overlap", "32",
                 "--probabilities", "--overlay")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["streamed"] == 1
    np.testing.assert_array_equal(tifffile.imread(out / "deep_tiled.tif"), np.asarray(Image.open(out / "deep_strips.png")))
    np.testing.assert_array_equal(tifffile.imread(out / "deep_tiled_prob.tif"), tifffile.imread(out / "deep_strips_prob.tif"))
    overlay = tifffile.imread(out / "deep_tiled_overlay.tif")
    np.testing.assert_array_equal(overlay, np.asarray(Image.open(out / "deep_strips_overlay.png")))
    assert overlay.shape == (300, 280, 3) and overlay.dtype == np.uint8


def test_segment_outputs_carry_the_mark(tmp_path, seg3_checkpoint):
    from pixbatch.io.discover import carries_output_mark

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(gradient_rgb(40, 30)).save(src / "a.png")
    tifffile.imwrite(src / "b.tif", gradient_rgb(300, 260), tile=(128, 128), photometric="rgb")
    result = run("segment", src, tmp_path / "out", "--model", seg3_checkpoint, "--probabilities", "--overlay")
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["a.png", "a_overlay.png", "a_prob.tif", "b.tif", "b_overlay.tif",
                                         "b_prob.tif"]
    assert all(carries_output_mark(p) for p in written)


def test_openvino_backend_gives_the_same_probabilities(folder, tmp_path, seg_checkpoint):
    """--backend openvino (fp32 here, so the two backends compute the same function) through the whole
    pipeline, bad file included: the same probability maps as PyTorch, the backend in the settings."""
    pytest.importorskip("openvino")
    outs = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        result = run("--json", "--device", "cpu", "segment", folder, out, "--model", seg_checkpoint,
                     "--precision", "fp32", "--backend", backend, "--probabilities", "--prob-format", "float")
        assert result.exit_code == 123, result.output
        summary = json.loads(result.stdout)
        assert summary["done"] == 5 and summary["settings"]["backend"] == (
            "torch" if backend == "torch" else "openvino (f32)")
        outs[backend] = out
    for rel in ["a", "b", "sub/gray", "rgba", "deep"]:
        np.testing.assert_allclose(tifffile.imread(outs["openvino"] / f"{rel}_prob.tif"),
                                   tifffile.imread(outs["torch"] / f"{rel}_prob.tif"), atol=1e-4)
