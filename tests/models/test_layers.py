import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models.layers import icnr_, match_size


@pytest.mark.parametrize("scale", [2, 3])
def test_icnr_starts_as_nearest_neighbour_upsampling(scale):
    conv = nn.Conv2d(4, 4 * scale * scale, 3, padding=1, bias=False)
    icnr_(conv.weight, scale)
    x = torch.rand(1, 4, 6, 5)
    y = F.pixel_shuffle(conv(x), scale)
    nearest = F.interpolate(y[:, :, ::scale, ::scale], scale_factor=scale, mode="nearest")
    torch.testing.assert_close(y, nearest)


def test_skip_sizes_are_reconciled():
    x = torch.rand(1, 2, 5, 7)
    assert match_size(x, torch.empty(1, 1, 6, 8)).shape[-2:] == (6, 8)
    assert match_size(x, torch.empty(1, 1, 4, 6)).shape[-2:] == (4, 6)
    assert match_size(x, torch.empty(1, 1, 4, 9)).shape[-2:] == (4, 9)
