import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.io.decode import decode_image
from pixbatch.io.encode import encode_png16
from tests.conftest import COMPACT, exif_with, gradient_rgb, photo_folder, requires_data, srgb_icc


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture()
def mixed(tmp_path):
    """A folder with every kind of image, and every kind of bad file."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rgb = gradient_rgb(24, 32)
    Image.fromarray(rgb).save(src / "photo.jpg", quality=95, icc_profile=srgb_icc(),
                              exif=exif_with(6, t270="holiday"))
    Image.fromarray(rgb[:, :, 0]).save(src / "gray.png")
    rgba = np.dstack([rgb, np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))])
    Image.fromarray(rgba).save(src / "logo.png")
    Image.fromarray(rgba[:, :, [0, 3]], "LA").save(src / "la.png")
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(src / "pal.png", transparency=0)
    Image.fromarray(rgb).convert("CMYK").save(src / "cmyk.jpg")
    deep = (rgb.astype(np.uint16) * 257 + 3)
    (src / "deep.png").write_bytes(encode_png16(deep, icc=srgb_icc()))
    tifffile.imwrite(src / "deep_gray.tif", deep[:, :, 0])
    tifffile.imwrite(src / "deep_rgba.tif", np.dstack([deep, deep[:, :, :1]]), photometric="rgb",
                     extrasamples=["unassalpha"])
    Image.fromarray(rgb).save(src / "sub" / "nested.webp", quality=90)
    # bad files
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("hello, I am not a picture")
    good = (src / "gray.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (400, 300)).save(src / "bomb.png")
    return src


EXPECTED = {  # output name: (mode, bits, (width, height) before scaling)
    "photo.jpg": ("RGB", 8, (24, 32)),  # EXIF orientation 6: upright it is 24 wide, 32 high
    "gray.png": ("L", 8, (32, 24)),
    "logo.png": ("RGBA", 8, (32, 24)),
    "la.png": ("LA", 8, (32, 24)),
    "pal.png": ("RGBA", 8, (32, 24)),
    "cmyk.jpg": ("RGB", 8, (32, 24)),
    "deep.png": ("RGB", 16, (32, 24)),
    "deep_gray.tif": ("L", 16, (32, 24)),
    "deep_rgba.tif": ("RGBA", 16, (32, 24)),
    "sub/nested.webp": ("RGB", 8, (32, 24)),
}


def test_mixed_folder(mixed, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    code, stdout, stderr = run("--device", "cpu", "upscale", mixed, out, "--model", tiny_checkpoint,
                               "--max-pixels", 100_000, "--workers", 1)
    assert code == 123, stderr
    errors = sorted(line for line in stderr.splitlines() if line.startswith("error:"))
    assert errors == sorted([
        f"error: {mixed / 'bomb.png'}: image is 400x300 = 0.12 MP, above the limit of 0.1 MP (possible "
        "decompression bomb); raise it with --max-pixels",
        f"error: {mixed / 'empty.png'}: empty file",
        f"error: {mixed / 'text.jpg'}: not an image (unrecognised format)",
        *[e for e in errors if e.startswith(f"error: {mixed / 'truncated.png'}: truncated or corrupt file")],
    ])
    assert len(errors) == 4
    assert stdout.startswith("done 10, skipped 0, failed 4 in ")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(EXPECTED)
    for name, (mode, bits, (w, h)) in EXPECTED.items():
        arr, meta = decode_image(out / name)
        assert (meta.mode, meta.bits) == (mode, bits), name
        assert arr.shape[:2] == (h * 2, w * 2), name
    with Image.open(out / "photo.jpg") as im:
        assert im.info["icc_profile"] == srgb_icc()
        assert 0x0112 not in im.getexif() and im.getexif()[270] == "holiday"
    assert decode_image(out / "deep.png")[1].icc == srgb_icc()


def test_inputs_are_never_modified_and_rerun_skips(mixed, tmp_path, tiny_checkpoint):
    before = {p: p.read_bytes() for p in mixed.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    args = ("--device", "cpu", "upscale", mixed, out, "--model", tiny_checkpoint, "--workers", 0)
    run(*args, "--glob", "*.png")
    code, stdout, _ = run(*args, "--glob", "*.png")
    assert code == 123  # the bad PNGs still fail
    assert stdout.startswith("done 0, skipped 6, failed 2")  # 8 PNGs: empty, truncated
    assert {p: p.read_bytes() for p in mixed.rglob("*") if p.is_file()} == before


def start_and_wait_for_first_output(cmd, out, **kw):
    """Start a run and return once its first output has its final name (it is mid-job then)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    return proc


def test_resume_does_only_missing_work(tmp_path, tiny_checkpoint):
    src = photo_folder(tmp_path / "in", 5, 16)
    out = tmp_path / "out"
    args = ("--device", "cpu", "--json", "upscale", src, out, "--model", tiny_checkpoint)
    code, stdout, _ = run(*args)
    assert code == 0 and json.loads(stdout)["done"] == 5
    (out / "3.png").unlink()
    (out / ".1.png.pixbatch-999999999-dead.tmp").write_bytes(b"left by a killed run")
    mtime = (out / "0.png").stat().st_mtime_ns
    code, stdout, _ = run(*args)
    summary = json.loads(stdout)
    assert code == 0 and (summary["done"], summary["skipped"], summary["failed"]) == (1, 4, 0)
    assert (out / "0.png").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == [f"{i}.png" for i in range(5)]
    code, stdout, _ = run(*args[:3], "upscale", src, out, "--model", tiny_checkpoint, "--overwrite")
    assert json.loads(stdout)["done"] == 5


def test_killed_run_leaves_no_partial_file_and_resumes(tmp_path, tiny_checkpoint):
    src = photo_folder(tmp_path / "in", 24, 160, name="{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pixbatch", "--device", "cpu", "upscale", str(src), str(out),
           "--model", str(tiny_checkpoint), "--png-compression", "9", "--workers", "0", "--writers", "1"]
    proc = start_and_wait_for_first_output(cmd, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    assert 0 < len(finished) < 24
    for p in finished:  # whatever has its final name is complete
        assert decode_image(p)[0].shape == (320, 320, 3)
    rerun = subprocess.run(cmd[:3] + ["--json"] + cmd[3:], capture_output=True, text=True, timeout=300)
    summary = json.loads(rerun.stdout)
    assert rerun.returncode == 0 and summary["done"] == 24 - len(finished)
    assert summary["skipped"] == len(finished)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:02d}.png" for i in range(24)]


def test_sigterm_unwinds_cleanly(tmp_path, tiny_checkpoint):
    src = photo_folder(tmp_path / "in", 24, 160, name="{i:02d}.png")
    out = tmp_path / "out"
    proc = start_and_wait_for_first_output(
        [sys.executable, "-m", "pixbatch", "--device", "cpu", "upscale", str(src), str(out),
         "--model", str(tiny_checkpoint), "--png-compression", "9", "--workers", "0"], out, text=True)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "run the same command again to resume" in stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_unwritable_destination_stops_before_any_work(tmp_path, tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(8, 8)).save(src)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, stdout, stderr = run("upscale", src, blocker / "out", "--model", tiny_checkpoint)
    assert code == 1 and stdout == ""
    assert stderr.startswith(f"error: cannot write to {blocker / 'out'}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "edsr_tiny_x5"], "error: unknown model 'edsr_tiny_x5'; did you mean edsr_tiny_x4"),
        (["--model", "edsr_baseline_x4"], "error: edsr_baseline_x4 has no trained weights in this package"),
        (["--model", "missing.safetensors"], "error: checkpoint not found: missing.safetensors"),
    ],
)
def test_startup_errors(tmp_path, args, message):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(8, 8)).save(src)
    code, _, stderr = run("upscale", src, tmp_path / "out", *args)
    assert code == 1 and stderr.startswith(message), stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_startup_error(tmp_path, tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(8, 8)).save(src)
    code, _, stderr = run("--device", "cuda", "upscale", src, tmp_path / "out", "--model", tiny_checkpoint)
    assert code == 1
    assert stderr == "error: --device cuda was asked for, but no CUDA GPU is available; use --device cpu\n"


def test_scale_must_match_the_model(tmp_path, tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(8, 8)).save(src)
    code, _, stderr = run("upscale", src, tmp_path / "out", "--model", tiny_checkpoint, "--scale", "4")
    assert code == 1 and "upscales by 2, not 4" in stderr


def test_usage_error_is_exit_2(tmp_path):
    assert run("upscale", tmp_path)[0] == 2
    assert run("upscale", tmp_path, tmp_path / "o", "--precision", "fp8")[0] == 2


@pytest.mark.parametrize(("fmt", "suffix"), [("png", ".png"), ("jpg", ".jpg"), ("webp", ".webp"), ("tiff", ".tif")])
def test_output_formats_and_suffix(tmp_path, tiny_checkpoint, fmt, suffix):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(10, 12)).save(src)
    code, _, _ = run("upscale", src, tmp_path / "out", "--model", tiny_checkpoint, "--format", fmt,
                     "--suffix", "_x2", "--quality", "80")
    assert code == 0
    arr, _ = decode_image(tmp_path / "out" / f"a_x2{suffix}")
    assert arr.shape == (20, 24, 3)


def test_tiled_cli_output_equals_whole(tmp_path, tiny_checkpoint):
    src = tmp_path / "big.png"
    (src).write_bytes(encode_png16(gradient_rgb(70, 90).astype(np.uint16) * 257))
    run("upscale", src, tmp_path / "whole", "--model", tiny_checkpoint)
    run("upscale", src, tmp_path / "tiled", "--model", tiny_checkpoint, "--tile", "24", "--batch-size", "3")
    a = decode_image(tmp_path / "whole" / "big.png")[0].astype(np.int64)
    b = decode_image(tmp_path / "tiled" / "big.png")[0].astype(np.int64)
    assert np.abs(a - b).max() <= 1  # 16-bit output: at most one rounding step (< 1e-4 of full scale)


def test_models_command(tiny_checkpoint):
    code, stdout, _ = run("models")
    assert code == 0 and "edsr_tiny_x4" in stdout and "srresnet_x4" in stdout
    code, stdout, _ = run("--json", "models", tiny_checkpoint)
    info = json.loads(stdout)
    assert code == 0 and info["arch"] == "EDSR" and info["scale"] == 2 and info["source"] == "checkpoint"


@requires_data
def test_foreign_checkpoint_end_to_end(tmp_path):
    src = tmp_path / "a.jpg"
    Image.fromarray(gradient_rgb(20, 30)).save(src)
    code, stdout, stderr = run("--json", "upscale", src, tmp_path / "out", "--model", COMPACT)
    assert code == 0, stderr
    assert json.loads(stdout)["settings"]["arch"] == "RealESRGAN Compact"
    assert decode_image(tmp_path / "out" / "a.jpg")[0].shape == (80, 120, 3)
    code, stdout, _ = run("models", COMPACT)
    assert "RealESRGAN Compact" in stdout and "receptive field: 18 px" in stdout


def test_version():
    code, stdout, _ = run("--version")
    assert code == 0 and stdout.startswith("pixbatch, version ")


def test_outscale_gives_the_exact_size_in_memory_and_streamed(tmp_path, tiny_checkpoint):
    """An x2 model asked for x1.5: the model output resized (antialiased bicubic) before rounding,
    to int(size x 1.5); a streamed tiled TIFF gives the same pixels as the same image in memory."""
    import torch

    from pixbatch.models import create_model
    from pixbatch.ops.imresize import resize_matrix
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.upscale import upscale_tensor

    img = gradient_rgb(41, 30)
    (tmp_path / "a").mkdir()
    Image.fromarray(img).save(tmp_path / "a" / "p.png")
    tifffile.imwrite(tmp_path / "a" / "t.tif", img, tile=(16, 16), photometric="rgb")
    code, stdout, _ = run("--json", "--device", "cpu", "upscale", tmp_path / "a", tmp_path / "out", "--model",
                          tiny_checkpoint, "--outscale", "1.5", "--tile", "16", "--precision", "fp32")
    summary = json.loads(stdout)
    assert code == 0 and summary["done"] == 2 and summary["settings"]["outscale"] == 1.5
    assert summary["settings"]["streamed"] == 1
    png = decode_image(tmp_path / "out" / "p.png")[0].astype(int)
    tif = tifffile.imread(tmp_path / "out" / "t.tif").astype(int)
    assert png.shape == tif.shape == (61, 45, 3)  # int(41 x 1.5), int(30 x 1.5)
    assert np.abs(png - tif).max() <= 1
    # what it is: the x2 output, resized to 61 x 45, then rounded
    runner = prepare_model(create_model(tiny_checkpoint), torch.device("cpu"), torch.float32)
    y = upscale_tensor(runner, torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).double()
    mh = torch.from_numpy(resize_matrix(82, 61, 61 / 82))
    mw = torch.from_numpy(resize_matrix(60, 45, 45 / 60))
    expected = ((mh @ y @ mw.T).clamp(0, 1) * 255).round()[0].permute(1, 2, 0).numpy()
    assert np.abs(png - expected).max() <= 1


def test_an_outscale_that_leaves_less_than_a_pixel_fails_those_images(tmp_path, tiny_checkpoint):
    """In memory and streamed alike: one error line per image, nothing written (it wrote 1x1 images)."""
    (tmp_path / "a").mkdir()
    Image.fromarray(gradient_rgb(12, 10)).save(tmp_path / "a" / "p.png")
    tifffile.imwrite(tmp_path / "a" / "t.tif", gradient_rgb(40, 40), tile=(16, 16), photometric="rgb")
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", tmp_path / "a", tmp_path / "out", "--model",
                               tiny_checkpoint, "--outscale", "1e-300", "--format", "same")
    assert code == 123 and json.loads(stdout)["failed"] == 2
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert sorted(lines) == [f"error: {tmp_path / 'a' / 'p.png'}: --outscale 1e-300 makes its 10x12 px less than one pixel",
                             f"error: {tmp_path / 'a' / 't.tif'}: --outscale 1e-300 makes its 40x40 px less than one pixel"]
    assert not list((tmp_path / "out").rglob("*"))


def test_earlier_outputs_are_never_inputs_whatever_their_suffix(tmp_path, tiny_checkpoint):
    """Outputs carry pixbatch's mark: a second run with another --suffix into the same folder does not
    take the first run's outputs for inputs; a marked file named directly is processed."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(gradient_rgb(8, 8)).save(folder / "a.png")
    assert run("upscale", folder, folder, "--model", tiny_checkpoint, "--suffix", "_x2")[0] == 0
    code, stdout, stderr = run("--json", "-v", "upscale", folder, folder, "--model", tiny_checkpoint, "--suffix", "_up",
                               "--format", "jpg")
    assert code == 0 and json.loads(stdout)["done"] == 1
    assert "a_x2.png: written by pixbatch (an earlier output), not read as input" in stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_up.jpg", "a_x2.png"]
    code, stdout, _ = run("--json", "upscale", folder / "a_x2.png", tmp_path / "again", "--model", tiny_checkpoint)
    assert code == 0 and json.loads(stdout)["done"] == 1 and (tmp_path / "again" / "a_x2.png").is_file()


def test_outputs_above_max_pixels_stream_into_a_tiled_bigtiff(tmp_path, tiny_checkpoint):
    """A PNG whose x2 output is above --max-pixels: a tiled BigTIFF written band by band, said in the
    summary, with the pixels of the same image upscaled in memory."""
    Image.fromarray(gradient_rgb(60, 50)).save(tmp_path / "a.png")  # 3000 px in, 12000 px out
    code, stdout, _ = run("--json", "--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "big", "--model",
                          tiny_checkpoint, "--max-pixels", 5000, "--tile", 16)
    summary = json.loads(stdout)
    assert code == 0 and summary["done"] == 1 and summary["big_outputs"] == 1
    code, stdout, _ = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "small", "--model",
                          tiny_checkpoint, "--tile", 16)
    assert code == 0 and "tiled BigTIFF" not in stdout
    with tifffile.TiffFile(tmp_path / "big" / "a.tif") as tf:
        assert tf.is_bigtiff and tf.pages[0].is_tiled
        big = tf.asarray()
    assert np.array_equal(big, decode_image(tmp_path / "small" / "a.png")[0])
    code, stdout, _ = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "big2", "--model",
                          tiny_checkpoint, "--max-pixels", 5000)
    assert code == 0 and "1 output(s) above --max-pixels were written tile by tile as tiled BigTIFFs" in stdout
    for folder in ("big", "big2"):  # the finished file only: no temporary name linked to it is left
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["a.tif"]


def test_a_job_is_planned_once_and_its_checkpoint_loaded_once(tmp_path, tiny_checkpoint, monkeypatch):
    """With --max-pixels the output suffix needs the model's scale: planning reads it from the checkpoint,
    which is then the model the job runs (not loaded again), and the folder is walked once."""
    import pixbatch.io.discover as discover
    import pixbatch.models as models

    Image.fromarray(gradient_rgb(60, 50)).save(tmp_path / "a.png")  # its x2 output is above 5000 px
    Image.fromarray(gradient_rgb(20, 20)).save(tmp_path / "b.png")  # its is not
    calls = {"plan": 0, "load": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(discover, "plan_jobs", counted("plan", discover.plan_jobs))
    monkeypatch.setattr(models, "create_model", counted("load", models.create_model))
    code, stdout, _ = run("--json", "--device", "cpu", "upscale", tmp_path, tmp_path / "out", "--model",
                          tiny_checkpoint, "--max-pixels", 5000, "--workers", 0)
    assert code == 0 and json.loads(stdout)["big_outputs"] == 1, stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.png"]
    assert calls == {"plan": 1, "load": 1}


def test_denoise_moves_a_real_photo_model_between_its_endpoints(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(20, 24)).save(src)
    outs = {}
    for t in ("0", "1"):
        code, _, stderr = run("-v", "--device", "cpu", "upscale", src, tmp_path / t, "--model", "real_x2", "--denoise", t)
        assert code == 0, stderr
        assert f"real_x2 (RLFN, x2, denoise {t}," in stderr
        outs[t] = decode_image(tmp_path / t / "a.png")[0]
    assert outs["0"].shape == (40, 48, 3) and not np.array_equal(outs["0"], outs["1"])
    code, _, stderr = run("upscale", src, tmp_path / "x", "--scale", "2", "--denoise", "0.5")
    assert code == 1 and stderr.startswith("error: --denoise works with the built-in models trained for it")
    assert run("upscale", src, tmp_path / "x", "--model", "real_x2", "--denoise", "2")[0] == 2
    code, stdout, _ = run("models")
    assert any(line.startswith("real_x4") and "for real photos" in line for line in stdout.splitlines())
