import numpy as np
import torch

from pixbatch.io.regions import RegionSource
from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.runtime.segment import Segmenter, SegmentOptions, palette
from tests.conftest import gradient_rgb


def _runner():
    torch.manual_seed(0)
    loaded = create_model("unet", pretrained=False, base=4, depth=2)
    return prepare_model(loaded, torch.device("cpu"), torch.float32, kernels="torch")


def test_out_of_memory_halves_the_batch_without_emitting_a_band_twice():
    runner = _runner()
    img = gradient_rgb(300, 260, seed=4)
    opts = SegmentOptions(tile=128, overlap=32, batch_size=4, probabilities="float")
    expected = Segmenter(runner, opts).run_in_memory(img)

    calls = {"n": 0}
    real_call = type(runner).__call__

    def flaky(self, x):
        calls["n"] += 1
        if x.shape[0] > 1 and calls["n"] == 4:  # after some bands were emitted
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_call(self, x)

    type(runner).__call__ = flaky
    try:
        seg = Segmenter(runner, opts)
        rows = []
        for y0, outs in seg.bands(RegionSource(img)):
            rows.append((y0, outs["mask"].shape[0]))
            got = outs
    finally:
        type(runner).__call__ = real_call
    assert seg.batch == 2
    starts = [y for y, _ in rows]
    assert starts == sorted(set(starts)) and sum(n for _, n in rows) == 300  # each row exactly once
    np.testing.assert_array_equal(got["mask"], expected["mask"][rows[-1][0]:])


def test_palette_is_distinct_for_the_first_classes():
    pal = palette()
    assert pal.shape == (256, 3) and tuple(pal[0]) == (0, 0, 0)
    assert len({tuple(c) for c in pal[:64]}) == 64
