"""Choose the device and the compute dtype."""

from __future__ import annotations

import torch

from pixbatch.models import ModelInfo

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_name(dtype: torch.dtype) -> str:
    """The --precision word for a compute dtype ("bf16" for torch.bfloat16)."""
    return {v: k for k, v in PRECISIONS.items()}[dtype]


COMPILE_MIN_JOBS = 32  # torch.compile pays for its start-up (tens of seconds) on GPU jobs this large


def compile_by_default(device: torch.device, n_jobs: int) -> bool:
    """Whether a job of ``n_jobs`` images is compiled when the user did not say."""
    return device.type == "cuda" and n_jobs >= COMPILE_MIN_JOBS


class StartupError(RuntimeError):
    """The job cannot start (bad device, model or destination); one clear message, exit code 1."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise StartupError(f"unknown device {spec!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StartupError("--device cuda was asked for, but no CUDA GPU is available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StartupError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise StartupError(f"unsupported device {spec!r}; use auto, cpu or cuda[:N]")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 convolutions run several times faster than fp32 (measured 2.2x over
    fp32 channels-last for edsr_tiny_x4 on an AVX512-BF16 EPYC). Without them bf16 is emulated, slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def training_amp_dtype(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """bf16 autocast for training: forced on/off by ``amp``, else where it is fast (a GPU, or a CPU
    with native bf16). None means fp32."""
    if amp is False:
        return None
    return torch.bfloat16 if (amp or device.type == "cuda" or cpu_has_native_bf16()) else None


def resolve_precision(spec: str, device: torch.device, info: ModelInfo) -> torch.dtype:
    """``int8``: bf16 or fp32 as auto picks on the CPU, for what int8 leaves in floating point.
    ``auto``: an ONNX file in float32 (fed the type it declares); on a GPU, bf16 when device and model support it, then fp16, else fp32; on the CPU,
    bf16 when the CPU computes it natively and the model supports it, else fp32."""
    if spec == "auto":
        if info.source == "onnx":  # an ONNX file computes in the type it declares unless asked otherwise
            return torch.float32
        if device.type != "cuda":
            return torch.bfloat16 if info.supports_bf16 and cpu_has_native_bf16() else torch.float32
        if info.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if info.supports_fp16 else torch.float32
    if spec == "int8":  # what the layers int8 leaves in floating point (and PyTorch's fallbacks) compute in
        return torch.bfloat16 if info.supports_bf16 and cpu_has_native_bf16() else torch.float32
    dtype = PRECISIONS[spec]
    if dtype is torch.float16 and not info.supports_fp16:
        raise StartupError(f"{info.name} does not support fp16; use --precision fp32 or auto")
    if dtype is torch.bfloat16 and not info.supports_bf16:
        raise StartupError(f"{info.name} does not support bf16; use --precision fp32 or auto")
    return dtype
