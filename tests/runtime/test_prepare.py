import pytest
import torch

from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model


@pytest.mark.slow
def test_compiled_runner_matches_eager_and_reuses_one_graph_per_bucket(tiny_checkpoint):
    """torch.compile'd models get sizes padded to COMPILE_BUCKET: images of different sizes inside one
    bucket share a graph, and the output equals the eager model's away from the padded border."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    loaded = create_model(tiny_checkpoint)
    runner = prepare_model(loaded, torch.device("cpu"), torch.float32, compile=True)
    assert runner.compiled is not None
    eager = prepare_model(create_model(tiny_checkpoint), torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    for h, w in [(40, 50), (33, 61), (64, 64)]:  # one 64x64 bucket
        x = torch.rand(1, 3, h, w)
        y, ref = runner(x), eager(x)
        assert y.shape == ref.shape == (1, 3, 2 * h, 2 * w)
        rf = loaded.info.receptive_field * 2  # output px that can see the mirrored padding
        torch.testing.assert_close(y[..., : 2 * h - rf, : 2 * w - rf], ref[..., : 2 * h - rf, : 2 * w - rf],
                                   rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1
