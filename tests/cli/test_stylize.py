"""``pixbatch stylize`` end to end: a mixed folder, resume, tiles = whole, streamed TIFFs, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.io.decode import decode_image
from pixbatch.io.encode import encode_png16
from tests.conftest import DATA, gradient_rgb, requires_data, srgb_icc


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = gradient_rgb(40, 52)
    Image.fromarray(rgb).save(src / "photo.jpg", quality=95, icc_profile=srgb_icc())
    Image.fromarray(np.dstack([rgb, np.full((40, 52), 99, np.uint8)])).save(src / "sub" / "logo.png")
    Image.fromarray(rgb[:, :, 0]).save(src / "gray.png")
    (src / "deep.png").write_bytes(encode_png16(rgb.astype(np.uint16) * 257))
    good = (src / "gray.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "text.jpg").write_text("not a picture")
    return src


def test_mixed_folder_resume_and_bad_files(folder, tmp_path, style_checkpoint):
    out = tmp_path / "out"
    code, stdout, stderr = run("--json", "stylize", folder, out, "--style", style_checkpoint)
    summary = json.loads(stdout)
    assert code == 123 and summary["done"] == 4 and summary["failed"] == 2
    assert stderr.count("error:") == 2 and "truncated.png" in stderr and "text.jpg" in stderr
    expected = {"photo.jpg": ("RGB", 8), "sub/logo.png": ("RGBA", 8), "gray.png": ("RGB", 8), "deep.png": ("RGB", 16)}
    for rel, (mode, bits) in expected.items():
        arr, meta = decode_image(out / rel)
        assert arr.shape[:2] == (40, 52) and (meta.mode, meta.bits) == (mode, bits), rel
    assert decode_image(out / "photo.jpg")[1].icc == srgb_icc()
    assert np.all(decode_image(out / "sub" / "logo.png")[0][..., 3] == 99)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    code, stdout, _ = run("--json", "stylize", folder, out, "--style", style_checkpoint)
    assert code == 123 and json.loads(stdout)["skipped"] == 4 and json.loads(stdout)["done"] == 0


def test_tiled_and_streamed_outputs_equal_the_whole_image(tmp_path, style_checkpoint):
    """A tiled TIFF read by region and written tile by tile, in windows sharing whole-image statistics,
    gives the pixels of the same image stylised whole in memory (fp32: within one level)."""
    img = gradient_rgb(270, 250)
    (tmp_path / "a").mkdir()
    Image.fromarray(img).save(tmp_path / "a" / "p.png")
    tifffile.imwrite(tmp_path / "a" / "t.tif", img, tile=(64, 64), photometric="rgb")
    code, stdout, _ = run("--json", "--device", "cpu", "stylize", tmp_path / "a" / "p.png", tmp_path / "whole",
                          "--style", style_checkpoint, "--precision", "fp32")
    assert code == 0 and json.loads(stdout)["settings"]["streamed"] == 0
    code, stdout, _ = run("--json", "--device", "cpu", "stylize", tmp_path / "a" / "t.tif", tmp_path / "tiled",
                          "--style", style_checkpoint, "--precision", "fp32", "--tile", "100")
    summary = json.loads(stdout)
    assert code == 0 and summary["settings"]["streamed"] == 1 and summary["settings"]["tile"] == 100
    whole = decode_image(tmp_path / "whole" / "p.png")[0].astype(int)
    with tifffile.TiffFile(tmp_path / "tiled" / "t.tif") as tf:
        assert tf.pages[0].is_tiled
        tiled = tf.asarray().astype(int)
    assert np.abs(whole - img).mean() > 10  # stylised
    assert np.abs(whole - tiled).max() <= 1


def test_max_side_and_options_in_the_summary(tmp_path, style_checkpoint):
    Image.fromarray(gradient_rgb(60, 90)).save(tmp_path / "a.png")
    code, stdout, _ = run("--json", "stylize", tmp_path / "a.png", tmp_path / "o", "--style", style_checkpoint,
                          "--max-side", "45", "--strength", "0.7", "--preserve-color")
    settings = json.loads(stdout)["settings"]
    assert code == 0 and (settings["max_side"], settings["strength"], settings["preserve_color"]) == (45, 0.7, True)
    assert Image.open(tmp_path / "o" / "a.png").size == (45, 30)


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], 2, "Missing option '--style' (a style net; none ships with pixbatch): ready-made ones are the pretrained "
            "models of PyTorch's fast_neural_style example (candy.pth, mosaic.pth, rain_princess.pth, udnie.pth: run "
            "download_saved_models.py in pytorch/examples/fast_neural_style)"),
    (["--style", "edsr_tiny_x4"], 1, "is a super-resolution model; use `pixbatch upscale`"),
    (["--style", "johnson_style"], 1, "has no trained weights"),
    (["--style", "nope.pth"], 1, "checkpoint not found"),
    (["--style", "STYLE", "--strength", "2"], 2, "Invalid value for '--strength'"),
])
def test_startup_and_usage_errors(tmp_path, style_checkpoint, args, code, message):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    args = [style_checkpoint if a == "STYLE" else a for a in args]
    result = CliRunner().invoke(cli, ["stylize", str(tmp_path / "a.png"), str(tmp_path / "o"), *map(str, args)])
    assert result.exit_code == code and message in result.output, result.output
    assert not (tmp_path / "o" / "a.png").exists()


def test_models_describes_a_style_net(style_checkpoint):
    code, stdout, _ = run("models", style_checkpoint)
    assert code == 0 and "TransformerNet" in stdout and "style transfer" in stdout


@requires_data
def test_engstrom_folder_end_to_end(tmp_path):
    Image.fromarray(gradient_rgb(64, 80)).save(tmp_path / "a.png")
    code, stdout, _ = run("--json", "stylize", tmp_path / "a.png", tmp_path / "o", "--style",
                          DATA / "style_weights" / "ml5_lengstrom" / "wave")
    assert code == 0 and json.loads(stdout)["settings"]["arch"] == "EngstromNet"


def test_a_recognised_checkpoint_converts_to_pixbatch_safetensors(tmp_path):
    """Converted once: the same net, our format, its origin in the metadata; spandrel-only files refuse."""
    import torch

    from pixbatch.models import build_registered, create_model

    torch.manual_seed(0)
    torch.save(build_registered("johnson_style", width=8).state_dict(), tmp_path / "candy.pth")
    code, stdout, _ = run("models", tmp_path / "candy.pth", "--save", tmp_path / "candy.safetensors",
                          "--source", "example/repo @ abc : candy.pth", "--licence", "MIT")
    assert code == 0 and "saved" in stdout
    a, b = create_model(tmp_path / "candy.pth"), create_model(tmp_path / "candy.safetensors")
    import hashlib

    assert b.info.source == "checkpoint" and b.info.training["converted_from"] == "candy.pth"
    assert b.info.training["converted_sha256"] == hashlib.sha256((tmp_path / "candy.pth").read_bytes()).hexdigest()
    assert b.info.training["source"] == "example/repo @ abc : candy.pth" and b.info.training["licence"] == "MIT"
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(a.module(x), b.module(x), rtol=0, atol=0)
    code, stdout, _ = run("models", tmp_path / "candy.safetensors")
    assert "converted from" in stdout
    result = CliRunner().invoke(cli, ["models", "--save", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "--save needs a CHECKPOINT" in result.output


@requires_data
def test_a_spandrel_checkpoint_cannot_be_converted(tmp_path):
    from tests.conftest import COMPACT

    result = CliRunner().invoke(cli, ["models", str(COMPACT), "--save", str(tmp_path / "c.safetensors")])
    assert result.exit_code == 1 and "only architectures pixbatch implements" in result.stderr
    assert not (tmp_path / "c.safetensors").exists()
