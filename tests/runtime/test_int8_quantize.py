"""What int8's worker computes (runtime/int8_quantize.py): the score of each task's outputs against the
reference, and when a quantized model is kept."""

from __future__ import annotations

import numpy as np
import pytest

from pixbatch.models import create_model
from pixbatch.runtime.int8 import quality_line
from pixbatch.runtime.int8_quantize import PSNR_CAP, accepted, overflow_fix, score


def test_scores_of_each_task():
    sr, seg, style = (create_model(n).info for n in ("edsr_tiny_x2", "unet_drive", "edsr_tiny_x2"))
    # segmentation: Dice of the masks against fp32's; one logit thresholded at 0, several by their arg max
    ref = np.full((1, 1, 4, 4), -1.0)
    ref[0, 0, :2] = 1.0  # 8 foreground pixels
    y = ref.copy()
    y[0, 0, 0, 0] = -1.0  # one of them lost
    assert score(seg, ref, ref) == 1.0
    assert score(seg, y, ref) == pytest.approx(2 * 7 / 15)
    three = np.zeros((1, 3, 2, 2))
    three[0, 0] = 1.0
    moved = three.copy()
    moved[0, 1, 0, 0] = 2.0  # one pixel of class 0 becomes class 1
    assert score(seg, moved, three) == pytest.approx(np.mean([2 * 3 / 7, 0.0]))
    # style: PSNR against the reference output, capped
    style = type(style)(**{**style.as_dict(), "task": "style"})
    img = np.full((1, 3, 8, 8), 0.5)
    assert score(style, img, img) == PSNR_CAP
    assert score(style, img + 0.01, img) == pytest.approx(40.0)
    # super-resolution: PSNR of the Y channels, scale px shaved
    out = np.full((1, 3, 32, 32), 0.5)
    other = out.copy()
    other[..., 2:-2, 2:-2] += 1 / 255  # one level of R, G and B: 219/255 of a level of Y
    other[..., :2, :] = 0  # inside the shaved border: not counted
    assert score(sr, other, out) == pytest.approx(20 * np.log10(255 / (219 / 255)))


def test_int8_with_every_layer_returned_to_floating_point_is_refused():
    assert accepted(1.0, 8.0, 19, 20) and not accepted(9.0, 8.0, 0, 20)
    assert not accepted(0.0, 8.0, 20, 20)  # within the bound only with no int8 left: nothing gained
    entry = {"task": "sr", "loss": 0.0, "bound": 8.0, "accepted": False, "held_out": 3, "convolutions": 20}
    assert quality_line(entry) == ("within its bound only with all 20 convolutions returned to floating point, "
                                        "on 3 held-out images")


def test_the_overflow_fix_follows_the_cpus_int8_dot_product():
    """Half-range weights everywhere where int8 sums saturate (AVX2 without VNNI), NNCF's first-layer fix
    where VNNI or AMX sum into 32 bits; NNCF's own names, which its OverflowFix takes."""
    assert overflow_fix(["avx2"]) == overflow_fix(["avx2", "avx512f"]) == "enable"
    assert overflow_fix(["avx2", "avx_vnni"]) == overflow_fix(["avx2", "avx512f", "avx512_vnni"]) == "first_layer_only"
    assert overflow_fix(["avx2", "amx_tile", "amx_int8"]) == "first_layer_only"
