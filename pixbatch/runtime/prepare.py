"""Prepare a model to run: device, channels-last, autocast dtype, fused kernels, its backend (the fast
path: runtime/backends.py), fp32 reruns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models import LoadedModel, ModelInfo
from pixbatch.runtime.backends import Backend, TorchEager, attach_backend, attach_onnx, openvino_source
from pixbatch.runtime.spec import BackendChoice

NON_FINITE = "model output is NaN or Inf even in fp32 (a damaged or diverged model)"


class ModelFailedError(RuntimeError):
    """The model could not produce a usable output for an input (non-finite even in fp32, or it
    raised); the message is the reason shown to the user."""


@dataclass
class Runner:
    """Calls the model on an NCHW float32 batch in [0, 1] and returns float32 NCHW output.

    ``dtype`` is the autocast dtype. ``compiled`` is the backend of the fast path (None: the module
    itself); ``run_eager`` and ``run_fp32`` (which redoes samples whose reduced-precision output is not
    finite) always run the module. Inputs whose sizes are not a multiple of the model's
    ``size_multiple`` (or smaller than its ``min_size``) are reflect-padded at the bottom/right and
    cropped back, and also up to the multiple the backend asks for (``Backend.size_bucket``)."""

    module: nn.Module
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    compiled: Backend | None = None
    kernels: str = "torch"  # what runs the upsamplers: "torch", or "triton (N fused)"
    int8: bool = False  # the backend runs an int8 model (its layers in floating point compute in ``dtype``)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def precision(self) -> str:
        """What the report says it computes in: "int8", or the dtype ("bfloat16")."""
        return "int8" if self.int8 else str(self.dtype).removeprefix("torch.")

    @property
    def backend(self) -> str:
        """What computes, as the report says it: "torch", or "openvino (...)"."""
        return self.compiled.label if self.compiled is not None else TorchEager.label

    @property
    def backend_note(self) -> str | None:
        """The line -v prints about the backend; None for the default PyTorch path."""
        return self.compiled.note if self.compiled is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.compiled if self.compiled is not None else TorchEager(self.module), self.dtype)

    def run_eager(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, TorchEager(self.module), self.dtype)

    def run_fp32(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, TorchEager(self.module), torch.float32)

    def _run(self, x: torch.Tensor, fn: Backend, dtype: torch.dtype) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = math.lcm(self.info.size_multiple, fn.size_bucket)
        low = self.info.min_size
        ph, pw = -(-max(h, low) // m) * m - h, -(-max(w, low) // m) * m - w  # up to min_size, then a multiple of m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        x = x.contiguous(memory_format=torch.contiguous_format if fn.nchw else self.memory_format)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = fn(x)
        s = self.info.scale
        return y[..., : h * s, : w * s].float()


def prepare_model(loaded: LoadedModel, device: torch.device, dtype: torch.dtype, *,
                  channels_last: bool = True, compile: bool = False, kernels: str = "auto",
                  backend: str = "torch", job_pixels: int | None = None, int8=None) -> Runner:
    """Move the model to the device and layout, substitute fused kernels, and compile if asked.

    ``kernels``: "torch" keeps the model's own layers; "triton" fuses every conv -> PixelShuffle;
    "auto" fuses on CUDA only if the fused model measures faster on this device (never slower), and on
    the CPU (channels-last) always, with the op's channels-last path instead of Triton.
    ``backend`` (CPU only): "openvino" runs the model through OpenVINO (runtime/openvino_backend.py);
    "auto" does so for jobs of ``job_pixels`` >= OPENVINO_MIN_PIXELS when openvino is installed and it
    measures faster than the prepared PyTorch model with outputs that agree (PSNR >= 45 dB); "torch"
    never does. ``attach_backend`` (runtime/backends.py) decides, once the module is prepared. An ONNX
    file's module is a session: nothing is rewritten, and it runs on ONNX Runtime or OpenVINO (``attach_onnx``).
    ``int8`` (an ``Int8Model``, runtime/int8.py): OpenVINO runs that quantized model instead."""
    if loaded.info.source == "onnx":
        runner = Runner(loaded.module.eval(), loaded.info, device, dtype, False)
        attach_onnx(runner, backend, compile, job_pixels)
        return runner
    # one conversion for device and layout (a second pass would copy every weight again)
    module = loaded.module.eval().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    for p in module.parameters():
        p.requires_grad_(False)
    if int8 is not None:
        backend = BackendChoice.OPENVINO
    source = openvino_source(module, device, dtype, compile, backend, job_pixels)  # before the rewrites below
    label = "torch"
    if kernels != "torch":
        from pixbatch.ops.conv_pixel_shuffle import triton_enabled, triton_interpreting
        from pixbatch.runtime.fuse import fuse_upsamplers

        usable = triton_enabled() and (device.type == "cuda" or triton_interpreting())
        if kernels == "triton" and not usable:
            raise ValueError("--kernels triton needs a CUDA GPU and triton (and PIXBATCH_TRITON not 0)")
        if device.type == "cpu" and channels_last and kernels == "auto" and not compile:  # inductor packs its own
            module, label = _rewrite_for_cpu(module)
        elif usable:
            fused, n = fuse_upsamplers(module)
            if n and (kernels == "triton" or _measured_faster(fused, module, device, dtype)):
                module, label = fused, f"triton ({n} fused)"
    runner = Runner(module, loaded.info, device, dtype, channels_last, kernels=label)
    attach_backend(runner, backend, compile, source, int8)
    return runner


def _rewrite_for_cpu(module: nn.Module) -> tuple[nn.Module, str]:
    """The CPU inference rewrites, each measured by benchmarks/bench_cpu_engines.py: batch norms folded
    into their convs; conv -> PixelShuffle through the fused op's channels-last path (the conv writes
    (i, j, c)-ordered channels, so the shuffle is one copy of contiguous runs instead of PixelShuffle's
    element-by-element gather); every other conv as one oneDNN primitive with its weight packed once
    and the following activation as a post-op."""
    from pixbatch.runtime.fuse import fold_batch_norms, fuse_upsamplers, pack_convolutions

    parts = []
    if folded := fold_batch_norms(module):
        parts.append(f"{folded} batch norms folded")
    module, shuffles = fuse_upsamplers(module, cpu_path=True)
    if shuffles:
        parts.append(f"{shuffles} upsamplers fused")
    if packed := pack_convolutions(module):
        parts.append(f"{packed} convs packed for oneDNN")
    return module, "cpu: " + ", ".join(parts) if parts else "torch"


def _measured_faster(candidate: nn.Module, baseline: nn.Module, device: torch.device, dtype: torch.dtype,
                     size: int = 256) -> bool:
    """Time both models on one realistic input with CUDA events (median of 10, after warm-up and
    Triton's autotuning); keep the candidate only if it is faster."""
    if device.type != "cuda":
        return False
    x = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    def median_ms(m: nn.Module) -> float:
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            for _ in range(3):
                m(x)
            times = []
            for _ in range(10):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                m(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return sorted(times)[len(times) // 2]

    return median_ms(candidate) < median_ms(baseline)
