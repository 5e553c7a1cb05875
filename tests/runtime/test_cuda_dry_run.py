"""The CUDA path of upscale, segment and stylize, run without a GPU on fake tensors.

``FakeTensorMode`` gives tensors a device, dtype, shape and memory layout but no data, so everything
that decides *where* and *how* a computation runs executes for ``device="cuda"`` on a CPU-only machine:
model preparation (device placement in one conversion, channels-last, the fused Triton upsamplers
through the custom op's fake implementation), the window engine (tiling, batching,
stitching), and each task's on-device post-processing (rounding to the output bit depth, un-premultiplied
alpha, thresholds, argmax, probability maps, overlays). A CPU tensor meeting a CUDA one raises, so a
constant created without a device, or a result copied to the host too early, fails here.

What cannot be faked, and is replaced or left out:
- the precision guard's read-back of "is every sample finite" (``batcher.host_flags``: data-dependent;
  every sample is taken as finite) and the GPU memory probe that sizes batches (``device_pixel_budget``:
  CUDA memory statistics; a fixed budget stands in);
- ``--kernels auto``'s timing of fused against unfused models (CUDA events), and the Triton kernel
  itself (its fake implementation gives the output's shape and layout; tests/kernels/test_aot.py
  compiles it for sm_80/sm_90a, tests/ops runs it in Triton's interpreter);
- autocast on CUDA: torch turns ``torch.autocast("cuda")`` off when no CUDA device is present, so
  the dry run computes in fp32 (the runner's dtype is checked; the bf16/fp16 numerics are not);
- torch.compile for CUDA (inductor generates and compiles Triton code for a real device);
- decoding, pinned host memory and the copy to the device (the DataLoader side), and encoding.
"""

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import pixbatch.runtime.batcher as batcher
from pixbatch.io.decode import ImageMeta
from pixbatch.models import build_registered, create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.runtime.windows import Windowing
from pixbatch.tasks.segment import SegmentTask
from pixbatch.tasks.upscale import UpscaleTask, upscale_tensor

CUDA = torch.device("cuda")


@pytest.fixture
def fake_cuda(monkeypatch):
    """The mode to enter once the model is loaded (checkpoints are real files, read outside it)."""
    monkeypatch.setattr(batcher, "device_pixel_budget", lambda runner: 96 * 96)
    monkeypatch.setattr(batcher, "host_flags", lambda flags: [True] * flags.shape[0])
    return FakeTensorMode(allow_non_fake_inputs=True)


def check_output(y, shape, dtype=torch.float32):
    assert type(y).__name__ == "FakeTensor" and y.device.type == "cuda"
    assert tuple(y.shape) == shape and y.dtype == dtype


@pytest.mark.parametrize("name,kernels", [("edsr_tiny_x4", "triton"), ("edsr_tiny_x2", "torch"), ("rlfn_x4", "triton"),
                                          ("imdn_x3", "torch"), ("span_x4", "torch"), ("safmn_ntire_x4", "torch"),
                                          ("bsrn_x4", "torch"), ("carn_m_x4", "torch")])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_upscale_cuda_path(fake_cuda, name, kernels, dtype):
    loaded = create_model(name)
    with fake_cuda:
        run_upscale(loaded, dtype, kernels)


def run_upscale(loaded, dtype, kernels):
    runner = prepare_model(loaded, CUDA, dtype, kernels=kernels)
    assert runner.dtype == dtype
    assert runner.kernels.startswith("triton (") if kernels == "triton" else runner.kernels == "torch"
    assert all(p.device.type == "cuda" for p in runner.module.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in runner.module.parameters() if p.dim() == 4)
    s = loaded.info.scale
    x = torch.rand(2, 3, 37, 52, device=CUDA)
    y = runner(x)
    check_output(y, (2, 3, 37 * s, 52 * s))
    tiled = upscale_tensor(runner, x[:1], tile=32)  # windows, batching and stitching on the device
    check_output(tiled, (1, 3, 37 * s, 52 * s))
    task = UpscaleTask(runner)
    for mode, bits, planes in (("RGB", 8, 1), ("RGBA", 16, 2)):
        out = task.post(runner(torch.rand(planes, 3, 20, 24, device=CUDA)), ImageMeta(mode, bits, "PNG"), lambda: None)
        check_output(out["image"], (20 * s, 24 * s, 3 if mode == "RGB" else 4),
                     torch.uint8 if bits == 8 else torch.int32)


@pytest.mark.parametrize("classes", [1, 4])
def test_segment_cuda_path(fake_cuda, classes):
    loaded = create_model("unet_drive") if classes == 1 else create_model("unet", base=4, depth=2, num_classes=classes)
    with fake_cuda:
        run_segment(loaded, classes)


def run_segment(loaded, classes):
    runner = prepare_model(loaded, CUDA, torch.bfloat16)
    task = SegmentTask(runner, probabilities="8bit", overlay=True)
    x = torch.rand(1, 3, 64, 80, device=CUDA)
    y = batcher.run_planes(runner, x, Windowing(tile=32, overlap=8, blend=True, mirror_borders=True))
    check_output(y, (1, classes, 64, 80))
    out = task.post(y, ImageMeta("RGB", 8, "PNG"), lambda: np.zeros((64, 80, 3), np.uint8))
    check_output(out["mask"], (64, 80, 1), torch.uint8)
    check_output(out["prob"], (64, 80, classes), torch.uint8)
    check_output(out["overlay"], (64, 80, 3), torch.uint8)


def test_stylize_cuda_path(fake_cuda):
    from pixbatch.models import LoadedModel
    from pixbatch.models.info import describe_native
    from pixbatch.tasks.stylize import StylizeTask

    module = build_registered("johnson_style", width=4)
    loaded = LoadedModel(module, describe_native("johnson_style", module, source="untrained"))
    with fake_cuda:
        runner = prepare_model(loaded, CUDA, torch.bfloat16)
        y = runner(torch.rand(1, 3, 64, 48, device=CUDA))
        check_output(y, (1, 3, 64, 48))
        out = StylizeTask(runner).post(y, ImageMeta("RGB", 8, "PNG"), lambda: np.zeros((64, 48, 3), np.uint8))
        check_output(out["image"], (64, 48, 3), torch.uint8)


def test_the_dry_run_catches_a_cpu_tensor_in_a_cuda_forward(fake_cuda):
    """What the dry run is for: a constant made without a device fails loudly."""

    from pixbatch.models.info import ImageModel, describe_native

    class Leaky(ImageModel):
        receptive_field = 0

        def forward(self, x):
            return x - torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1) * torch.ones(1, device="cpu")

    from pixbatch.models import LoadedModel

    module = Leaky()
    loaded = LoadedModel(module, describe_native("leaky", module, source="untrained"))
    with fake_cuda:
        runner = prepare_model(loaded, CUDA, torch.float32, channels_last=False, kernels="torch")
        with pytest.raises(RuntimeError, match="device"):
            runner(torch.rand(1, 3, 8, 8, device=CUDA))
