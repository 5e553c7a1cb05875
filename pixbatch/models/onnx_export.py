"""``pixbatch export``: any model pixbatch loads, as an ONNX file that follows the convention (NCHW, RGB,
float32 in [0, 1]; the model's own normalisation is inside its graph) with dynamic batch, height and width,
pixbatch's metadata in ``metadata_props``, and verified before it is kept: ONNX Runtime runs it at two
sizes other than the export's and at batch 2, against PyTorch (pixel shuffle orderings are a known
exporter pitfall), and the file is written only when the largest difference is within ``TOLERANCE``.

A model whose operations depend on the input size (SAFMN's adaptive pooling to 1/16 of it) makes torch's
exporter fix the size. Its export is then tried again with height and width declared multiples of 8, 16,
32 or 64 (from its minimum size up): pooling to 1/k of a multiple of k is plain k x k pooling, which the
exporter keeps dynamic. The file's ``size_multiple`` says so, and the engine pads inputs up to it."""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixbatch.io.atomic import write_bytes
from pixbatch.models.info import LoadedModel
from pixbatch.models.onnx_model import META, require_onnx

OPSET = 18
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}  # max abs difference from PyTorch, outputs in [0, 1] or logits: a
# quarter of an 8-bit level; a wrong pixel-shuffle ordering moves pixels by whole levels
EXPORT_SIZE = 64  # the traced input; the checks use other sizes
CHECK_SHAPES = ((1, 56, 72), (2, 48, 40))  # (batch, height, width), multiples of 8 (bigger multiples are padded)
SIZE_STEPS = (8, 16, 32, 64)  # the size multiples a second export may declare (see above)


class ExportError(RuntimeError):
    """The model could not be exported, or its export does not compute what PyTorch does."""


@dataclass
class ExportResult:
    path: Path
    opset: int
    precision: str
    max_abs_diff: float
    checks: list[tuple[int, int, int]]


def _round(n: int, m: int) -> int:
    return -(-n // m) * m


def export_onnx(loaded: LoadedModel, out: Path, *, fp16: bool = False, opset: int = OPSET) -> ExportResult:
    """Export ``loaded`` to ``out`` (atomically, only when verified); ExportError otherwise."""
    onnx, ort = require_onnx()
    info = loaded.info
    if info.source == "onnx":
        raise ExportError(f"{info.name} is an ONNX model already")
    module = loaded.module.eval().float()
    # a multiple of the model's own, of 8, and of every step a second export may declare
    size = _round(max(EXPORT_SIZE, info.min_size), math.lcm(info.size_multiple, 8, max(SIZE_STEPS, default=1)))
    x = torch.rand(2, info.in_channels, size, size)  # batch 2: torch.export would fix a dimension of 1
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        steps = [1] + [k for k in SIZE_STEPS if k >= min(info.min_size, max(SIZE_STEPS, default=1))]
        failure = None
        for step in steps:
            try:
                _export(module, x, raw, opset, step)
            except ExportError as exc:  # a guard on the size, which a declared multiple may satisfy
                failure = failure or exc
                continue
            model = onnx.load(str(raw))
            if not _fixed(model):
                break
        else:
            if failure is not None and not raw.exists():
                raise failure
            raise ExportError(f"torch's exporter fixed the input size at {size}x{size} (an operation of the model "
                              f"depends on the size), even with sizes declared multiples of up to {steps[-1]}; "
                              "not written")
        multiple = math.lcm(info.size_multiple, step)
        if fp16:
            model = _to_fp16(model)
        meta = {"task": info.task, "scale": str(info.scale), "size_multiple": str(multiple),
                "receptive_field": "none" if info.receptive_field is None else str(info.receptive_field),
                "value_range": "1", "input_order": "rgb", "source": info.name, "arch": info.arch}
        training = info.training or {}
        if training.get("class_names"):
            meta["classes"] = json.dumps(training["class_names"])
        if isinstance(training.get("ignore_index"), int):
            meta["ignore_index"] = json.dumps(training["ignore_index"])
        del model.metadata_props[:]
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = META + key, value
        data = model.SerializeToString()
        try:
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ExportError(f"ONNX Runtime cannot load the export ({str(exc).splitlines()[0][:200]})") from None
        worst, checks = 0.0, []
        for n, h, w in CHECK_SHAPES:
            h, w = _round(h, multiple), _round(w, multiple)
            xi = image_like(n, info.in_channels, h, w, seed=h * w + n)
            with torch.no_grad():
                expected = module(xi).float().numpy()
            feed = xi.numpy().astype(np.float16 if fp16 else np.float32)
            try:
                got = session.run(None, {session.get_inputs()[0].name: feed})[0].astype(np.float32)
            except Exception as exc:
                raise ExportError(f"ONNX Runtime cannot run the export at batch {n}, {w}x{h} "
                                  f"({str(exc).splitlines()[0][:200]})") from None
            if got.shape != expected.shape:
                raise ExportError(f"the export's output at batch {n}, {w}x{h} is {got.shape}, not {expected.shape}")
            worst = max(worst, float(np.abs(got - expected).max()))
            checks.append((n, h, w))
    precision = "fp16" if fp16 else "fp32"
    if not worst <= TOLERANCE[precision]:
        raise ExportError(f"the export differs from PyTorch by up to {worst:.3g} (tolerance {TOLERANCE[precision]:g} "
                          f"in {precision}); not written")
    write_bytes(data, out, overwrite=True)
    return ExportResult(out, opset, precision, worst, checks)


def image_like(n: int, channels: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Inputs the checks run: smooth random fields (noise at 1/8 of the size, upsampled) plus fine noise of
    0.05. A trained model may diverge on uniform noise, far from any image (SAFMN++'s outputs reach 1e31
    there, 1.1 here); the fine noise still makes a wrong pixel-shuffle ordering move values by about 0.05,
    far above the tolerance."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, max(1, h // 8), max(1, w // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.randn(n, channels, h, w, generator=g)).clamp(0, 1)


def _export(module, x: torch.Tensor, path: Path, opset: int, step: int) -> None:
    """torch's dynamo exporter, batch, height and width dynamic (the sizes multiples of ``step``)."""
    batch = torch.export.Dim("batch")
    height, width = ((torch.export.Dim(n) for n in ("height", "width")) if step == 1 else
                     (torch.export.Dim(n, min=1) * step for n in ("height_steps", "width_steps")))
    quiet = logging.getLogger("torch")
    level, quiet.level = quiet.level, logging.CRITICAL  # torch.export logs its guard failures as errors
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=opset, external_data=False,
                              input_names=["image"], output_names=["output"],
                              dynamic_shapes=({0: batch, 2: height, 3: width},), verbose=False)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})") from None
    finally:
        quiet.setLevel(level)


def _fixed(model) -> bool:
    """Whether the exporter fixed the input's height or width."""
    return any(d.HasField("dim_value") for d in model.graph.input[0].type.tensor_type.shape.dim[2:])


def _to_fp16(model):
    """The model with fp16 weights and fp16 input and output (onnx's float16 converter)."""
    try:
        from onnx import version_converter  # noqa: F401
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ExportError(f"--fp16 needs onnxruntime's float16 converter ({exc})") from None
    return convert_float_to_float16(model, keep_io_types=False)
