"""Choose the device and the compute dtype."""

from __future__ import annotations

import torch

from pixbatch.models import ModelInfo

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def resolve_precision(spec: str, device: torch.device, info: ModelInfo) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it when the model supports it, then fp16, else fp32.
    On the CPU ``auto`` is fp32: reduced-precision convolutions are slower there on most CPUs."""
    if spec == "auto":
        if device.type != "cuda":
            return torch.float32
        if info.supports_bf16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if info.supports_fp16 else torch.float32
    dtype = PRECISIONS[spec]
    if dtype is torch.float16 and not info.supports_fp16:
        raise StartupError(f"{info.name} does not support fp16; use --precision fp32 or auto")
    if dtype is torch.bfloat16 and not info.supports_bf16:
        raise StartupError(f"{info.name} does not support bf16; use --precision fp32 or auto")
    return dtype
