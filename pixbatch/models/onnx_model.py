"""ONNX models as data (the optional ``onnx`` extra: onnx and onnxruntime): checked, described, and run by
ONNX Runtime as a module the engine calls like any other.

The convention is NCHW, RGB, float32 in [0, 1]. What a file's ``metadata_props`` say (the ``pixbatch.*``
keys ``pixbatch export`` writes) wins; the rest is found by running the model on probe inputs:
- layout: NHWC when the input's last dimension is 1 or 3 and its second is not;
- a fixed input size: static height and width, square (the engine then cuts windows that fit it and pads
  each up to it);
- fp16: the input's element type (it is then fed fp16);
- scale and task: N x the probe's size (N >= 2) is upscaling; K != 3 channels at its size is
  segmentation with K classes (1: binary); 3 channels at its size is image to image;
- the size multiple: the smallest of 1, 2, 4, ..., 64 at which an odd size runs exactly;
- the receptive field: an impulse-response probe (one pixel changed; how far the output moves).
Loading refuses, in one line each: a malformed file, external data outside the model's folder, operators
of custom domains, absurd declared shapes and initialisers larger than ``MAX_WEIGHT_BYTES``."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixbatch.models._registry import UnsupportedModelError
from pixbatch.models.info import LoadedModel, ModelInfo

MISSING = "ONNX models need onnx and onnxruntime: pip install 'pixbatch[onnx]'"
MAX_WEIGHT_BYTES = 4 << 30  # larger initialisers are refused (an SR or segmentation net is megabytes)
MAX_DIM = 1 << 16  # a declared dimension above this is absurd
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
PROBE = 64  # probe inputs are this size (or the model's fixed size)
META = "pixbatch."  # the prefix of pixbatch's metadata keys


def require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise UnsupportedModelError(MISSING) from None
    return onnx, onnxruntime


def check_model_file(path: Path):
    """The parsed model, or UnsupportedModelError saying what is wrong with the file."""
    onnx, _ = require_onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise UnsupportedModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    folder = os.path.realpath(path.parent)
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: e.value for e in tensor.external_data}.get("location", "")
            target = os.path.realpath(os.path.join(folder, where))
            if os.path.commonpath([folder, target]) != folder:
                raise UnsupportedModelError(f"{path}: its weights point outside its folder ({where}); refused")
            total += int({e.key: e.value for e in tensor.external_data}.get("length", 0) or 0)
        else:
            total += len(tensor.raw_data) or int(np.prod(tensor.dims, dtype=np.int64)) * 4
        if total > MAX_WEIGHT_BYTES:
            raise UnsupportedModelError(f"{path}: its weights exceed {MAX_WEIGHT_BYTES >> 30} GiB; refused")
    custom = sorted({n.domain for n in model.graph.node if n.domain not in STANDARD_DOMAINS})
    if custom:
        raise UnsupportedModelError(f"{path}: uses operators of custom domains ({', '.join(custom)}); refused")
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1 or not model.graph.output:
        raise UnsupportedModelError(f"{path}: has {len(inputs)} inputs and {len(model.graph.output)} outputs, not "
                                    "one image in and one out")
    for value in inputs + list(model.graph.output[:1]):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4:
            raise UnsupportedModelError(f"{path}: {value.name} has {len(dims)} dimensions, not 4 (an image batch)")
        if any(d.HasField("dim_value") and not 0 <= d.dim_value <= MAX_DIM for d in dims):
            raise UnsupportedModelError(f"{path}: {value.name} declares an absurd shape; refused")
    return model


class OnnxModule(nn.Module):
    """An ONNX Runtime session as the engine's module: NCHW float32 RGB in [0, 1] in, NCHW float32 out (images
    in [0, 1], or logits), whatever layout, order, range and dtype the file itself wants."""

    task = "sr"

    def __init__(self, session, path: Path, *, nhwc: bool, fp16: bool, bgr: bool, value_range: float,
                 mean: list[float] | None, std: list[float] | None, task: str, batch_fixed: bool) -> None:
        super().__init__()
        self.session, self.path = session, path
        self.input = session.get_inputs()[0].name  # the one input that is not a weight
        self.nhwc, self.fp16, self.bgr, self.value_range = nhwc, fp16, bgr, value_range
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)
        self.task, self.batch_fixed = task, batch_fixed

    def with_session(self, session) -> OnnxModule:
        """This module (the same conversions) running another session with ONNX Runtime's ``run``."""
        other = copy.copy(self)
        other.session = session
        return other

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_fixed and x.shape[0] > 1:  # a file whose batch axis is static runs one image at a time
            return torch.cat([self(x[i:i + 1]) for i in range(x.shape[0])])
        device = x.device
        x = x.detach().float().cpu()
        if self.bgr:
            x = x.flip(1)
        if self.value_range != 1:  # each conversion only where the file asks for it (a copy of the batch each)
            x = x * self.value_range
        if self.mean is not None:
            x = (x - self.mean) / self.std
        arr = x.numpy().astype(np.float16 if self.fp16 else np.float32, copy=False)
        if self.nhwc:
            arr = arr.transpose(0, 2, 3, 1)
        y = self.session.run(None, {self.input: np.ascontiguousarray(arr)})[0]
        if self.nhwc:
            y = y.transpose(0, 3, 1, 2)
        y = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        if self.task != "seg":  # an image: back to the convention
            if self.mean is not None and y.shape[1] == self.mean.shape[1]:
                y = y * self.std + self.mean
            if self.value_range != 1:
                y = y / self.value_range
            if self.bgr:
                y = y.flip(1)
        return y.to(device)


def _metadata(model) -> dict[str, str]:
    return {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}


def _fixed_size(value, nhwc: bool) -> tuple[int | None, int | None]:
    dims = value.type.tensor_type.shape.dim
    h, w = (dims[1], dims[2]) if nhwc else (dims[2], dims[3])
    return (h.dim_value if h.HasField("dim_value") and h.dim_value > 0 else None,
            w.dim_value if w.HasField("dim_value") and w.dim_value > 0 else None)


def load_onnx(path: Path, options: dict | None = None) -> LoadedModel:
    """An ONNX file as a LoadedModel (module: ``OnnxModule``), its ModelInfo from metadata and probes.
    ``options`` (input_order, value_range, mean, std, task) stand in for what the file does not say."""
    onnx, ort = require_onnx()
    model = check_model_file(path)
    meta, options = _metadata(model), options or {}
    weights = {t.name for t in model.graph.initializer}
    value = next(v for v in model.graph.input if v.name not in weights)
    dims = value.type.tensor_type.shape.dim
    last = dims[3].dim_value if dims[3].HasField("dim_value") else None
    second = dims[1].dim_value if dims[1].HasField("dim_value") else None
    nhwc = last in (1, 3) and second not in (1, 3)
    in_channels = (last if nhwc else second) or 3
    fp16 = value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    fixed_h, fixed_w = _fixed_size(value, nhwc)
    if fixed_h != fixed_w:
        raise UnsupportedModelError(f"{path}: takes inputs of {fixed_w or 'any'} x {fixed_h or 'any'} px; of fixed "
                                    "sizes only square ones are supported")
    batch_fixed = dims[0].HasField("dim_value") and dims[0].dim_value == 1
    try:
        session = ort.InferenceSession(str(path), providers=_providers(ort))
    except Exception as exc:
        raise UnsupportedModelError(f"{path}: ONNX Runtime cannot run it ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0][:200]})") from None
    found = {}  # where each value came from: metadata, option, default or probe

    def value(key: str, default, parse=lambda v: v):
        if key in meta:
            found[key] = "metadata"
            return parse(meta[key])
        if options.get(key) is not None:
            found[key] = "option"
            return options[key]
        found[key] = "default"
        return default

    order = value("input_order", "rgb")
    value_range = float(value("value_range", 1.0, float))
    mean = value("mean", None, json.loads)
    std = value("std", [1.0] * len(mean) if mean else None, json.loads)
    module = OnnxModule(session, path, nhwc=nhwc, fp16=fp16, bgr=order == "bgr", value_range=value_range, mean=mean,
                        std=std, task="sr", batch_fixed=batch_fixed)
    size = fixed_h or PROBE, fixed_w or PROBE
    try:
        with torch.inference_mode():
            y = module(torch.full((1, in_channels, *size), 0.5))
    except Exception as exc:
        raise UnsupportedModelError(f"{path}: fails on a {size[1]}x{size[0]} probe input "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    out_channels, scale = int(y.shape[1]), y.shape[2] // size[0]
    if y.shape[2] % size[0] or y.shape[3] != size[1] * scale or scale < 1:
        raise UnsupportedModelError(f"{path}: its output ({tuple(y.shape)}) is not a whole multiple of its input "
                                    f"({size[1]}x{size[0]})")
    task = value("task", "sr" if scale >= 2 or out_channels == 3 else "seg")
    found["task"] = "probe" if found["task"] == "default" else found["task"]
    found["scale"] = found["channels"] = "probe"
    found["layout"], found["input_type"] = "NHWC" if nhwc else "NCHW", "float16" if fp16 else "float32"
    if task == "seg" and scale != 1:
        raise UnsupportedModelError(f"{path}: a segmentation model's output must be its input's size")
    module.task = task
    multiple = int(meta["size_multiple"]) if "size_multiple" in meta else (
        _size_multiple(module, in_channels, scale) if fixed_h is None else 1)
    found["size_multiple"] = "metadata" if "size_multiple" in meta else "probe"
    rf = meta.get("receptive_field")
    receptive_field = (None if rf in (None, "", "none") else int(rf)) if "receptive_field" in meta else (
        _impulse_radius(module, in_channels, scale, multiple, fixed=fixed_h))
    found["receptive_field"] = "metadata" if "receptive_field" in meta else "impulse probe"
    training = {k: json.loads(meta[k]) for k in ("classes", "ignore_index") if k in meta}
    training["onnx"] = {"input_order": order, "value_range": value_range, "mean": mean, "std": std,
                        "found": found}
    if "classes" in training:
        training["class_names"] = training.pop("classes")
    info = ModelInfo(
        name=path.name, arch="onnx", source="onnx", scale=scale, in_channels=in_channels,
        out_channels=out_channels, params=sum(int(np.prod(t.dims)) for t in model.graph.initializer),
        # bf16 (asked for, never the default): OpenVINO computes a float32 file in it
        supports_fp16=False, supports_bf16=not fp16, size_multiple=multiple, receptive_field=receptive_field,
        path=str(path), training=training, recognised_by="onnx", task=task,
        min_size=fixed_h or 1, max_size=fixed_h or 0)
    return LoadedModel(module.eval(), info)


def _providers(ort) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _size_multiple(module: OnnxModule, channels: int, scale: int) -> int:
    """The smallest size multiple at which an input of PROBE + multiple px runs and keeps the scale."""
    for m in (1, 2, 4, 8, 16, 32, 64):
        n = PROBE + m
        try:
            with torch.inference_mode():
                y = module(torch.rand(1, channels, n, n))
        except Exception:
            continue
        if tuple(y.shape[2:]) == (n * scale, n * scale):
            return m
    return 64


def _impulse_radius(module: OnnxModule, channels: int, scale: int, multiple: int, limit: int = 192, *,
                    fixed: int | None = None) -> int | None:
    """How far (input px) one pixel's change reaches in the output: one pixel of a mid-grey image is
    changed and the output compared; None when the change reaches the probe's edge even at ``limit``
    (or at the model's ``fixed`` size, the one size probed then)."""
    size = fixed or 64
    limit = fixed or limit
    while size <= limit:
        n = -(-size // multiple) * multiple
        x = torch.full((1, channels, n, n), 0.5)
        with torch.inference_mode():
            base = module(x)
            x[:, :, n // 2, n // 2] = 1.0
            moved = (module(x) - base).abs().amax(1)[0] > 1e-5
        ys, xs = np.nonzero(moved.numpy())
        if len(ys) == 0:
            return 0
        reach = max(abs(ys // scale - n // 2).max(), abs(xs // scale - n // 2).max())
        if reach < n // 2 - 1:
            return int(reach) + 1
        size *= 2
    return None
