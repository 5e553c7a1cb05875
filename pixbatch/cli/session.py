"""Turn command-line choices into a prepared Runner, or one clear StartupError (the messages name the
command to use instead)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from pixbatch.models import LoadedModel
from pixbatch.runtime.device import StartupError, compile_by_default, resolve_device, resolve_precision
from pixbatch.runtime.prepare import Runner, prepare_model
from pixbatch.runtime.spec import ComputeSpec, ModelSpec, NoDefaultModelError, Precision
from pixbatch.tasks.defaults import SEGMENT, STYLIZE, UPSCALE

TASK_COMMAND = {"sr": "pixbatch upscale", "seg": "pixbatch segment", "style": "pixbatch stylize"}
TASK_DEFAULTS = {"sr": UPSCALE, "seg": SEGMENT, "style": STYLIZE}


def _onnx_fits(info, task: str) -> bool:
    """Whether an ONNX file whose task was guessed (not in its metadata) can be run as ``task``."""
    guessed = (info.training or {}).get("onnx", {}).get("found", {}).get("task") == "probe"
    if task == "seg":
        return guessed and info.scale == 1
    return info.scale == 1 and info.out_channels == 3 and (guessed or info.task in ("sr", "style"))


def load_model(spec: ModelSpec):
    """The model a command asked for (its task's default when it named none), checked against the task
    and the scale asked for; else StartupError."""
    from pixbatch.models import UnknownModelError, UnsupportedModelError, create_model

    model_name, scale, task = spec.name, spec.scale, spec.task
    try:
        name = model_name or TASK_DEFAULTS[task].model_for(scale)
        loaded = create_model(name, scale=scale, onnx=spec.onnx, denoise=spec.denoise)  # scale: a multi-scale file's branch
    except (UnknownModelError, UnsupportedModelError, NoDefaultModelError, FileNotFoundError) as exc:
        raise StartupError(str(exc)) from None
    info = loaded.info
    if info.source == "onnx" and info.task != task and _onnx_fits(info, task):
        # the command names the task of an ONNX file whose metadata does not: image to image at 1x is a style
        # net for stylize and a restoration model for upscale; 3 channels at 1x are 3 classes for segment
        from dataclasses import replace

        loaded.info = info = replace(info, task=task)
        loaded.module.task = task
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


def load_runner(model: ModelSpec, compute: ComputeSpec, *, n_jobs: int, job_pixels: int | None = None,
                info: Callable[[str], None] | None = None, loaded: LoadedModel | None = None,
                notice: Callable[[str], None] | None = None) -> Runner:
    """The prepared model of a command, or StartupError; ``info`` receives one line describing it, ``notice``
    a line before a long wait (int8's quantization).
    ``n_jobs`` and ``job_pixels`` (input pixels) size the job for the choices that depend on it;
    ``loaded``: ``model`` as ``load_model`` already loaded it."""
    device = resolve_device(compute.device)
    loaded = loaded if loaded is not None else load_model(model)
    dtype = resolve_precision(compute.precision, device, loaded.info)
    compile_ = compute.compile if compute.compile is not None else compile_by_default(device, n_jobs)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    what = {"sr": f"x{loaded.info.scale}", "style": "style"}.get(loaded.info.task,
                                                           f"{loaded.info.out_channels} output channel(s)")
    if loaded.info.denoise is not None:
        what += f", denoise {loaded.info.denoise:g}"
    (info or (lambda message: None))(f"model {loaded.info.name} ({loaded.info.arch}, {what}, {loaded.info.params:,} "
             f"parameters) on {device}, {str(dtype).removeprefix('torch.')}, compile={compile_}")
    int8 = quantized(loaded, compute, device, dtype, info, notice) if compute.precision == Precision.INT8 else None
    try:
        runner = prepare_model(loaded, device, dtype, channels_last=compute.channels_last, compile=compile_,
                               kernels=compute.kernels, backend=compute.backend, job_pixels=job_pixels, int8=int8)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if runner.backend_note:
        (info or (lambda message: None))(runner.backend_note)
    return runner


def quantized(loaded: LoadedModel, compute: ComputeSpec, device: torch.device, dtype: torch.dtype,
              info: Callable[[str], None] | None = None, notice: Callable[[str], None] | None = None):
    """The int8 model of ``--precision int8`` (runtime/int8.py), calibrated on the shipped set or on the
    job's images (``compute.calibrate_on``), from the cache or made now; else StartupError, with the
    measured loss when int8 is beyond its bound."""
    from pixbatch.runtime.int8 import INT8_NEEDS, int8_available, summary_line
    from pixbatch.tasks.calibration import int8_for

    if device.type != "cpu":
        raise StartupError("--precision int8 runs on the CPU, through OpenVINO: use --device cpu")
    if loaded.info.source == "onnx":
        raise StartupError("--precision int8 quantizes PyTorch models; for an ONNX file use --precision bf16 or fp32")
    if not int8_available():
        raise StartupError(INT8_NEEDS)
    if compute.calibrate_on_input and not compute.calibrate_on:
        raise StartupError("--calibrate-on-input found no images among the inputs to do (it reads no video frames); "
                           "leave it out to calibrate on the set shipped with pixbatch")
    say = info or (lambda message: None)
    try:
        made = int8_for(loaded, compute.calibrate_on, dtype, log=notice or say)
    except ValueError as exc:  # Int8Refused included: the measured loss, in one line
        raise StartupError(str(exc)) from None
    say(summary_line(made.entry))
    return made
