import numpy as np
import pytest
import torch

from pixbatch.io.regions import RegionSource
from pixbatch.models import create_model
from pixbatch.runtime.blend import plan_axis, predict_bands, reflect_index, weight_sum, window_1d
from pixbatch.runtime.prepare import prepare_model
from tests.conftest import gradient_rgb


@pytest.mark.parametrize("length, tile, overlap, multiple", [
    (1500, 512, 128, 8), (1000, 256, 64, 16), (100, 512, 128, 8), (513, 256, 96, 32), (7, 64, 16, 8)])
def test_axis_plan_covers_the_image_on_aligned_positions(length, tile, overlap, multiple):
    a = plan_axis(length, tile, overlap, multiple)
    assert a.extent >= length + 2 * a.pad and a.pad % multiple == 0
    assert all(s % multiple == 0 for s in a.starts) and a.tile % multiple == 0
    assert a.starts[-1] + a.tile == a.extent
    w = window_1d(a)
    total = weight_sum(a, w)
    assert total.min() > 0
    if len(a.starts) > 1:  # inside the first and last ramps, neighbouring windows sum to exactly 1
        inner = total[a.overlap:a.extent - a.overlap]
        np.testing.assert_allclose(inner, 1.0, atol=1e-12)


def test_reflect_index_matches_numpy():
    n = 7
    idx = np.arange(-20, 27)
    arr = np.arange(n)
    padded = np.pad(arr, 20, mode="reflect")
    np.testing.assert_array_equal(arr[reflect_index(idx, n)], padded[: idx.size])


@pytest.fixture(scope="module")
def seg_runner():
    torch.manual_seed(0)
    loaded = create_model("unet", pretrained=False, base=4, depth=3)
    for m in loaded.module.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return prepare_model(loaded, torch.device("cpu"), torch.float32, channels_last=True, kernels="torch")


def _probabilities(runner, img, tile, overlap, batch=3):
    out = torch.zeros(1, *img.shape[:2])
    rows = 0
    for y0, band in predict_bands(runner, RegionSource(img), tile, overlap, batch):
        assert y0 == rows  # bands arrive in order, without gaps
        out[:, y0:y0 + band.shape[1]] = band
        rows += band.shape[1]
    assert rows == img.shape[0]
    return torch.sigmoid(out)


@pytest.mark.slow
def test_tiled_blended_output_equals_whole_image(seg_runner):
    """A 1,500 px image: 16 blended 512 px windows vs one whole-image window of the same model."""
    img = gradient_rgb(1500, 1500, seed=3)
    whole = _probabilities(seg_runner, img, 4096, 128)
    tiled = _probabilities(seg_runner, img, 512, 128)
    border = 64
    diff = (whole - tiled).abs()[:, border:-border, border:-border]
    assert diff.max() < 1e-3
    # the same windows without overlap leave seams: the check above can fail
    seams = _probabilities(seg_runner, img, 512, 0)
    assert (whole - seams).abs()[:, border:-border, border:-border].max() > 1e-3
