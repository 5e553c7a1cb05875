"""``--precision int8`` from the command line: upscale, segment, stylize, eval and bench run an int8 model,
`pixbatch models NAME --precision int8` shows it, and what int8 cannot do is one clear line. Calibration
crops are 64 px here (32 px inputs at x2), so each quantization takes seconds."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.runtime.int8 import int8_available  # noqa: E402
from tests.conftest import gradient_rgb

# NNCF is never imported here: it runs in int8's worker process
pytestmark = pytest.mark.skipif(not int8_available(), reason="the int8 extra (NNCF, OpenVINO) is not installed")


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def small_crops(tmp_path, monkeypatch):
    from pixbatch.tasks import calibration

    monkeypatch.setattr(calibration, "CROP", 64)
    monkeypatch.setenv("PIXBATCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(gradient_rgb(48, 40 + 8 * i, seed=i)).save(src / f"{i}.png")
    return src


@pytest.mark.parametrize("extra, message", [
    (["--backend", "torch"], "--precision int8 runs on OpenVINO, not with --backend torch"),
    (["--compile"], "--compile compiles PyTorch models"),
])
def test_what_int8_cannot_be_combined_with_is_a_usage_error(photos, tmp_path, extra, message):
    code, _, err = run("upscale", photos, tmp_path / "out", "--precision", "int8", *extra)
    assert code == 2 and message in err


def test_calibrate_on_input_without_int8_is_a_usage_error(photos, tmp_path):
    code, _, err = run("upscale", photos, tmp_path / "out", "--calibrate-on-input")
    assert code == 2 and "--calibrate-on-input calibrates --precision int8" in err


def test_without_nncf_one_line_names_the_extra(photos, tmp_path, monkeypatch):
    from pixbatch.runtime import int8

    monkeypatch.setattr(int8, "int8_available", lambda: False)
    code, _, err = run("upscale", photos, tmp_path / "out", "--model", "edsr_tiny_x2", "--precision", "int8")
    assert code == 1 and err.strip().splitlines() == ["error: --precision int8 needs OpenVINO and NNCF: pip install "
                                                      "'pixbatch[int8]'"]


def test_upscale_in_int8_then_the_cached_model_is_listed_and_reused(photos, tmp_path, small_crops):
    code, out, err = run("-v", "upscale", photos, tmp_path / "int8", "--model", "edsr_tiny_x2", "--precision", "int8")
    assert code == 0, err
    assert "int8: quantizing edsr_tiny_x2 on the photos shipped with pixbatch" in err
    assert "precision=int8" in err and "backend=openvino (int8;" in err
    assert run("upscale", photos, tmp_path / "fp32", "--model", "edsr_tiny_x2", "--precision", "fp32")[0] == 0
    for name in ("0.png", "1.png", "2.png"):
        a = np.asarray(Image.open(tmp_path / "int8" / name), np.float64)
        b = np.asarray(Image.open(tmp_path / "fp32" / name), np.float64)
        assert a.shape == b.shape == (96, 80 + 16 * int(name[0]), 3)
        assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 35  # int8, close to fp32 but not it
    code, out, _ = run("models", "edsr_tiny_x2", "--precision", "int8")
    assert code == 0 and "  kept: Y-PSNR" in out and "calibrated on the photos shipped with pixbatch" in out
    code, _, err = run("-v", "upscale", photos, tmp_path / "again", "--model", "edsr_tiny_x2", "--precision", "int8")
    assert code == 0 and "quantizing" not in err and "int8: Y-PSNR" in err  # from the cache


def test_segment_in_int8_calibrated_on_the_job(tmp_path, monkeypatch):
    from pixbatch.tasks.calibration import shipped_images

    monkeypatch.setenv("PIXBATCH_CACHE_DIR", str(tmp_path / "cache"))
    retinas = tmp_path / "retinas"
    retinas.mkdir()
    for path in shipped_images("seg")[:4]:
        shutil.copy(path, retinas)
    code, _, err = run("-v", "segment", retinas, tmp_path / "masks", "--precision", "int8", "--calibrate-on-input")
    assert code == 0, err
    assert "int8: quantizing unet_drive on 4 of your images (3 calibrate, 1 held out)" in err
    assert "precision=int8" in err and len(list((tmp_path / "masks").iterdir())) == 4


def test_stylize_in_int8(photos, tmp_path, small_crops, style_checkpoint, monkeypatch):
    # a random style net whose bf16 output is itself only about 40 dB from fp32's: judged at 20 dB here, so the
    # first quantization is kept (accuracy control would return its layers one by one, minutes of work)
    from pixbatch.runtime import int8
    from pixbatch.tasks import calibration

    monkeypatch.setitem(int8.BOUNDS, "style", ("60 dB - PSNR", 40.0))
    monkeypatch.setattr(calibration, "STYLE_ENLARGE", 2)  # judged at 128 px: half the test's time at 4x
    code, _, err = run("-v", "stylize", photos, tmp_path / "styled", "--model", style_checkpoint, "--precision", "int8")
    assert code == 0, err
    assert re.search(r"int8: PSNR [\d.]+ dB against the (bf16|f32) model's output \(bound 20 dB\)", err)
    assert "precision=int8" in err


def test_int8_beyond_its_bound_refuses_the_job_in_one_line(photos, tmp_path, small_crops, monkeypatch):
    from pixbatch.runtime import int8

    plain = int8.make_in_worker  # NNCF's default quantization instead of the recipe: beyond the bound

    monkeypatch.setattr(int8, "make_in_worker", lambda folder, source, info, data, precision, recipe, bound:
                        plain(folder, source, info, data, precision, "plain", bound))
    code, out, err = run("upscale", photos, tmp_path / "out", "--model", "edsr_tiny_x2", "--precision", "int8")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 2 and lines[0].startswith("int8: quantizing")
    assert lines[1].startswith("error: --precision int8 refused for edsr_tiny_x2: Y-PSNR ")
    assert "use --precision bf16 or fp32, or try --calibrate-on-input" in lines[1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_eval_and_bench_in_int8(tmp_path, small_crops):
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(2):
        Image.fromarray(gradient_rgb(64, 64, seed=i)).save(hr / f"{i}.png")
    code, out, err = run("-v", "eval", "sr", "--model", "edsr_tiny_x2", "--hr", hr, "--precision", "int8")
    assert code == 0, err
    assert "openvino (int8;" in out + err
    code, out, err = run("--device", "cpu", "bench", "--model", "edsr_tiny_x2", "--images", "2", "--size", "32",
                         "--precision", "int8")
    assert code == 0, err
    assert "int8: Y-PSNR" in out and "backend: openvino (int8;" in out
