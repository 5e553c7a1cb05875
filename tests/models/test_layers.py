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


def test_shapes_only_builds_stay_light():
    """`pixbatch models` builds every architecture on the meta device: ours must not pull in
    torch._dynamo (about a second) through ops that have no meta kernel (torch.eye, normal_)."""
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from pixbatch.models import list_models, model_entry\n"
            "for name in list_models():\n"
            "    with torch.device('meta'):\n"
            "        model_entry(name).build()\n"
            "print('torch._dynamo' in sys.modules, 'torchvision' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"


@pytest.mark.parametrize(("old", "new"), [(4, 2), (4, 3), (3, 2), (2, 2)])
def test_resampled_subpixels_keep_each_output_channel_a_weighted_mean(old, new):
    from pixbatch.models.layers import resample_subpixels

    w = torch.randn(3 * old * old, 5, 3, 3, dtype=torch.float64)
    out = resample_subpixels(w, old, new)
    assert out.shape == (3 * new * new, 5, 3, 3)
    # the sum over sub-pixels is scaled by (new / old)^2: each new sub-pixel's weights sum to one
    for c in range(3):
        torch.testing.assert_close(out[c * new * new:(c + 1) * new * new].sum(0) * (old / new) ** 2,
                                   w[c * old * old:(c + 1) * old * old].sum(0))
    if old == new:
        assert torch.equal(out, w)
    if old == 2 * new:  # blocks of four, averaged
        grid = w.reshape(3, old, old, -1)
        torch.testing.assert_close(out.reshape(3, new, new, -1)[:, 0, 1], grid[:, 0:2, 2:4].mean((1, 2)))
