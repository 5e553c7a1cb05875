"""OneDNNConv2d computes exactly the conv (+ activation) it replaces, on its oneDNN path and off it."""

import pytest
import torch
from torch import nn

from pixbatch.ops.onednn_conv import OneDNNConv2d, onednn_available

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN")
ACTS = [None, nn.ReLU(), nn.LeakyReLU(0.05), nn.GELU(), nn.SiLU(), nn.Sigmoid()]


def reference(conv, act, x):
    y = conv(x)
    return y if act is None else act(y)


@pytest.mark.parametrize("act", ACTS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("shape", [dict(k=3, padding=1), dict(k=3, padding=0, stride=2), dict(k=1, padding=0),
                                   dict(k=3, padding=2, dilation=2, groups=4)], ids=str)
def test_fp32_matches_the_layers_it_replaces(act, shape):
    torch.manual_seed(0)
    shape = dict(shape)  # parametrize shares the dict between cases
    k = shape.pop("k")
    conv = nn.Conv2d(8, 12, k, **shape).eval()
    x = torch.randn(2, 8, 13, 11).contiguous(memory_format=torch.channels_last)
    fused = OneDNNConv2d(conv, act)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(conv, act, x), rtol=1e-4, atol=1e-4)
        # another input size reuses the packed weight
        x2 = torch.randn(1, 8, 7, 19).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused(x2), reference(conv, act, x2), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_matches_autocast_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1).eval()
    x = torch.randn(1, 16, 20, 20).contiguous(memory_format=torch.channels_last)
    fused = OneDNNConv2d(conv, nn.ReLU())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fused(x), torch.relu(conv(x))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_off_its_path_it_is_the_plain_conv():
    """NCHW inputs and autograd take the module's own conv: same values, gradients flow."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    fused = OneDNNConv2d(conv, nn.ReLU())
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    y = fused(x)
    torch.testing.assert_close(y, torch.relu(conv(x)))
    y.sum().backward()
    assert conv.weight.grad is not None and x.grad is not None


def test_parameters_and_state_dict_are_the_convs_own():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    fused = OneDNNConv2d(conv)
    assert fused.weight is conv.weight and fused.bias is conv.bias
    assert list(fused.state_dict()) == ["weight", "bias"]
    with pytest.raises(ValueError):
        OneDNNConv2d(nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"))
