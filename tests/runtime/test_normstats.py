"""Tiled = whole for nets with instance norm: windows share the whole image's statistics."""

from __future__ import annotations

import pytest
import torch

from pixbatch.models import LoadedModel, build_registered, create_model
from pixbatch.models.info import describe_native
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.jobs import Report
from pixbatch.runtime.normstats import core_span, measure_norm_stats
from pixbatch.runtime.prepare import prepare_model
from pixbatch.runtime.sources import TensorSource
from pixbatch.runtime.windows import Windowing, plan_axis
from pixbatch.tasks.stylize import stylize_tensor
from tests.conftest import DATA, gradient_rgb, requires_data


def runner_for(name: str, dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    module = build_registered(name, **kwargs).eval()
    with torch.no_grad():  # affine norms away from the identity, so errors in the statistics show
        for m in module.modules():
            if hasattr(m, "eps"):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    loaded = LoadedModel(module, describe_native(name, module, source="untrained"))
    return prepare_model(loaded, torch.device("cpu"), dtype, channels_last=False, kernels="torch")


def photo(h: int, w: int) -> torch.Tensor:
    return torch.from_numpy(gradient_rgb(h, w, seed=3)).permute(2, 0, 1)[None].float() / 255


def test_core_spans_partition_the_frame_at_every_stride():
    axis = plan_axis(203, 60, 20, multiple=4)
    assert len(axis) > 2
    for stride in (1, 2, 4):
        covered = []
        for i in range(len(axis)):
            lo, hi = core_span(axis, i, stride)
            start = axis.starts[i] // stride
            assert 0 <= lo < hi <= axis.window // stride
            covered += range(start + lo, start + hi)
        assert covered == list(range(axis.frame // stride))


@pytest.mark.parametrize("name", ["johnson_style", "engstrom_style", "mobilenet_style"])
def test_tiled_output_equals_whole_image_output_and_naive_tiles_do_not(name):
    runner = runner_for(name)
    x = photo(257, 231)  # not multiples of 4: the frame's padded tail counts in the statistics too
    whole = stylize_tensor(runner, x)
    tiled = stylize_tensor(runner, x, tile=64)  # windows of 64 + 2 x 60 (the receptive field) px, 4 x 4
    naive = stylize_tensor(runner, x, tile=64, whole_image_stats=False)
    assert whole.shape == tiled.shape == x.shape
    spread = whole.std()  # an untrained net's output is small: errors relative to it
    assert (tiled - whole).abs().max() < 1e-4 * spread
    assert (naive - whole).abs().max() > 0.1 * spread  # the control: per-window statistics differ visibly


def test_statistics_measured_by_windows_equal_the_whole_images():
    runner = runner_for("johnson_style", width=8)
    x = photo(262, 300)
    engine = WindowEngine(runner, Windowing(tile=100), Report())
    canvas = Canvas(TensorSource(x), lambda p: p, None, None, None)
    canvas.plan = engine.plan(262, 300)
    assert len(canvas.plan) >= 4
    stats = measure_norm_stats(runner, canvas)
    from pixbatch.models.style.norm import norm_layers

    seen = []
    layers = norm_layers(runner.module)
    for layer in layers:
        layer.probe = lambda a: seen.append(torch.var_mean(a.double(), dim=(0, 2, 3), correction=0))
    try:
        runner.run_fp32(x)
    finally:
        for layer in layers:
            layer.probe = None
    assert len(stats) == len(seen) == 15
    for (mean, var), (v_ref, m_ref) in zip(stats, seen):
        torch.testing.assert_close(mean.double(), m_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var.double(), v_ref, rtol=1e-4, atol=1e-5)


@requires_data
def test_engstrom_udnie_tiles_match_the_whole_image():
    loaded = create_model(DATA / "style_weights" / "ml5_lengstrom" / "udnie")
    runner = prepare_model(loaded, torch.device("cpu"), torch.float32, channels_last=False, kernels="torch")
    x = photo(200, 184)
    whole = stylize_tensor(runner, x)
    assert (stylize_tensor(runner, x, tile=64) - whole).abs().max() < 1e-3  # the bar on [0, 1]
    assert (stylize_tensor(runner, x, tile=64, whole_image_stats=False) - whole).abs().max() > 0.05


def test_windows_with_fixed_statistics_never_run_the_compiled_graph():
    """A compiled graph would specialise on one image's statistics: those windows run eagerly."""
    runner = runner_for("johnson_style", width=8)
    x = photo(262, 240)
    expected = stylize_tensor(runner, x, tile=100)

    from pixbatch.runtime.backends import TorchCompiled

    class Refuses(TorchCompiled):
        def __init__(self) -> None:  # a compiled backend that must never run
            pass

        def __call__(self, x):
            raise AssertionError("the compiled graph ran")

    runner.compiled = Refuses()
    torch.testing.assert_close(stylize_tensor(runner, x, tile=100), expected, rtol=0, atol=0)
