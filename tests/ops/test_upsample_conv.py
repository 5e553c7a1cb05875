"""The sub-pixel form of nearest-upsample -> 3x3 conv against its definition."""

from __future__ import annotations

import pytest
import torch

from pixbatch.models import build_registered
from pixbatch.ops.upsample_conv import subpixel_weight, upsample_conv, upsample_conv_ref


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 5, 7, 11), (1, 13, 3, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_the_definition(padding_mode, shape, channels_last):
    torch.manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    weight, bias = torch.randn(3, c, 3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    if padding_mode == "reflect" and min(h, w) < 1:
        pytest.skip("reflection needs a pixel")
    ref = upsample_conv_ref(x, weight, bias, padding_mode)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = upsample_conv(x, weight, bias, padding_mode)
    assert got.shape == ref.shape == (n, 3, 2 * h, 2 * w)
    layout = torch.channels_last if channels_last and not x.is_contiguous() else torch.contiguous_format
    assert got.is_contiguous(memory_format=layout)  # the input's layout
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    got32 = upsample_conv(x.float(), weight.float(), None, padding_mode)
    assert (got32 - upsample_conv_ref(x, weight, None, padding_mode)).abs().max() < 1e-4


def test_phase_kernels_sum_the_taps_that_land_on_the_same_input_pixel():
    w = torch.arange(9.0).view(1, 1, 3, 3)
    k = subpixel_weight(w).view(2, 2, 2, 2)  # (a, b) phases of the one output channel
    # phase (0, 0): rows x[i-1] <- w row 0, x[i] <- w rows 1 + 2; the same for columns
    assert k[0, 0].tolist() == [[0.0, 1.0 + 2.0], [3.0 + 6.0, 4.0 + 5.0 + 7.0 + 8.0]]
    assert k.sum().item() == 4 * w.sum().item()  # every tap lands once in every phase


def test_other_kernels_fall_back_to_the_definition():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(upsample_conv(x, w, None), upsample_conv_ref(x, w, None))


def test_transformer_net_gives_the_same_output_with_and_without_the_rewrite():
    torch.manual_seed(0)
    model = build_registered("johnson_style").eval()
    x = torch.rand(1, 3, 44, 52)
    with torch.no_grad():
        fast = model(x)
        for m in model.modules():
            if getattr(m, "subpixel", False):
                m.subpixel = False
        slow = model(x)
    assert (fast - slow).abs().max() <= 1e-4 * slow.abs().max()
