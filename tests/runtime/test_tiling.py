import pytest
import torch

from pixbatch.models import create_model
from pixbatch.runtime.pipeline import Report, upscale_tensor
from pixbatch.runtime.prepare import prepare_model
from pixbatch.runtime.tiling import plan_windows
from tests.conftest import COMPACT, requires_data


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "multiple"),
                         [(100, 37, 32, 5, 1), (1030, 700, 512, 36, 1), (64, 64, 16, 20, 1), (99, 130, 40, 7, 8),
                          (20, 20, 0, 4, 1)])
def test_cores_partition_the_image_with_enough_context(h, w, tile, overlap, multiple):
    windows = plan_windows(h, w, tile, overlap, multiple=multiple)
    owner = torch.zeros(h, w, dtype=torch.int32)
    for win in windows:
        assert 0 <= win.y0 and win.y0 + win.h <= h and 0 <= win.x0 and win.x0 + win.w <= w
        assert win.cy0 >= win.y0 and win.cy0 + win.ch <= win.y0 + win.h
        # context on every side: at least the overlap, or the window reaches the true border
        assert win.cy0 - win.y0 >= overlap or win.y0 == 0
        assert win.y0 + win.h - (win.cy0 + win.ch) >= overlap or win.y0 + win.h == h
        assert win.cx0 - win.x0 >= overlap or win.x0 == 0
        assert win.x0 + win.w - (win.cx0 + win.cw) >= overlap or win.x0 + win.w == w
        if tile:
            assert win.ch <= tile and win.cw <= tile
        owner[win.cy0:win.cy0 + win.ch, win.cx0:win.cx0 + win.cw] += 1
    assert bool((owner == 1).all())
    assert len({(win.h, win.w) for win in windows}) == 1  # equal shapes: they batch together


def _runner(loaded):
    return prepare_model(loaded, torch.device("cpu"), torch.float32)


def _assert_tiled_equals_whole(runner, h, w, tile):
    torch.manual_seed(0)
    x = torch.rand(2, 3, h, w)
    whole = upscale_tensor(runner, x)
    tiled = upscale_tensor(runner, x, tile=tile, batch_size=3)
    assert tiled.shape == whole.shape == (2, 3, h * runner.info.scale, w * runner.info.scale)
    err = (tiled - whole).abs().max().item()
    assert err < 1e-4, err
    return x, whole


def test_tiled_equals_whole_for_our_model():
    torch.manual_seed(0)
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=3)
    runner = _runner(loaded)
    x, whole = _assert_tiled_equals_whole(runner, 61, 83, tile=20)
    # and the overlap matters: too little context gives a measurable seam
    seamy = upscale_tensor(runner, x, tile=20, overlap=1)
    assert (seamy - whole).abs().max().item() > 1e-3


@requires_data
def test_tiled_equals_whole_for_foreign_model():
    _assert_tiled_equals_whole(_runner(create_model(COMPACT)), 57, 70, tile=24)


def test_size_multiple_is_honoured():
    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    loaded.info = type(loaded.info)(**{**loaded.info.as_dict(), "size_multiple": 8})
    seen = []
    module = loaded.module

    class Spy(torch.nn.Module):
        scale = 2

        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return module(x)

    loaded.module = Spy()
    y = upscale_tensor(_runner(loaded), torch.rand(1, 3, 21, 35), tile=16, overlap=3)
    assert y.shape == (1, 3, 42, 70)
    assert seen and all(h % 8 == 0 and w % 8 == 0 for h, w in seen)


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
    got = upscale_tensor(runner, x)  # one whole-image batch of 3 first, then halves, then tiles
    assert calls[0] == (3, 3, 40, 50)
    assert any(c[0] == 1 and c[-1] * c[-2] <= 1500 for c in calls)
    assert (got - expected).abs().max().item() < 1e-4


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


def test_alpha_is_premultiplied_so_edges_keep_their_colour():
    """A white shape on transparent black: a bilinear 'model' must not darken its soft edge."""
    from pixbatch.runtime.pipeline import pixels_from_planes, planes_from_pixels

    class Bilinear(torch.nn.Module):
        scale = 2

        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    loaded = create_model("edsr_tiny_x2", pretrained=False, n_resblocks=1, n_feats=8)
    loaded.module = Bilinear()
    runner = _runner(loaded)
    rgba = torch.zeros(8, 8, 4, dtype=torch.uint8)
    rgba[:, 4:] = 255  # right half opaque white, left half transparent black
    y = upscale_tensor(runner, planes_from_pixels(rgba, 8))
    out = pixels_from_planes(y, "RGBA", 8)
    visible = out[..., 3] > 0
    assert bool(visible.any()) and int(out[..., :3][visible].min()) >= 254
    # whereas upscaling straight (non-premultiplied) colour darkens the edge
    straight = upscale_tensor(runner, rgba[..., :3].permute(2, 0, 1).float().div(255)[None])
    assert float(straight[0][:, visible].min()) < 0.9
