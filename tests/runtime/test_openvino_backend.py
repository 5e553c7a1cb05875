"""The OpenVINO backend: graph rewrites that keep the function, exact shapes, the per-shape check
against PyTorch, and when prepare_model uses it."""

import warnings

import pytest
import torch
from torch import nn

from pixbatch.models import create_model
from pixbatch.runtime.backends import OPENVINO_MIN_PIXELS
from pixbatch.runtime.prepare import prepare_model

ov = pytest.importorskip("openvino")

from pixbatch.runtime.openvino_backend import OpenVINOModel, split_concat_convolutions  # noqa: E402

CPU = torch.device("cpu")


def test_concat_convolutions_are_split_without_changing_the_function():
    """unet_drive has one conv over a concat per decoder level: each becomes a sum of two convs, and
    the f32 model still computes the PyTorch model's output."""
    module = create_model("unet_drive").module.eval()
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    model = ov.convert_model(module, example_input=x)
    assert split_concat_convolutions(model) == 3
    assert not [n for n in model.get_ordered_ops() if n.get_type_name() == "Concat"]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = torch.from_numpy(compiled({0: x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(y, module(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["unet_drive", "edsr_tiny_x2"])
def test_openvino_runner_gives_pytorchs_outputs_at_every_size(name):
    """No size buckets: odd sizes and a batch (parallel requests) give the f32 PyTorch model's output,
    and each input shape is compiled as it is."""
    openvino = prepare_model(create_model(name), CPU, torch.float32, backend="openvino")
    reference = prepare_model(create_model(name), CPU, torch.float32, channels_last=False, kernels="torch")
    assert openvino.backend == "openvino (f32)"
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 3, 37, 50), (3, 3, 40, 24), (1, 3, 64, 64)]:
        x = torch.rand(*shape, generator=g)
        torch.testing.assert_close(openvino(x), reference(x), rtol=1e-4, atol=2e-4)
    m = openvino.info.size_multiple  # the runner pads to the model's multiple, never to a bucket
    shapes = {(1, 3, -(-h // m) * m, -(-w // m) * m) for h, w in [(37, 50), (40, 24), (64, 64)]}
    assert set(openvino.compiled.compiled_shapes()) == shapes


class Branching(nn.Module):
    """A conv whose Python adds 0.5 to its output when ``when(x)`` holds, a branch a trace freezes."""

    def __init__(self, when) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.when = when

    def forward(self, x):
        y = self.conv(x)
        return y + 0.5 if self.when(x) else y


def test_a_size_branch_the_conversion_froze_is_converted_again_at_that_size():
    """Converted at 64 px (the branch not taken), the dynamic model is wrong at 96 px: the first batch of
    that shape is checked against PyTorch and the model converted again at 96 px, which takes the branch;
    both shapes then run on OpenVINO with PyTorch's outputs."""
    module = Branching(lambda x: x.shape[-1] > 64).eval()  # converted at 64 px: the branch not taken
    backend = OpenVINOModel(module, module, "f32", task="sr", in_channels=3)
    x64, x96 = torch.rand(1, 3, 64, 64), torch.rand(2, 3, 64, 96)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no shape falls back to PyTorch
        torch.testing.assert_close(backend(x64), module(x64), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(backend(x96), module(x96), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(backend(x96), module(x96), rtol=1e-4, atol=1e-4)
    assert backend.compiled_shapes() == [(1, 3, 64, 64), (1, 3, 64, 96)]


def test_a_shape_openvino_gets_wrong_even_when_converted_at_it_runs_on_pytorch():
    """When the model converted again at the shape still disagrees, PyTorch runs that shape (with a
    warning), and the check is not repeated on the next batch."""
    module = Branching(lambda x: torch.jit.is_tracing()).eval()  # another function whenever traced
    backend = OpenVINOModel(module, module, "f32", task="sr", in_channels=3)
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        with pytest.warns(UserWarning, match="differs from PyTorch"):
            y = backend(x)
        torch.testing.assert_close(y, module(x))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(backend(x), module(x))
    assert backend.compiled_shapes() == []


def test_a_model_openvino_cannot_convert_runs_on_pytorch(monkeypatch):
    from pixbatch.ops.conv_pixel_shuffle import conv_pixel_shuffle

    # the op's torch path: OpenVINO's conversion attempts would run the Triton interpreter (54 s against 2 s)
    monkeypatch.setenv("PIXBATCH_TRITON", "0")

    class Custom(nn.Module):  # our own custom op, traced as itself: OpenVINO has no rule for it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 12, 3, padding=1)

        def forward(self, x):
            return conv_pixel_shuffle(x, self.conv.weight, self.conv.bias, 2)

    module = Custom().eval()
    backend = OpenVINOModel(module, module, "f32", task="sr", in_channels=3)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        with pytest.warns(UserWarning, match="cannot convert"):
            assert not backend.converted()
        torch.testing.assert_close(backend(x), module(x))
    assert backend.compiled_shapes() == []


def test_auto_backend_waits_for_a_large_job_and_keeps_the_outputs():
    small = prepare_model(create_model("unet_drive"), CPU, torch.float32, backend="auto", job_pixels=10**6)
    assert small.backend == "torch" and small.compiled is None
    threads = torch.get_num_threads()
    large = prepare_model(create_model("unet_drive"), CPU, torch.float32, backend="auto",
                          job_pixels=OPENVINO_MIN_PIXELS)
    # measured, so either may win here; whichever did, it says why and computes the same function
    assert large.backend == "torch" or large.backend.startswith("openvino (f32; ")
    assert torch.get_num_threads() == (1 if large.backend != "torch" else threads)
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(large(x), small(x), rtol=1e-3, atol=1e-3)


def test_explicit_openvino_backend_refuses_what_it_cannot_do(monkeypatch):
    loaded = create_model("unet_drive")
    with pytest.raises(ValueError, match="without --compile"):
        prepare_model(loaded, CPU, torch.float32, backend="openvino", compile=True)
    with pytest.raises(ValueError, match="must be"):
        prepare_model(loaded, CPU, torch.float32, backend="onnx")
    import pixbatch.runtime.openvino_backend as backend

    monkeypatch.setattr(backend, "openvino_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'pixbatch\[openvino\]'"):
        prepare_model(loaded, CPU, torch.float32, backend="openvino")
    assert prepare_model(loaded, CPU, torch.float32, backend="auto", job_pixels=10**12).backend == "torch"



@pytest.mark.parametrize("faster", ["queue", "batched"])
def test_a_batch_runs_the_way_measured_faster_with_the_same_outputs(monkeypatch, faster):
    """The first batch of a size runs both ways (parallel one-image requests, one request of the whole
    batch) and the faster is kept; either way gives the PyTorch model's output, batch after batch."""
    from types import SimpleNamespace

    from pixbatch.runtime import openvino_backend

    ticks = iter([0, 2, 10, 11, 20, 22, 30, 31] if faster == "batched" else [0, 1, 10, 12, 20, 21, 30, 32])
    monkeypatch.setattr(openvino_backend, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    module = create_model("unet_drive").module.eval()
    backend = OpenVINOModel(module, module, "f32", task="seg", in_channels=3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(3):
            x = torch.rand(3, 3, 32, 48, generator=g)
            torch.testing.assert_close(backend(x), module(x), rtol=1e-4, atol=2e-4)
    assert backend.batch_ways() == {(1, 3, 32, 48): {3: faster}}
