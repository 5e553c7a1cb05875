import itertools

import numpy as np
import pytest

from pixbatch.runtime.windows import extra_pixels, plan_axis, plan_windows, reflect_index

CASES = list(itertools.product([7, 100, 513, 1500], [0, 5, 32, 256], [0, 5, 20, 64], [1, 8, 16], [0, 64], [False, True]))


@pytest.mark.parametrize(("size", "tile", "context", "multiple", "border", "blend"), CASES)
def test_cores_partition_the_image_inside_aligned_windows_with_enough_context(size, tile, context, multiple, border,
                                                                              blend):
    a = plan_axis(size, tile, context, multiple=multiple, border=border, blend=blend)
    assert a.frame % multiple == 0 and a.window % multiple == 0 and a.border % multiple == 0
    assert a.frame >= size + 2 * border
    assert a.cuts[0] == a.border and a.cuts[-1] == a.border + size and list(a.cuts) == sorted(a.cuts)
    for i, start in enumerate(a.starts):
        assert start % multiple == 0 and 0 <= start and start + a.window <= a.frame  # inside the frame, aligned
        # context on every side: at least ``context``, or the window reaches the frame's edge (a true border)
        assert a.cuts[i] - start >= context or start == 0
        assert start + a.window - a.cuts[i + 1] >= context or start + a.window == a.frame
        lo, hi = a.support(i)
        assert start <= lo and hi <= start + a.window
        if tile and len(a) > 1:
            assert a.cuts[i + 1] - a.cuts[i] <= tile


@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize(("size", "tile", "context", "multiple", "border"),
                         [(1500, 384, 64, 8, 64), (513, 100, 20, 1, 0), (100, 32, 5, 16, 0), (7, 2, 3, 1, 0)])
def test_both_weightings_sum_to_one_over_every_output_pixel(size, tile, context, multiple, border, scale):
    for blend in (False, True):
        a = plan_axis(size, tile, context, multiple=multiple, border=border, blend=blend)
        total = np.zeros(a.frame * scale)
        for i in range(len(a)):
            lo, hi = a.support(i)
            w = a.weights(i, scale)
            assert w.shape == ((hi - lo) * scale,) and w.min() >= 0 and w.max() <= 1
            if not blend:
                assert set(np.unique(w)) <= {1.0}  # crop: each core as is
            total[lo * scale:hi * scale] += w
        np.testing.assert_allclose(total[a.border * scale:(a.border + size) * scale], 1.0, atol=1e-6)
        if blend and len(a) > 1:
            assert a.ramp > 0  # blended windows really overlap


def test_a_frame_that_fits_is_one_window():
    p = plan_windows(584, 565, 896, 64, multiple=16, border=64, blend=True)
    assert len(p) == 1 and p.shape == (720, 704) and p.ys.border == 64
    assert plan_windows(40, 50, 0, 10).shape == (40, 50)
    assert extra_pixels(plan_windows(100, 100, 0, 10)) == 0


def test_reflect_index_matches_numpy():
    n = 7
    idx = np.arange(-20, 27)
    arr = np.arange(n)
    padded = np.pad(arr, 20, mode="reflect")
    np.testing.assert_array_equal(arr[reflect_index(idx, n)], padded[: idx.size])
