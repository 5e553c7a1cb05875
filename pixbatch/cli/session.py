"""Turn command-line choices into a prepared Runner, or one clear StartupError (the messages name the
command to use instead)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pixbatch.runtime.device import StartupError, compile_by_default, resolve_device, resolve_precision
from pixbatch.runtime.prepare import Runner, prepare_model

TASK_COMMAND = {"sr": "pixbatch upscale", "seg": "pixbatch segment", "style": "pixbatch stylize"}


def load_model_for_scale(model_name: str | None, scale: int | None, task: str = "sr"):
    from pixbatch.models import (
        UnknownModelError,
        UnsupportedModelError,
        create_model,
        default_model_for_scale,
    )

    try:
        name = model_name or default_model_for_scale(scale or 4)
        loaded = create_model(name, scale=scale)  # scale picks a multi-scale file's branch; names ignore it
    except (UnknownModelError, UnsupportedModelError, FileNotFoundError) as exc:
        raise StartupError(str(exc)) from None
    info = loaded.info
    if info.task != task:
        kind = {"sr": "a super-resolution", "seg": "a segmentation", "style": "a style transfer"}[info.task]
        raise StartupError(f"{info.name} is {kind} model; use `{TASK_COMMAND[info.task]}`")
    if info.source == "untrained":
        raise StartupError(f"{info.name} has no trained weights in this package; pass a checkpoint "
                           "with --model PATH, or a model listed with weights by `pixbatch models`")
    if scale is not None and scale != info.scale:
        raise StartupError(f"{info.name} upscales by {info.scale}, not {scale}; for x{scale} outputs from it use "
                           f"--outscale {scale} instead of --scale, or choose another model")
    return loaded


def load_runner(device_spec: str, model_name: str | None, scale: int | None, precision: str, compile_: bool | None,
                channels_last: bool, *, n_jobs: int, kernels: str = "auto", backend: str = "torch",
                job_pixels: int | None = None, task: str = "sr", info: Callable[[str], None] | None = None) -> Runner:
    """The prepared model of a command, or StartupError; ``info`` receives one line describing it."""
    device = resolve_device(device_spec)
    loaded = load_model_for_scale(model_name, scale, task)
    dtype = resolve_precision(precision, device, loaded.info)
    if compile_ is None:
        compile_ = compile_by_default(device, n_jobs)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    what = {"sr": f"x{loaded.info.scale}", "style": "style"}.get(loaded.info.task,
                                                           f"{loaded.info.out_channels} output channel(s)")
    (info or (lambda message: None))(f"model {loaded.info.name} ({loaded.info.arch}, {what}, {loaded.info.params:,} "
             f"parameters) on {device}, {str(dtype).removeprefix('torch.')}, compile={compile_}")
    try:
        runner = prepare_model(loaded, device, dtype, channels_last=channels_last, compile=compile_, kernels=kernels,
                               backend=backend, job_pixels=job_pixels)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if runner.backend_note:
        (info or (lambda message: None))(runner.backend_note)
    return runner
