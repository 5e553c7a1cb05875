import numpy as np
import pytest
import torch
from PIL import Image

from pixbatch.eval.sr import modcrop
from pixbatch.ops.imresize import imresize, imresize_uint8, resize_matrix
from tests.conftest import DATA, requires_data


@requires_data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_the_standard_set5_lr_images_bit_for_bit(scale):
    for hr_path in sorted((DATA / "sr" / "set5").glob("*.png")):
        hr = modcrop(np.asarray(Image.open(hr_path).convert("RGB")), scale)
        lr = np.asarray(Image.open(DATA / "sr" / "set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"))
        ours = imresize_uint8(hr, 1 / scale)
        assert ours.shape == lr.shape and np.array_equal(ours, lr), hr_path.name


def test_rows_sum_to_one_and_constants_survive():
    for n, out, s in [(10, 5, 0.5), (9, 3, 1 / 3), (7, 28, 4.0), (13, 4, 0.25)]:
        m = resize_matrix(n, out, s)
        assert m.shape == (out, n) and np.allclose(m.sum(1), 1)
    x = torch.full((1, 3, 12, 16), 0.3, dtype=torch.float64)
    assert torch.allclose(imresize(x, 0.25), torch.full((1, 3, 3, 4), 0.3, dtype=torch.float64))


def test_upscaling_matches_known_cubic_weights():
    # upscaling by 2: output pixel 7 (1-based) sits at input coordinate 3.75, so it takes inputs 2..5 at
    # distances 1.75, 0.75, 0.25, 1.25; cubic(a=-0.5) gives (hand-computed) these weights
    m = resize_matrix(8, 16, 2.0)
    np.testing.assert_allclose(m[6, 1:5], [-0.0234375, 0.2265625, 0.8671875, -0.0703125])
    assert m[6, 0] == 0 and not m[6, 5:].any()


@pytest.mark.parametrize(("in_hw", "out_hw"), [((40, 30), (20, 15)), ((40, 30), (27, 31)), ((9, 13), (30, 7))])
def test_row_resampler_streams_the_same_resize(in_hw, out_hw):
    """Rows pushed in uneven bands come out as one resize of the whole (width pass, then height)."""
    from pixbatch.ops.imresize import RowResampler, resize_matrix

    torch.manual_seed(0)
    x = torch.rand(2, 3, *in_hw, dtype=torch.float64)
    (h, w), (oh, ow) = in_hw, out_hw
    mh = torch.from_numpy(resize_matrix(h, oh, oh / h))
    mw = torch.from_numpy(resize_matrix(w, ow, ow / w))
    expected = mh @ x @ mw.T
    rs, got, y = RowResampler(h, w, oh, ow), [], 0
    for n in (1, 4, 2, 7, 3, 100):
        if y >= h:
            break
        first, out = rs.push(x[..., y:y + n, :])
        assert first == sum(g.shape[-2] for g in got)  # output rows in order, without gaps
        got.append(out)
        y += n
    torch.testing.assert_close(torch.cat(got, dim=-2), expected, rtol=0, atol=1e-12)
