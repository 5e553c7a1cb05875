"""Prepare a model to run: device, channels-last, autocast dtype, torch.compile, fp32 guard."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models import LoadedModel, ModelInfo

COMPILE_BUCKET = 64  # compiled runs pad (mirror, bottom/right) to multiples of this many px
# backend "auto" tries OpenVINO for CPU jobs of at least this many input pixels: its conversion (about
# 1 s per input shape) and the measurement that decides (a few more) are then a small share of the job
OPENVINO_MIN_PIXELS = 64 * 2**20
OPENVINO_PRECISION = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
TORCH_THREADS = torch.get_num_threads()  # PyTorch's own count, before a job on OpenVINO sets it to one
NON_FINITE = "model output is NaN or Inf even in fp32 (a damaged or diverged model)"


class ModelFailedError(RuntimeError):
    """The model could not produce a usable output for an input (non-finite even in fp32, or it
    raised); the message is the reason shown to the user."""


@dataclass
class Runner:
    """Calls the model on an NCHW float32 batch in [0, 1] and returns float32 NCHW output.

    ``dtype`` is the autocast dtype; ``run_fp32`` is the eager full-precision path used to redo
    samples whose reduced-precision output is not finite. Inputs whose sizes are not a multiple
    of the model's ``size_multiple`` (or smaller than its ``min_size``) are reflect-padded at the
    bottom/right and cropped back; a torch.compile'd model gets sizes rounded up to ``COMPILE_BUCKET``
    the same way, so images of many sizes reuse a few graphs instead of recompiling for each (and
    hitting dynamo's recompile limit). OpenVINO's (``backend`` not "torch") gets exact sizes, NCHW: it
    compiles per shape cheaply, and its outputs then equal the PyTorch model's."""

    module: nn.Module
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    compiled: nn.Module | None = None
    kernels: str = "torch"  # what runs the upsamplers: "torch", or "triton (N fused)"
    backend: str = "torch"  # what runs ``compiled``: "torch", or "openvino (...)"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.compiled if self.compiled is not None else self.module, self.dtype)

    def run_eager(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.module, self.dtype)

    def run_fp32(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self.module, torch.float32)

    def _run(self, x: torch.Tensor, fn: nn.Module, dtype: torch.dtype) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.info.size_multiple
        openvino = fn is self.compiled and self.backend != "torch"
        if fn is self.compiled and not openvino:  # one compiled graph per size bucket, not per image size
            m = math.lcm(m, COMPILE_BUCKET)
        low = self.info.min_size
        ph, pw = -(-max(h, low) // m) * m - h, -(-max(w, low) // m) * m - w  # up to min_size, then a multiple of m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        x = x.contiguous(memory_format=torch.contiguous_format if openvino else self.memory_format)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            y = fn(x)
        s = self.info.scale
        return y[..., : h * s, : w * s].float()


def prepare_model(loaded: LoadedModel, device: torch.device, dtype: torch.dtype, *,
                  channels_last: bool = True, compile: bool = False, kernels: str = "auto",
                  backend: str = "torch", job_pixels: int | None = None) -> Runner:
    """Move the model to the device and layout, substitute fused kernels, and compile if asked.

    ``kernels``: "torch" keeps the model's own layers; "triton" fuses every conv -> PixelShuffle;
    "auto" fuses on CUDA only if the fused model measures faster on this device (never slower), and on
    the CPU (channels-last) always, with the op's channels-last path instead of Triton.
    ``backend`` (CPU only): "openvino" runs the model through OpenVINO (runtime/openvino_backend.py);
    "auto" does so for jobs of ``job_pixels`` >= OPENVINO_MIN_PIXELS when openvino is installed and it
    measures faster than the prepared PyTorch model with outputs that agree (PSNR >= 45 dB); "torch"
    never does."""
    if backend not in ("torch", "openvino", "auto"):
        raise ValueError(f"backend must be 'torch', 'openvino' or 'auto', not {backend!r}")
    # one conversion for device and layout (a second pass would copy every weight again)
    module = loaded.module.eval().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    for p in module.parameters():
        p.requires_grad_(False)
    source = _openvino_source(module, device, dtype, compile, backend, job_pixels)  # before the rewrites below
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
    compiled = torch.compile(module, dynamic=False) if compile else None
    runner = Runner(module, loaded.info, device, dtype, channels_last, compiled, label)
    if source is not None:
        _attach_openvino(runner, source, explicit=backend == "openvino")
    return runner


def _openvino_source(module: nn.Module, device: torch.device, dtype: torch.dtype, compile: bool, backend: str,
                     job_pixels: int | None) -> nn.Module | None:
    """A copy of the model as loaded for OpenVINO to convert, when the backend may be OpenVINO."""
    from pixbatch.runtime.openvino_backend import openvino_available

    if backend == "openvino":
        if device.type != "cpu" or compile or dtype not in OPENVINO_PRECISION:
            raise ValueError("--backend openvino runs on the CPU, without --compile")
        if not openvino_available():
            raise ValueError("--backend openvino needs OpenVINO: pip install 'pixbatch[openvino]'")
    elif (backend == "torch" or device.type != "cpu" or compile or dtype == torch.float16
          or (job_pixels or 0) < OPENVINO_MIN_PIXELS or not openvino_available()):
        return None
    import copy

    from pixbatch.runtime.fuse import fuse_upsamplers

    source = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    # fused upsamplers trace as the blocks-first shuffle (ops/conv_pixel_shuffle.py); run eagerly (the
    # conversion does once) they take the CPU path, never Triton's interpreter
    return fuse_upsamplers(source, cpu_path=True)[0]


def _attach_openvino(runner: Runner, source: nn.Module, *, explicit: bool) -> None:
    """Make OpenVINO the runner's compiled model: always when asked for by name, else only if it
    measures faster than the PyTorch path on a probe image and agrees with it. Either way, when it is
    chosen PyTorch's CPU threads are set to one (runtime/openvino_backend.py says why)."""
    from pixbatch.runtime.openvino_backend import AGREEMENT_DB, OpenVINOModel, agreement_db

    precision = OPENVINO_PRECISION[runner.dtype]
    backend = OpenVINOModel(source, runner.module, precision, task=runner.info.task,
                            in_channels=runner.info.in_channels)
    if explicit:
        runner.compiled, runner.backend = backend, f"openvino ({precision})"
        torch.set_num_threads(1)
        return
    if not backend.converted():
        return
    m = runner.info.size_multiple
    size = -(-max(256, runner.info.min_size) // m) * m
    probe = torch.rand(1, runner.info.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(TORCH_THREADS)  # as PyTorch would run the job (another runner may have set one)
    torch_ms, _ = _median_ms(runner, probe)
    runner.compiled, runner.backend = backend, f"openvino ({precision})"
    torch.set_num_threads(1)
    ov_ms, ov_out = _median_ms(runner, probe)
    if ov_ms < torch_ms and agreement_db(ov_out, runner.run_fp32(probe), runner.info.task) >= AGREEMENT_DB:
        runner.backend = f"openvino ({precision}; {torch_ms / ov_ms:.2f}x PyTorch's speed at {size} px)"
    else:
        runner.compiled, runner.backend = None, "torch"
        torch.set_num_threads(TORCH_THREADS)


def _median_ms(runner: Runner, x: torch.Tensor, repeats: int = 7) -> tuple[float, torch.Tensor]:
    """Median wall time of ``runner(x)`` after two warm-up calls, and its output."""
    import time

    y = runner(x)
    runner(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[repeats // 2], y


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
