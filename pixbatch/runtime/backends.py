"""Backends: what runs one batch of model planes. A Runner calls its backend without asking which one it
is; ``attach_backend`` is the one factory that chooses it, from the user's choice and the job, and the
only code that reads a choice's name.

- ``TorchEager``: the prepared module as it is. Every runner has one: fp32 reruns, and windows that carry
  whole-image state, run here whatever the fast path is.
- ``TorchCompiled``: torch.compile of the module; input sizes are padded up to multiples of
  ``COMPILE_BUCKET``, so a few graphs serve every image size instead of one per size.
- ``OpenVINOModel`` (runtime/openvino_backend.py): converted once, compiled per exact NCHW input shape.
- ``OnnxRuntime`` and ``OnnxOpenVINO``: an ONNX file's session, ONNX Runtime's or OpenVINO's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from pixbatch.runtime.spec import BackendChoice

COMPILE_BUCKET = 64  # compiled runs pad (mirror, bottom/right) to multiples of this many px
# backend "auto" tries OpenVINO for CPU jobs of at least this many input pixels: its conversion (about
# 1 s per input shape) and the measurement that decides (a few more) are then a small share of the job
OPENVINO_MIN_PIXELS = 64 * 2**20
# an int8 model's first batch of each shape against PyTorch's: far below int8's own loss (its bound is
# checked on held-out images when it is made), far above what a size branch frozen by the trace gives
INT8_AGREEMENT_DB = 25.0
OPENVINO_PRECISION = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def openvino_precision(dtype: torch.dtype) -> str:
    """OpenVINO's inference precision for a runner of ``dtype``: bf16 only where the CPU computes it natively
    (AVX512-BF16 or AMX). Elsewhere OpenVINO's CPU plugin computes f32 whatever it is asked (an AVX2-only EPYC:
    the same output as fp32), so it is asked for f32 and the report says f32."""
    from pixbatch.runtime.device import cpu_has_native_bf16

    precision = OPENVINO_PRECISION[dtype]
    return "f32" if precision == "bf16" and not cpu_has_native_bf16() else precision
TORCH_THREADS = torch.get_num_threads()  # PyTorch's own count, before a job on OpenVINO sets it to one


class Backend(Protocol):
    """Runs a batch: NCHW in (padded as ``size_bucket`` asks, in the layout ``nchw`` asks), NCHW out."""

    label: str  # what the report's settings say: "torch", "openvino (bf16; 1.29x PyTorch's speed ...)"
    note: str | None  # the line -v prints about it; None for the default PyTorch path
    size_bucket: int  # input sizes are padded up to multiples of this (1: exact sizes)
    nchw: bool  # wants contiguous NCHW (else the runner's memory format)
    graph_compiled: bool  # a torch.compile graph (the report's "compile")

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchEager:
    label, note, size_bucket, nchw, graph_compiled = "torch", None, 1, False, False

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class OnnxRuntime:
    """An ONNX file's ONNX Runtime session, through the module that feeds it (models/onnx_model.py):
    exact sizes, contiguous NCHW float32 in."""

    note, size_bucket, nchw, graph_compiled = None, 1, True, False

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        providers = module.session.get_providers()
        self.label = "onnxruntime" + (" (CUDA)" if "CUDAExecutionProvider" in providers else " (CPU)")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class OnnxOpenVINO(OnnxRuntime):
    """An ONNX file on OpenVINO's CPU plugin: the same module, its session an ``OpenVINOSession``."""

    def __init__(self, module: nn.Module, precision: str) -> None:
        from pixbatch.runtime.openvino_backend import OpenVINOSession

        self.module = module.with_session(OpenVINOSession(module.path, precision))
        self.label = f"openvino ({precision})"


def attach_onnx(runner, choice: str, compile: bool, job_pixels: int | None) -> None:
    """An ONNX file's backend: ONNX Runtime; OpenVINO when asked for by name or for bf16 (which ONNX
    Runtime cannot compute a float32 file in), and with "auto" for CPU jobs of at least
    OPENVINO_MIN_PIXELS where it measures faster on a probe and agrees with ONNX Runtime."""
    from pixbatch.runtime.openvino_backend import openvino_available

    if choice == BackendChoice.TORCH:
        raise ValueError(f"{runner.info.name} is an ONNX model: it runs on ONNX Runtime or OpenVINO (--backend "
                         "auto, onnxruntime or openvino)")
    if compile:
        raise ValueError("--compile compiles PyTorch models; an ONNX model runs on ONNX Runtime or OpenVINO")
    bf16 = runner.dtype == torch.bfloat16
    if choice == BackendChoice.ONNXRUNTIME and bf16:
        raise ValueError("ONNX Runtime computes an ONNX file in the type the file declares; --precision bf16 "
                         "runs it on OpenVINO (--backend auto or openvino)")
    if choice == BackendChoice.OPENVINO or bf16:
        if runner.device.type != "cpu" or not openvino_available():
            raise ValueError(f"{'--precision bf16' if bf16 else '--backend openvino'} runs an ONNX file on "
                             "OpenVINO, on the CPU: pip install 'pixbatch[openvino]' and use --device cpu")
        runner.compiled = OnnxOpenVINO(runner.module, openvino_precision(runner.dtype))
        torch.set_num_threads(1)
        return
    runner.compiled = OnnxRuntime(runner.module)
    if (choice == BackendChoice.ONNXRUNTIME or runner.device.type != "cpu"
            or (job_pixels or 0) < OPENVINO_MIN_PIXELS or not openvino_available()):
        return
    try:
        candidate = OnnxOpenVINO(runner.module, "f32")
    except Exception:  # a file OpenVINO cannot read: ONNX Runtime runs it
        return
    keep_openvino_if_faster(runner, candidate, "f32", "ONNX Runtime")


class TorchCompiled(TorchEager):
    size_bucket, graph_compiled = COMPILE_BUCKET, True

    def __init__(self, module: nn.Module) -> None:
        super().__init__(torch.compile(module, dynamic=False))


def openvino_source(module: nn.Module, device: torch.device, dtype: torch.dtype, compile: bool, choice: str,
                    job_pixels: int | None) -> nn.Module | None:
    """A copy of the model as loaded (before the CPU rewrites) for OpenVINO to convert, when ``choice``
    may make the backend OpenVINO; None when it cannot."""
    from pixbatch.runtime.fuse import fuse_upsamplers
    from pixbatch.runtime.openvino_backend import openvino_available

    if choice not in BackendChoice.words():
        raise ValueError(f"backend must be one of {', '.join(BackendChoice.words())}, not {choice!r}")
    if choice == BackendChoice.ONNXRUNTIME:
        raise ValueError("--backend onnxruntime runs ONNX files; export this model to one first: "
                         "pixbatch export MODEL out.onnx")
    if choice == BackendChoice.OPENVINO:
        if device.type != "cpu" or compile or dtype not in OPENVINO_PRECISION:
            raise ValueError("--backend openvino runs on the CPU, without --compile")
        if not openvino_available():
            raise ValueError("--backend openvino needs OpenVINO: pip install 'pixbatch[openvino]'")
    elif (choice == BackendChoice.TORCH or device.type != "cpu" or compile or dtype == torch.float16
          or (job_pixels or 0) < OPENVINO_MIN_PIXELS or not openvino_available()):
        return None
    source = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    # fused upsamplers trace as the blocks-first shuffle (ops/conv_pixel_shuffle.py); run eagerly (the
    # conversion does once) they take the CPU path, never Triton's interpreter
    return fuse_upsamplers(source, cpu_path=True)[0]


def attach_backend(runner, choice: str, compile: bool, source: nn.Module | None, int8=None) -> None:
    """Give ``runner`` its fast path: torch.compile when asked; OpenVINO when ``source`` was made for it
    (``openvino_source``), always when asked for by name, else only if it measures faster than the
    PyTorch path on a probe image and agrees with it; OpenVINO running ``int8`` (an ``Int8Model``) when
    given. When OpenVINO is chosen PyTorch's CPU threads are set to one (runtime/openvino_backend.py says why)."""
    if compile:
        runner.compiled = TorchCompiled(runner.module)
    if source is None:
        return
    from pixbatch.runtime.openvino_backend import OpenVINOModel

    precision = openvino_precision(runner.dtype)
    if int8 is not None:
        kept = len(int8.entry["float_convolutions"])
        runner.compiled = OpenVINOModel(source, runner.module, precision, task=runner.info.task,
                                        in_channels=runner.info.in_channels, model=int8.model,
                                        agreement=INT8_AGREEMENT_DB, label=f"openvino (int8; {kept} of "
                                        f"{int8.entry['convolutions']} convolutions in {precision})")
        runner.int8 = True
        torch.set_num_threads(1)
        return
    backend = OpenVINOModel(source, runner.module, precision, task=runner.info.task,
                            in_channels=runner.info.in_channels, label=f"openvino ({precision})")
    if choice == BackendChoice.OPENVINO:
        runner.compiled = backend
        torch.set_num_threads(1)
        return
    if backend.converted():
        keep_openvino_if_faster(runner, backend, precision, "PyTorch", reference=runner.run_fp32)


def keep_openvino_if_faster(runner, candidate: Backend, precision: str, first_name: str,
                            reference: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
    """Time the runner's backend (with PyTorch's own threads), then ``candidate`` (an OpenVINO backend, with
    one PyTorch thread) on the probe image; keep the candidate when it is faster and agrees (AGREEMENT_DB)
    with ``reference(probe)`` (default: the first backend's output), its label saying by how much; else put
    the first back."""
    from pixbatch.runtime.openvino_backend import AGREEMENT_DB, agreement_db

    probe, size = probe_input(runner)
    first = runner.compiled
    torch.set_num_threads(TORCH_THREADS)  # as the first would run the job (another runner may have set one)
    first_ms, first_out = median_ms(runner, probe)
    runner.compiled = candidate
    torch.set_num_threads(1)
    try:
        ov_ms, ov_out = median_ms(runner, probe)
    except Exception:  # a model OpenVINO cannot compile or run: the first backend keeps it
        ov_ms, ov_out = float("inf"), None
    want = first_out if reference is None else reference(probe)
    if ov_ms < first_ms and agreement_db(ov_out, want, runner.info.task) >= AGREEMENT_DB:
        candidate.label = f"openvino ({precision}; {first_ms / ov_ms:.2f}x {first_name}'s speed at {size} px)"
    else:
        runner.compiled = first
        torch.set_num_threads(TORCH_THREADS)


def probe_input(runner) -> tuple[torch.Tensor, int]:
    """The input the fast paths are timed on: one 256 px image (the model's fixed size, if it has one)."""
    m = runner.info.size_multiple
    size = runner.info.max_size or -(-max(256, runner.info.min_size) // m) * m
    return torch.rand(1, runner.info.in_channels, size, size, generator=torch.Generator().manual_seed(0)), size


def median_ms(runner, x: torch.Tensor, repeats: int = 7) -> tuple[float, torch.Tensor]:
    """Median wall time of ``runner(x)`` after two warm-up calls, and its output."""
    y = runner(x)
    runner(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[repeats // 2], y
