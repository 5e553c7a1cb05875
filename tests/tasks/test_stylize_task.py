"""The stylize task's post-processing: strength, preserved colours, alpha, bit depth, --max-side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixbatch.io.decode import ImageMeta
from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.tasks.stylize import StylizeTask, keep_colors, luma, resize_pixels
from tests.conftest import gradient_rgb


@pytest.fixture(scope="module")
def runner(style_checkpoint):
    return prepare_model(create_model(style_checkpoint), torch.device("cpu"), torch.float32)


def post(task: StylizeTask, pixels: np.ndarray, mode: str, bits: int = 8) -> np.ndarray:
    x = task.model_input(pixels)
    y = task.runner(x)
    return task.post(y, ImageMeta(mode, bits, "PNG"), lambda: pixels)["image"].numpy()


def test_strength_zero_gives_the_input_and_one_the_nets_output(runner):
    pixels = gradient_rgb(24, 32)
    assert np.array_equal(post(StylizeTask(runner, strength=0.0), pixels, "RGB"), pixels)
    full = post(StylizeTask(runner), pixels, "RGB").astype(int)
    half = post(StylizeTask(runner, strength=0.5), pixels, "RGB").astype(int)
    assert np.abs(full - pixels).mean() > 10
    # half-way between the input and the net's (unclamped) output, then clamped and rounded
    src = pixels.astype(np.float64) / 255
    y = runner(StylizeTask(runner).model_input(pixels))[0].permute(1, 2, 0).double().numpy()
    expected = np.round(np.clip(src + 0.5 * (y - src), 0, 1) * 255)
    assert np.abs(half - expected).max() <= 1


def test_preserved_colours_keep_the_inputs_chroma(runner):
    pixels = gradient_rgb(24, 32)
    out = post(StylizeTask(runner, preserve_color=True), pixels, "RGB").astype(float)
    diff = out - pixels  # only the luminance changed: the same difference in R, G and B (unless clamped)
    inside = ((out > 0) & (out < 255)).all(-1)
    assert inside.mean() > 0.5
    assert np.abs(diff[inside] - diff[inside].mean(-1, keepdims=True)).max() <= 1.0
    # and the luminance is the net's
    styled = torch.rand(3, 5, 5)
    source = torch.rand(3, 5, 5)
    torch.testing.assert_close(luma(keep_colors(styled, source)), luma(styled))


def test_alpha_passes_through_and_gray_stays_gray_only_with_preserved_colours(runner):
    rgb = gradient_rgb(24, 32)
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))[..., None]
    out = post(StylizeTask(runner), np.concatenate([rgb, alpha], -1), "RGBA")
    assert out.shape == (24, 32, 4) and np.array_equal(out[..., 3:], alpha)
    gray_alpha = np.concatenate([rgb[..., :1], alpha], -1)
    assert post(StylizeTask(runner), gray_alpha, "LA").shape == (24, 32, 4)  # the style brings colour
    kept = post(StylizeTask(runner, preserve_color=True), gray_alpha, "LA")
    assert kept.shape == (24, 32, 2) and np.array_equal(kept[..., 1:], alpha)


def test_sixteen_bit_inputs_give_sixteen_bit_outputs(runner):
    deep = gradient_rgb(24, 32).astype(np.uint16) * 257 + 100
    out = post(StylizeTask(runner), deep, "RGB", bits=16)
    assert out.dtype == np.int32 and out.max() > 255 and out.max() <= 65535
    assert np.array_equal(post(StylizeTask(runner, strength=0.0), deep, "RGB", bits=16), deep)


def test_max_side_shrinks_larger_inputs_only(runner):
    task = StylizeTask(runner, max_side=40)
    assert task.input_pixels(gradient_rgb(30, 100)).shape == (12, 40, 3)
    small = gradient_rgb(30, 40)
    assert task.input_pixels(small) is small
    assert not task.streams and StylizeTask(runner).streams
    deep = resize_pixels(gradient_rgb(30, 100).astype(np.uint16) * 257, 15, 50)
    assert deep.dtype == np.uint16 and deep.shape == (15, 50, 3)
