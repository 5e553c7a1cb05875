"""int8's quantization and its measurement, what runs in the worker process of runtime/int8.py
(``make_in_worker``): NNCF's quantization under accuracy control (or plain, for comparison), the loss measured
on the held-out inputs against the fp32 model, which convolutions stayed in floating point, and the speed
against the float model; with the data it runs on, the bounds it is judged by and the model it returns."""

from __future__ import annotations

import contextlib
import hashlib
import io
import platform
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixbatch.models import ModelInfo
from pixbatch.ops.psnr import psnr, rgb_to_y

RECIPE = 5  # part of the cache key: raise it when the recipe changes what a quantized model is
# layer groups NNCF's restorer may return to floating point before int8 is given up (Engstrom's udnie style
# net took 17 minutes of restoring, uncapped, to end 3.6 dB short of its bound; style nets no longer use it)
MAX_RESTORED = 16
PSNR_CAP = 60.0  # style's score: PSNR against fp32 capped here (fp32 against itself is infinite)
# task -> (what the loss is, the largest loss kept); the score behind it: ``score``
BOUNDS = {"sr": (f"{PSNR_CAP:g} dB - Y-PSNR against fp32's output", PSNR_CAP - 52.0),
          "seg": ("1 - Dice of the masks against fp32's", 0.01),
          "style": (f"{PSNR_CAP:g} dB - PSNR against the float model's output", PSNR_CAP - 40.0)}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products with 32-bit sums: no saturation


def overflow_fix(flags: list[str]) -> str:
    """NNCF's overflow fix (its OverflowFix value) for a CPU with these flags: without VNNI or AMX, int8
    convolutions multiply-add pairs into 16 bits (AVX2's vpmaddubsw), which saturates, so every layer's
    weights take half the int8 range (an AVX2-only EPYC: rlfn_x4 at 50.6 dB against fp32's output with
    NNCF's first-layer-only fix, refused under the 52 dB bound); with VNNI or AMX, NNCF's default (the
    first layer only)."""
    return "first_layer_only" if any(f in flags for f in INT8_DOT) else "enable"


@dataclass
class Int8Data:
    """What a model is quantized on: NCHW float32 calibration inputs, held-out inputs (judged against the
    fp32 model's outputs) and a line saying where they came from."""

    calibration: list[np.ndarray]
    held_out: list[np.ndarray]
    source: str
    from_input: bool = False  # the job's own images (--calibrate-on-input)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in [*self.calibration, *self.held_out]:
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


@dataclass
class Int8Model:
    """A quantized model (None when refused) and its cache entry: the measured loss, the bound, which
    convolutions stayed in floating point, the speed against the float model, where it is cached."""

    model: object | None
    entry: dict = field(default_factory=dict)


def cpu_features() -> dict:
    """The CPU's machine and the ISA flags int8 and bf16 kernels depend on (Linux's /proc/cpuinfo)."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {"machine": platform.machine(), "flags": [f for f in CPU_FLAGS if f in flags]}


def versions() -> dict:
    out = {}
    for package in ("pixbatch", "torch", "openvino", "nncf"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[package] = metadata.version(package)
    return out


def quantize(source: nn.Module, info: ModelInfo, data: Int8Data, precision: str, recipe: str = "controlled",
             bound: float | None = None) -> Int8Model:
    """Quantize (recipe "controlled": under accuracy control, module docstring; "plain": NNCF's defaults),
    then measure the loss on the held-out samples against the fp32 PyTorch model, and the speed against
    the float model at the probe size. Run by ``make_in_worker``'s process."""
    import logging

    import nncf

    from pixbatch.runtime.openvino_backend import convert_module

    nncf.set_log_level(logging.ERROR)
    start = time.perf_counter()
    model = convert_module(source, torch.from_numpy(data.calibration[0]))
    if info.task == "style":  # judged against the float model as the job would run it (bf16 where native)
        refs = [compile_for(model, precision)(x)[0] for x in data.held_out]
    else:
        with torch.no_grad():
            refs = [source(torch.from_numpy(x)).numpy() for x in data.held_out]
    fp32_score = np.mean([score(info, r, r) for r in refs])
    samples = list(zip(data.held_out, refs))

    def validate(compiled, items) -> tuple[float, list[float]]:
        scores = [score(info, compiled(x)[0], r) for x, r in items]
        return float(np.mean(scores)), scores

    metric, bound = BOUNDS[info.task][0], BOUNDS[info.task][1] if bound is None else bound
    # NNCF draws its progress bars on stdout, where a command's results and --json go
    with contextlib.redirect_stdout(io.StringIO()):
        if recipe == "plain":
            candidates = {"plain": nncf.quantize(model, nncf.Dataset(data.calibration), subset_size=len(data.calibration))}
        else:
            candidates = _quantize_with_accuracy_control(nncf, source, model, data, samples, validate, bound,
                                                         fp32_score, info, precision)
    size = max(256, info.min_size)
    size += -size % info.size_multiple
    probe = np.random.default_rng(0).random((1, info.in_channels, size, size), dtype=np.float32)
    ways = [_measured(way, quantized, fp32_score, validate, samples, bound, precision, probe)
            for way, quantized in candidates.items()]
    best = min(ways, key=lambda w: (not w.accepted, w.ms if w.accepted else w.loss))  # fastest kept, else closest
    entry = {"model": info.name, "task": info.task, "metric": metric, "loss": best.loss, "bound": bound,
             "accepted": best.accepted, "held_out": len(samples),
             "calibration": data.source, "recipe": recipe, "convolutions": best.convolutions,
             "float_convolutions": best.float_convolutions, "precision": precision, "selection": best.name,
             "cpu": cpu_features(), "versions": versions(), "recipe_version": RECIPE}
    if len(ways) > 1:  # what the other ways measured
        entry["ways"] = {w.name: {"loss": w.loss, "float_convolutions": len(w.float_convolutions), "int8_ms": w.ms}
                         for w in ways}
    if best.accepted:
        entry.update(probe=size, int8_ms=best.ms, float_ms=median_ms(model, precision, probe))
    entry["seconds"] = round(time.perf_counter() - start, 1)
    return Int8Model(best.model if best.accepted else None, entry)


def accepted(loss: float, bound: float, float_convs: int, convs: int) -> bool:
    """Kept: within the bound, with int8 left in it (no convolution int8: nothing gained, refused)."""
    return bool(loss <= bound and float_convs < convs)


@dataclass
class Way:
    """One candidate of ``quantize`` as measured: its loss on the held-out samples, how many convolutions it
    has and which stayed in floating point, and when kept, its median ms at the probe size."""

    name: str
    model: object
    loss: float
    convolutions: int
    float_convolutions: list[str]
    accepted: bool
    ms: float | None


def _measured(name: str, quantized, fp32_score: float, validate, samples: list, bound: float, precision: str,
              probe: np.ndarray) -> Way:
    loss = float(fp32_score - validate(compile_for(quantized, precision), samples)[0])
    convs, kept = float_convolutions(quantized)
    ok = accepted(loss, bound, len(kept), convs)
    return Way(name, quantized, loss, convs, kept, ok, median_ms(quantized, precision, probe) if ok else None)


def _quantize_with_accuracy_control(nncf, source: nn.Module, model, data: Int8Data, samples: list, validate,
                                    bound: float, fp32_score: float, info: ModelInfo, precision: str) -> dict:
    """The candidates ``quantize`` measures and keeps the fastest of, by name. Masks and super-resolution:
    "restored", NNCF's accuracy-aware quantization (``allowed``: the drop it may allow from the float model),
    from its defaults for masks (symmetric activations: unet_drive ran 1.36x faster than with asymmetric ones,
    the same DRIVE Dice within 0.0001), for images from asymmetric activations with histogram ranges
    (rlfn_x4's plain int8 output went from 33.4 to 36.3 dB against fp32's). Images also: "selected", weights
    rounded by their effect on the output (runtime/int8_rounding.py), every convolution quantized, and only
    those int8 costs least per FLOP kept in it within ``bound`` (runtime/int8_select.py). For
    super-resolution neither wins everywhere (an AVX2-only EPYC, results/int8_cpu_epyc_avx2.json): rlfn_x4
    is within 52 dB only "selected" (1.35x the f32 default; the restorer 50.5 dB); edsr_tiny_x4 "restored",
    which keeps NNCF's quantizers on its residual adds, ran 373 ms at 256 px against "selected"'s 403.
    Style: "selected" alone; the restorer quantizes the instance norms' statistics too, and took 21 minutes
    to refuse udnie, of which "selected" keeps 10 of 14 convolutions int8 (results/int8_cpu_epyc_avx2.json)."""
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from pixbatch.runtime.openvino_backend import convert_module, shared_core

    fix = overflow_fix(cpu_features()["flags"])
    start = {"advanced_quantization_parameters": AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(fix))}
    if info.task != "seg":
        start = {"preset": nncf.QuantizationPreset.MIXED, "advanced_quantization_parameters": AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM, overflow_fix=nncf.OverflowFix(fix))}
    candidates = {}
    if info.task != "style":
        # NNCF's restorer measures the drop from the float model as it compiles it (bf16 on CPUs that
        # compute bf16 natively), not from fp32: what that loses already is not allowed again
        allowed = max(bound - (fp32_score - validate(shared_core().compile_model(model, "CPU"), samples)[0]), 0.0)
        candidates["restored"] = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(data.calibration), nncf.Dataset(samples), validate, max_drop=allowed,
            subset_size=len(data.calibration), **start,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                ranking_subset_size=len(samples), max_num_iterations=MAX_RESTORED))
    if info.task != "seg":
        from pixbatch.runtime.int8_rounding import round_weights
        from pixbatch.runtime.int8_select import quantize_convolutions, select

        def noise(candidate) -> np.ndarray:  # per held-out image, as a share of the peak's square
            compiled = compile_for(candidate, precision)
            return np.array([10 ** (-output_psnr(info, compiled(x)[0], r) / 10) for x, r in samples])

        def within(per_image: np.ndarray) -> bool:
            with np.errstate(divide="ignore"):
                return float(np.mean(np.minimum(-10 * np.log10(per_image), PSNR_CAP))) >= PSNR_CAP - bound

        rounded = convert_module(round_weights(source, data.calibration, fix), torch.from_numpy(data.calibration[0]))
        quantized = quantize_convolutions(nncf, rounded, data.calibration, fix)
        candidates["selected"] = select(quantized, model, noise, within, list(data.held_out[0].shape))
    return candidates


def score(info: ModelInfo, y: np.ndarray, ref: np.ndarray) -> float:
    """One held-out sample's score (higher is better) of output ``y`` (NCHW) against the reference output
    ``ref``: images, ``output_psnr`` capped at PSNR_CAP; segmentation, Dice of the masks (threshold 0 on one
    logit, else the arg max, averaged over the classes either mask has)."""
    if info.task != "seg":
        return min(output_psnr(info, y, ref), PSNR_CAP)
    a, b = ((y[0, 0] > 0), (ref[0, 0] > 0)) if y.shape[1] == 1 else (y[0].argmax(0), ref[0].argmax(0))
    classes = [True] if y.shape[1] == 1 else np.union1d(np.unique(a), np.unique(b))
    dice = []
    for c in classes:
        pa, pb = a == c, b == c
        total = pa.sum() + pb.sum()
        dice.append(1.0 if total == 0 else 2 * (pa & pb).sum() / total)
    return float(np.mean(dice))


def output_psnr(info: ModelInfo, y: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of image output ``y`` (NCHW) against ``ref``, uncapped: super-resolution, of the Y channels
    (BT.601, images in [0, 1] as 8-bit levels) with ``scale`` px shaved; style, of the RGB images."""
    if info.task == "sr":
        y, ref = (rgb_to_y(np.clip(t[0], 0, 1).transpose(1, 2, 0) * 255) for t in (y, ref))
        return psnr(y, ref, shave=info.scale)
    return psnr(np.clip(y, 0, 1), np.clip(ref, 0, 1), max_val=1.0)


def float_convolutions(model) -> tuple[int, list[str]]:
    """How many convolutions ``model`` has, and the names of those left in floating point, shortened from the
    traced names. A quantized convolution's weights come through a FakeQuantize (as NNCF returns the
    model) or are int8 constants scaled back (as it is saved); the accuracy restorer reverts both."""
    convs = [n for n in model.get_ordered_ops() if n.get_type_name() in ("Convolution", "GroupConvolution")]
    kept = [n for n in convs if not _int8_weights(n.input_value(1).get_node())]
    names = [re.sub(r"^__module\.|/aten::.*$", "", n.get_friendly_name()) for n in kept]
    return len(convs), names


def _int8_weights(node, depth: int = 4) -> bool:
    """Whether weights reach a convolution through a FakeQuantize or from an 8-bit constant."""
    kind = node.get_type_name()
    if kind == "FakeQuantize" or (kind == "Constant" and node.get_output_element_type(0).get_type_name() in ("i8", "u8")):
        return True
    return depth > 0 and node.get_input_size() > 0 and _int8_weights(node.input_value(0).get_node(), depth - 1)


def compile_for(model, precision: str, shape: list[int] | None = None):
    from pixbatch.runtime.openvino_backend import shared_core

    if shape is not None:
        model = model.clone()
        model.reshape({0: shape})
    return shared_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "PERFORMANCE_HINT": "LATENCY"})


def median_ms(model, precision: str, x: np.ndarray, repeats: int = 7) -> float:
    """Median milliseconds of one inference of ``x`` by ``model`` compiled at its shape, after warm-up."""
    request = compile_for(model, precision, list(x.shape)).create_infer_request()
    for _ in range(2):
        request.infer({0: x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - t)
    return round(1000 * sorted(times)[repeats // 2], 2)
