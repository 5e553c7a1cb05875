"""The one engine: windows (crop and blend), batching, OOM back-off, precision guard, and a toy task
through a whole job, in memory and streamed."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixbatch.io.decode import ImageMeta, decode_image
from pixbatch.io.discover import plan_jobs
from pixbatch.io.encode import EncodeOptions, write_image
from pixbatch.models import create_model
from pixbatch.runtime.batcher import WindowEngine, finite_rows, run_planes
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.engine import run_job
from pixbatch.runtime.jobs import Report
from pixbatch.runtime.prepare import prepare_model
from pixbatch.runtime.sources import TensorSource, decode_workers
from pixbatch.runtime.spec import JobSpec
from pixbatch.runtime.task import Task
from pixbatch.runtime.windows import Windowing
from pixbatch.tasks.upscale import upscale_tensor
from tests.conftest import COMPACT, REPO, gradient_rgb, requires_data


def _runner(loaded, dtype=torch.float32):
    return prepare_model(loaded, torch.device("cpu"), dtype)


# -- crop: tiled output equals whole-image output ---------------------------------------------------
def _assert_tiled_equals_whole(runner, h, w, tile):
    torch.manual_seed(0)
    x = torch.rand(2, 3, h, w)
    whole = upscale_tensor(runner, x)
    tiled = upscale_tensor(runner, x, tile=tile, batch_size=3)
    assert tiled.shape == whole.shape == (2, 3, h * runner.info.scale, w * runner.info.scale)
    err = (tiled - whole).abs().max().item()
    assert err < 1e-4, err
    return x, whole


def test_cropped_tiles_equal_the_whole_image():
    torch.manual_seed(0)
    runner = _runner(create_model("edsr_tiny_x2", pretrained=False, n_resblocks=3))
    x, whole = _assert_tiled_equals_whole(runner, 61, 83, tile=20)
    # and the overlap matters: too little context gives a measurable seam
    seamy = upscale_tensor(runner, x, tile=20, overlap=1)
    assert (seamy - whole).abs().max().item() > 1e-3


@requires_data
def test_cropped_tiles_equal_the_whole_image_for_a_foreign_model():
    _assert_tiled_equals_whole(_runner(create_model(COMPACT)), 57, 70, tile=24)


# -- blend: tiled probabilities equal whole-image probabilities within 1e-3 -------------------------------
@pytest.fixture(scope="module")
def seg_runner():
    """The shipped retinal-vessel U-Net: real weights, so missing context really shows."""
    return prepare_model(create_model("unet_drive"), torch.device("cpu"), torch.float32, kernels="torch")


@pytest.fixture(scope="module")
def photo():
    with Image.open(REPO / "examples" / "astronaut.jpg") as im:
        return np.array(im.convert("RGB").resize((600, 600), Image.BICUBIC))


def _probabilities(runner, img, tile, overlap, blend=True):
    from pixbatch.tasks.planes import model_planes

    x = model_planes(img, runner.device, runner.info.in_channels)
    w = Windowing(tile=tile, overlap=overlap, blend=blend, mirror_borders=True)
    return torch.sigmoid(run_planes(runner, x, w))[0]


def test_blended_tiles_equal_the_whole_image(seg_runner, photo):
    """A 600 px photo: 3 x 3 blended windows vs one whole-image window of the same model."""
    whole = _probabilities(seg_runner, photo, 0, 128)
    inner = (slice(None), slice(128, -128), slice(128, -128))  # the whole image mirrors 128 px at its borders
    tiled = _probabilities(seg_runner, photo, 200, 128)
    assert (whole - tiled).abs()[inner].max() < 1e-3
    # the same tiles without overlap leave seams: the check above can fail
    seams = _probabilities(seg_runner, photo, 200, 0)
    assert (whole - seams).abs()[inner].max() > 1e-3
    # with less context than the model's reach, blending softens the worst seam
    blended = (whole - _probabilities(seg_runner, photo, 200, 32)).abs()[inner]
    cropped = (whole - _probabilities(seg_runner, photo, 200, 32, blend=False)).abs()[inner]
    assert blended.max() < 0.8 * cropped.max()
    # and with enough context, cropping is exact as for super-resolution
    assert (whole - _probabilities(seg_runner, photo, 200, 64, blend=False)).abs()[inner].max() < 1e-3


# -- the size multiple, the OOM back-off and the precision guard ----------------------------------------
def test_size_multiple_is_honoured():
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    loaded.info = type(loaded.info)(**{**loaded.info.as_dict(), "size_multiple": 8})
    seen = []
    module = loaded.module

    class Spy(torch.nn.Module):
        scale = 2

        def forward(self, x):
            seen.extend([tuple(x.shape[-2:])] * x.shape[0])
            return module(x)

    loaded.module = Spy()
    y = upscale_tensor(_runner(loaded), torch.rand(1, 3, 21, 35), tile=16, overlap=3)
    assert y.shape == (1, 3, 42, 70)
    assert len(seen) > 1 and all(h % 8 == 0 and w % 8 == 0 for h, w in seen)


def test_out_of_memory_halves_the_work_and_retries():
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=2, n_feats=8)
    runner = _runner(loaded)
    x = torch.rand(3, 3, 40, 50)
    expected = upscale_tensor(runner, x)
    calls = []
    real = runner.__class__.__call__

    def flaky(self, inp):
        calls.append(tuple(inp.shape))
        if inp.shape[0] > 1 or inp.shape[-1] * inp.shape[-2] > 1500:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, inp)

    runner.__class__ = type("FlakyRunner", (runner.__class__,), {"__call__": flaky})
    report = Report()
    got = upscale_tensor(runner, x, report=report)  # one whole-image batch of 3 first, then halves, then pieces
    assert calls[0] == (3, 3, 40, 50)
    assert any(c[0] == 1 and c[-1] * c[-2] <= 1500 for c in calls)
    assert report.oom_retries >= 3
    assert (got - expected).abs().max().item() < 1e-4


def test_out_of_memory_in_a_band_delivers_every_row_exactly_once():
    """A multi-band image whose batch runs out of memory after some bands were delivered."""
    x = torch.rand(1, 3, 300, 260)
    seg_runner = prepare_model(create_model("unet", pretrained=False, base=4, depth=2), torch.device("cpu"),
                               torch.float32, kernels="torch")
    windowing = Windowing(tile=96, overlap=16, blend=True, mirror_borders=True, batch_size=4)
    expected = run_planes(seg_runner, x, windowing)

    calls = {"n": 0}
    real_call = type(seg_runner).__call__

    def flaky(self, inp):
        calls["n"] += 1
        if inp.shape[0] > 1 and calls["n"] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_call(self, inp)

    rows, failures = [], []
    got = torch.zeros_like(expected)

    def on_rows(y0, out):
        rows.append((y0, out.shape[-2]))
        got[..., y0:y0 + out.shape[-2], :] = out

    type(seg_runner).__call__ = flaky
    try:
        report = Report()
        engine = WindowEngine(seg_runner, windowing, report)
        engine.add(Canvas(TensorSource(x), lambda p: p, on_rows, lambda: None, failures.append))
        engine.flush()
    finally:
        type(seg_runner).__call__ = real_call
    assert not failures and report.oom_retries == 1 and engine.max_planes == 2
    starts = [y for y, _ in rows]
    assert len(rows) > 2 and starts == sorted(set(starts)) and sum(n for _, n in rows) == 300  # each row once
    assert (got - expected).abs().max().item() < 1e-5


def test_finite_rows_finds_each_non_finite_sample_and_not_an_overflowing_sum():
    y = torch.rand(5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    y[1, 2, 7, 7] = float("nan")
    y[2, 0, 0, 0], y[2, 1, 0, 0] = float("inf"), float("-inf")  # their sum is nan
    y[3, 0, 4, 4] = float("-inf")
    y[4] = 3e38  # every value finite, their sum is not
    assert finite_rows(y) == [True, False, False, False, True]
    assert finite_rows(y.bfloat16()) == [True, False, False, False, True]
    assert finite_rows(y[:1]) == [True]


def test_non_finite_reduced_precision_output_is_rerun_in_fp32():
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    runner = prepare_model(loaded, torch.device("cpu"), torch.bfloat16)
    expected = prepare_model(loaded, torch.device("cpu"), torch.float32)
    x = torch.rand(2, 3, 12, 12)
    real = runner.__class__.__call__

    def overflowing(self, inp):
        y = real(self, inp)
        y[:, 0, 0, 0] = float("inf")  # what an fp16 overflow looks like
        return y

    runner.__class__ = type("OverflowRunner", (runner.__class__,), {"__call__": overflowing})
    report = Report()
    got = upscale_tensor(runner, x, report=report)
    assert torch.isfinite(got).all() and report.fp32_reruns == 2  # both samples had an inf
    torch.testing.assert_close(got, upscale_tensor(expected, x), rtol=0, atol=0)


# -- a toy task through a whole job ------------------------------------------------------------------
class Brightness(Task):
    """Gray level of the model output, plus an extra output with its negative."""

    name = "brightness"
    main = "gray"

    def model_input(self, pixels):
        return torch.from_numpy(np.ascontiguousarray(pixels[..., :3])).permute(2, 0, 1).float().div(255)[None]

    def post(self, y, meta, rows):
        g = y[0].mean(0).clamp(0, 1).mul(255).round().to(torch.uint8).unsqueeze(-1)
        return {"gray": g, "negative": 255 - g}

    def outputs(self, dst, streamed):
        return {"gray": dst, "negative": dst.with_name(f"{dst.stem}_neg{dst.suffix}")}

    def encode(self, name, arr, meta, path, opts):
        write_image(arr, ImageMeta("L", 8, "PNG"), path, opts)


def _toy_job(src, dst, runner, tile=0):
    plan = plan_jobs([src], dst, fmt="png")
    opts = JobSpec(windowing=Windowing(tile=tile, overlap=8), workers=0, encode=EncodeOptions())
    return run_job(Brightness(runner), plan, opts, log=lambda m: None)


def test_a_toy_task_gets_decoding_batching_extras_errors_and_resume(tmp_path):
    runner = _runner(create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8))
    src = tmp_path / "in"
    src.mkdir()
    for i, (h, w) in enumerate([(20, 30), (20, 30), (45, 17)]):
        Image.fromarray(gradient_rgb(h, w, seed=i)).save(src / f"{i}.png")
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = _toy_job(src, tmp_path / "out", runner)
    assert report.done == 3 and [Path(p).name for p, _ in report.failed] == ["bad.png"]
    for i, (h, w) in enumerate([(20, 30), (20, 30), (45, 17)]):
        gray = decode_image(tmp_path / "out" / f"{i}.png")[0]
        neg = decode_image(tmp_path / "out" / f"{i}_neg.png")[0]
        assert gray.shape == (2 * h, 2 * w, 1) and np.array_equal(neg, 255 - gray)
    again = _toy_job(src, tmp_path / "out", runner)
    assert again.done == 0 and again.skipped == 3 and len(again.failed) == 1


def test_a_streamed_tiled_tiff_equals_the_same_pixels_in_memory(tmp_path):
    import tifffile

    runner = _runner(create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8))
    img = gradient_rgb(150, 70, seed=5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "a" / "big.tif", img, tile=(32, 32), photometric="rgb")
    Image.fromarray(img).save(tmp_path / "b" / "big.png")
    plan = plan_jobs([tmp_path / "a"], tmp_path / "oa")  # same format: a TIFF output, streamed
    opts = JobSpec(windowing=Windowing(tile=40, overlap=8), workers=0)
    streamed = run_job(Brightness(runner), plan, opts, log=lambda m: None)
    assert streamed.done == 1 and streamed.settings["streamed"] == 1
    in_memory = _toy_job(tmp_path / "b", tmp_path / "ob", runner, tile=40)
    assert in_memory.done == 1 and in_memory.settings["streamed"] == 0
    with tifffile.TiffFile(tmp_path / "oa" / "big.tif") as tf:
        assert tf.is_bigtiff and tf.pages[0].is_tiled
        a = tf.asarray()
    b = decode_image(tmp_path / "ob" / "big.png")[0][..., 0]
    assert a.shape == b.shape == (300, 140)
    assert np.abs(a.astype(int) - b).max() <= 1
    assert np.array_equal(tifffile.imread(tmp_path / "oa" / "big_neg.tif"), 255 - a)
    assert not [p for p in (tmp_path / "oa").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_an_image_that_fails_on_one_window_leaves_the_others_running():
    """Its other windows still queued are dropped; the other images are computed."""
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    runner = _runner(loaded)
    real = runner.__class__.__call__

    def picky(self, inp):
        if bool((inp[:, :, 0, 0] > 0.99).any()):  # the marked window of the marked image
            raise RuntimeError("cannot handle this window")
        return real(self, inp)

    runner.__class__ = type("PickyRunner", (runner.__class__,), {"__call__": picky})
    good, bad = torch.rand(1, 3, 40, 90) * 0.9, torch.rand(1, 3, 40, 90) * 0.9
    bad[..., 0, 0] = 1.0  # only the first window of this image sees it
    done, failed = [], []
    engine = WindowEngine(runner, Windowing(tile=30, overlap=4, batch_size=1), Report())
    for name, x in (("bad", bad), ("good", good)):
        engine.add(Canvas(TensorSource(x), lambda p: p, lambda y0, rows: None, lambda n=name: done.append(n),
                          lambda reason, n=name: failed.append((n, reason))))
    engine.flush()
    assert done == ["good"] and failed == [("bad", "model failed (RuntimeError: cannot handle this window)")]


def test_a_small_tiled_tiff_is_not_left_waiting_for_a_batch(tmp_path):
    """A region-read TIFF whose one window is smaller than a batch's worth of pixels: it runs when its
    turn comes, instead of waiting in the batch queue (where it was once dropped without a word)."""
    import tifffile

    from pixbatch.tasks.upscale import UpscaleTask

    tifffile.imwrite(tmp_path / "small.tif", gradient_rgb(40, 30), tile=(16, 16), photometric="rgb")
    runner = prepare_model(create_model("edsr_tiny_x2"), torch.device("cpu"), torch.float32)
    plan = plan_jobs([tmp_path / "small.tif"], tmp_path / "out")
    report = run_job(UpscaleTask(runner), plan, JobSpec(), log=lambda m: None)
    assert report.done == 1 and report.settings["streamed"] == 1
    assert tifffile.imread(tmp_path / "out" / "small.tif").shape == (80, 60, 3)


class _CollectingSet(torch.utils.data.Dataset):
    """Each item runs the collector in the worker and says which process it is."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        import gc

        gc.collect()
        return os.getpid()


class _Finalised:
    def __init__(self, log):
        self.log, self.cycle = log, self

    def __del__(self):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")


@pytest.mark.parametrize("start", ["start_loader", "plain iter"])
def test_decode_workers_never_finalise_what_they_inherit(tmp_path, start):
    """Garbage the parent holds when decode workers fork is finalised in the parent, never in a worker:
    an OpenVINO compiled model finalised in a forked worker waits forever for executor threads the
    child does not have, and the job hangs. A plain iter() lets the worker finalise it."""
    import gc

    from torch.utils.data import DataLoader

    from pixbatch.runtime.sources import start_loader

    log = tmp_path / "finalised"
    gc.disable()  # keep the garbage uncollected until the workers fork
    try:
        _Finalised(log)
        loader = DataLoader(_CollectingSet(), batch_size=None, num_workers=1)
        workers = set(int(p) for p in (start_loader(loader) if start == "start_loader" else iter(loader)))
    finally:
        gc.enable()
    gc.collect()
    finalised_in = {int(line) for line in log.read_text().split()}
    if start == "start_loader":
        assert finalised_in == {os.getpid()} and not finalised_in & workers
    else:
        assert finalised_in & workers  # what the fix prevents


def test_automatic_decode_workers_leave_a_two_core_cpu_to_the_model(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert decode_workers(None, 100, cpu_compute=True) == 0  # the model already keeps both cores busy
    assert decode_workers(None, 100, cpu_compute=False) == 1  # a GPU computes: one core decodes
    assert decode_workers(2, 100, cpu_compute=True) == 2  # asked for: given
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert decode_workers(None, 100, cpu_compute=True) == 4
    assert decode_workers(None, 3, cpu_compute=True) == 0  # a handful of files
