"""int8 on the CPU (``--precision int8``): the model quantized by NNCF under accuracy control, run by OpenVINO.

Naive post-training int8 visibly damages super-resolution: NNCF's default quantization of rlfn_x4 gave
30.35 dB on Set5 x4 (Y-PSNR) against 32.10 in fp32 on a 2-core Xeon with AMX, and no choice of its
presets or activation-range estimators brought the output within 36 dB of fp32's. So nothing here
is naive:

- **Quantization**: NNCF's accuracy-aware quantization. It first quantizes every layer it can (for image
  outputs the MIXED preset: asymmetric activations, so an image in [0, 1] is exact at 8 bits; activation
  ranges from histograms; for masks NNCF's faster defaults; per-channel weight scales and fast bias
  correction for both: ``_quantize_with_accuracy_control``), then ranks each quantized layer
  group by how much its int8 moves the held-out images' score, and returns groups to floating point
  (bf16 where the CPU computes it natively), worst first, until the loss is within the task's bound.
  Which layers stayed in floating point is measured per model, and written in the cache entry.
- **Data**: ``Int8Data`` (built by the task: pixbatch/tasks/calibration.py): calibration inputs and
  held-out inputs. The held-out inputs measure the loss at the end, in this module, against the fp32
  PyTorch model's outputs; that measurement decides.
- **Bounds** (``BOUNDS``): super-resolution, outputs within 52 dB (Y-PSNR) of fp32's; segmentation,
  masks that agree with fp32's at Dice 0.99 or better; style, outputs within 40 dB (PSNR) of the float
  model's as the job would otherwise run it (bf16 where native). Beyond its bound int8 is refused with
  one line giving the loss. Why 52 dB and not the drop of PSNR against reference images: that drop
  depends on how good the image already is, so held-out crops (textures and photos at 20-30 dB)
  predicted 0.02 dB where Set5 (32 dB) lost 0.24 for rlfn_x4; an error 52 dB below fp32's output,
  independent of the model's own error, costs an image at 32 dB 0.04 dB (and one at 38 dB, as Set5 at
  x2, 0.17 dB).
- **Cache**: one folder per model content, calibration data, recipe, bound, CPU features and library
  versions under the user cache directory (``cache_root``), written atomically (a temporary folder
  renamed into place) under a file lock, so concurrent runs make it once and later runs start at once.
  Refusals are cached too.
- **Isolation**: quantization runs in a worker process (``make_in_worker``), which writes the cache entry;
  the job's process only reads it. NNCF's own OpenVINO cores and compiled models, left to the garbage
  collector in the job's process, crashed it at a later fork (a segmentation fault in the test suite).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pixbatch.io.atomic import OutputExistsError, commit_folder, remove, temp_path
from pixbatch.models import ModelInfo
from pixbatch.ops.psnr import psnr, rgb_to_y

RECIPE = 2  # part of the cache key: raise it when the recipe changes what a quantized model is
# layer groups accuracy control may return to floating point before int8 is given up (Engstrom's udnie style
# net took 17 minutes of restoring, uncapped, to end 3.6 dB short of its bound)
MAX_RESTORED = 16
PSNR_CAP = 60.0  # style's score: PSNR against fp32 capped here (fp32 against itself is infinite)
# task -> (what the loss is, the largest loss kept); the score behind it: ``score``
BOUNDS = {"sr": (f"{PSNR_CAP:g} dB - Y-PSNR against fp32's output", PSNR_CAP - 52.0),
          "seg": ("1 - Dice of the masks against fp32's", 0.01),
          "style": (f"{PSNR_CAP:g} dB - PSNR against the float model's output", PSNR_CAP - 40.0)}
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
INT8_NEEDS = "--precision int8 needs OpenVINO and NNCF: pip install 'pixbatch[int8]'"


class Int8Refused(ValueError):
    """int8 measured beyond the task's bound for this model; the message gives the loss."""


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


def int8_available() -> bool:
    from importlib.util import find_spec

    return find_spec("nncf") is not None and find_spec("openvino") is not None


def cache_root() -> Path:
    """$PIXBATCH_CACHE_DIR, else $XDG_CACHE_HOME/pixbatch, else ~/.cache/pixbatch; int8 models in int8/."""
    base = os.environ.get("PIXBATCH_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pixbatch"
    return Path(base) / "int8"


def quality_line(entry: dict) -> str:
    """The measured loss in words, with its bound."""
    task, loss, n = entry["task"], entry["loss"], entry["held_out"]
    if loss <= entry.get("bound", BOUNDS[task][1]) and not entry["accepted"]:  # within it only with no int8 left
        return (f"within its bound only with all {entry['convolutions']} convolutions returned to floating point, "
                f"on {n} held-out images")
    bound = BOUNDS[task][1]
    if task == "sr":
        text = f"Y-PSNR {PSNR_CAP - loss:.1f} dB against fp32's output (bound {PSNR_CAP - bound:g} dB)"
    elif task == "seg":
        text = f"masks agree with fp32's at Dice {1 - loss:.4f} (bound {1 - bound:g})"
    else:
        text = (f"PSNR {PSNR_CAP - loss:.1f} dB against the {entry.get('precision', 'float')} model's output (bound "
                f"{PSNR_CAP - bound:g} dB)")
    return f"{text}, on {n} held-out images"


def summary_line(entry: dict) -> str:
    """What a run says about its int8 model: the loss, the layers in floating point, the speed."""
    kept, precision = entry["float_convolutions"], entry["precision"]
    line = f"int8: {quality_line(entry)}; {len(kept)} of {entry['convolutions']} convolutions left in {precision}"
    line += f" ({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})" if kept else ""
    speed = entry["float_ms"] / entry["int8_ms"]
    line += f"; {speed:.2f}x the speed of {precision} at {entry['probe']} px"
    return line + (f": on this CPU --precision {'bf16' if precision == 'bf16' else 'fp32'} is faster" if speed < 1 else "")


def int8_model(source: nn.Module, info: ModelInfo, data: Int8Data, precision: str, *, recipe: str = "controlled",
               bound: float | None = None, log: Callable[[str], None] = lambda message: None) -> Int8Model:
    """The int8 model of ``source`` (an eval-mode fp32 PyTorch model on the CPU) from the cache, else made (in a
    worker process) and cached; Int8Refused when its measured loss is beyond ``bound`` (default: the task's).
    ``precision`` is what the layers left in floating point compute in ("bf16" or "f32"); ``recipe``
    "controlled" (accuracy control, the default) or "plain" (NNCF's default quantization, for comparison)."""
    bound = BOUNDS[info.task][1] if bound is None else bound
    key = cache_key(source, info, data, precision, recipe, bound)
    folder = cache_root() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', info.name)[:48]}-{key}"
    made = read_entry(folder)
    if made is None:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _locked(folder.with_name(folder.name + ".lock")):
            made = read_entry(folder)  # another run may have made it while this one waited
            if made is None:
                log(f"int8: quantizing {info.name} on {data.source}"
                    + (" under accuracy control" if recipe == "controlled" else "") + f" (once; cached in {folder.parent})")
                make_in_worker(folder, source, info, data, precision, recipe, bound)
                made = read_entry(folder)
    made.entry["path"] = str(folder)
    if not made.entry["accepted"]:
        raise Int8Refused(f"--precision int8 refused for {info.name}: {quality_line(made.entry)}; use --precision "
                          "bf16 or fp32" + ("" if data.from_input else ", or try --calibrate-on-input"))
    return made


def make_in_worker(folder: Path, *args) -> None:
    """Quantize (``quantize(*args)``) and write the entry to ``folder`` in a worker process: NNCF's OpenVINO
    cores and compiled models, its progress threads and its logging stay there, and end with it (in the
    process that runs the job, they crashed it at a later fork)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_worker, args=(send, str(folder), *args), daemon=True)
    worker.start()
    send.close()
    try:
        outcome = receive.recv() if receive.poll(None) else None
    except EOFError:  # the worker died without a word
        outcome = None
    worker.join()
    if outcome != "done":
        raise ValueError(f"int8: quantizing failed ({outcome or f'its worker process ended with code {worker.exitcode}'})")


def _worker(send, folder: str, *args) -> None:
    import threading

    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()
    # what NNCF, torch and OpenVINO print (progress bars, a warning that CUDA is absent) is not the user's
    # business: the outcome goes back through ``send``, one line
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        made = quantize(*args)
        made.entry.update(created=time.strftime("%Y-%m-%d %H:%M:%S"), key=Path(folder).name.rsplit("-", 1)[-1])
        _write(Path(folder), made)
        send.send("done")
    except Exception as exc:  # one line for the user; the entry is not written
        send.send(f"{type(exc).__name__}: {exc}")


def _end_with(parent: int) -> None:
    """End this worker when the process that started it is gone (killed, say): nobody waits for its entry."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def cache_key(source: nn.Module, info: ModelInfo, data: Int8Data, precision: str, recipe: str = "controlled",
              bound: float = 0.0) -> str:
    """Model content (every tensor), task and scale, calibration data, recipe and bound, CPU features,
    library versions."""
    h = hashlib.sha256()
    for name, t in sorted(source.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps({"recipe_version": RECIPE, "arch": info.arch, "task": info.task, "scale": info.scale,
                         "precision": precision, "recipe": recipe, "bound": bound, "data": data.digest(),
                         "cpu": cpu_features(),
                         "versions": versions()}, sort_keys=True).encode())
    return h.hexdigest()[:20]


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


def read_entry(folder: Path) -> Int8Model | None:
    """The cached entry in ``folder`` (its model read back, unless it is a refusal), or None."""
    try:
        entry = json.loads((folder / "entry.json").read_text())
    except (OSError, ValueError):
        return None
    if not entry.get("accepted"):
        return Int8Model(None, entry)
    from pixbatch.runtime.openvino_backend import shared_core

    return Int8Model(shared_core().read_model(str(folder / "model.xml")), entry)


def cached_entries(name: str | None = None) -> list[dict]:
    """Every cache entry (of model ``name`` only, if given), oldest first."""
    root = cache_root()
    entries = []
    for path in sorted(root.glob("*/entry.json")) if root.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            entry = json.loads(path.read_text())
            if name is None or entry.get("model") == name:
                entries.append({**entry, "path": str(path.parent)})
    return sorted(entries, key=lambda e: e.get("created", ""))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a file beside the entry) for making one entry; none where the
    platform has no ``fcntl``: the atomic rename alone then keeps the entry whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(folder: Path, made: Int8Model) -> None:
    import openvino as ov

    tmp = temp_path(folder)
    tmp.mkdir()
    try:
        if made.model is not None:
            ov.save_model(made.model, str(tmp / "model.xml"), compress_to_fp16=False)
        (tmp / "entry.json").write_text(json.dumps(made.entry, indent=1))
        commit_folder(tmp, folder, overwrite=False)
    except OutputExistsError:  # made meanwhile by a run on another host (the lock is per host)
        pass
    finally:
        if tmp.exists():
            remove(tmp)


def quantize(source: nn.Module, info: ModelInfo, data: Int8Data, precision: str, recipe: str = "controlled",
             bound: float | None = None) -> Int8Model:
    """Quantize (recipe "controlled": under accuracy control, module docstring; "plain": NNCF's defaults),
    then measure the loss on the held-out samples against the fp32 PyTorch model, and the speed against
    the float model at the probe size. Run by ``make_in_worker``'s process."""
    import logging

    import nncf

    from pixbatch.runtime.openvino_backend import convert_module, shared_core

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
            quantized = nncf.quantize(model, nncf.Dataset(data.calibration), subset_size=len(data.calibration))
        else:
            # NNCF measures the drop from the float model as it compiles it (bf16 on CPUs that compute
            # bf16 natively), not from fp32: what that loses already is taken from the drop it may allow
            float_loss = fp32_score - validate(shared_core().compile_model(model, "CPU"), samples)[0]
            quantized = _quantize_with_accuracy_control(nncf, model, data, samples, validate,
                                                        max(bound - float_loss, 0.0), info.task)
    loss = float(fp32_score - validate(compile_for(quantized, precision), samples)[0])
    convs, kept = float_convolutions(quantized)
    entry = {"model": info.name, "task": info.task, "metric": metric, "loss": loss, "bound": bound,
             "accepted": accepted(loss, bound, len(kept), convs), "held_out": len(samples),
             "calibration": data.source, "recipe": recipe, "convolutions": convs, "float_convolutions": kept,
             "precision": precision,
             "cpu": cpu_features(), "versions": versions(), "recipe_version": RECIPE}
    if entry["accepted"]:
        size = max(256, info.min_size)
        size += -size % info.size_multiple
        x = np.random.default_rng(0).random((1, info.in_channels, size, size), dtype=np.float32)
        entry.update(probe=size, int8_ms=median_ms(quantized, precision, x), float_ms=median_ms(model, precision, x))
    entry["seconds"] = round(time.perf_counter() - start, 1)
    return Int8Model(quantized if entry["accepted"] else None, entry)


def accepted(loss: float, bound: float, float_convs: int, convs: int) -> bool:
    """Kept: within the bound, with int8 left in it (no convolution int8: nothing gained, refused)."""
    return bool(loss <= bound and float_convs < convs)


def _quantize_with_accuracy_control(nncf, model, data: Int8Data, samples: list, validate, bound: float, task: str):
    """NNCF's accuracy-aware quantization. Image outputs (super-resolution, style) start from asymmetric
    activations with histogram ranges (rlfn_x4's plain int8 output went from 33.4 to 36.3 dB against fp32's);
    masks from NNCF's defaults (symmetric activations: unet_drive ran 1.36x faster than with asymmetric ones,
    the same DRIVE Dice within 0.0001)."""
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    start = {} if task == "seg" else {
        "preset": nncf.QuantizationPreset.MIXED, "advanced_quantization_parameters": AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM)}
    return nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(data.calibration), nncf.Dataset(samples), validate, max_drop=bound,
        subset_size=len(data.calibration), **start,
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=len(samples), max_num_iterations=MAX_RESTORED))


def score(info: ModelInfo, y: np.ndarray, ref: np.ndarray) -> float:
    """One held-out sample's score (higher is better) of output ``y`` (NCHW) against the reference output
    ``ref``: super-resolution, PSNR of the Y channels (BT.601, images in [0, 1] as 8-bit levels) with
    ``scale`` px shaved; style, PSNR; both capped at PSNR_CAP. Segmentation, Dice of the masks (threshold 0 on
    one logit, else the arg max, averaged over the classes either mask has)."""
    if info.task == "seg":
        a, b = ((y[0, 0] > 0), (ref[0, 0] > 0)) if y.shape[1] == 1 else (y[0].argmax(0), ref[0].argmax(0))
        classes = [True] if y.shape[1] == 1 else np.union1d(np.unique(a), np.unique(b))
        dice = []
        for c in classes:
            pa, pb = a == c, b == c
            total = pa.sum() + pb.sum()
            dice.append(1.0 if total == 0 else 2 * (pa & pb).sum() / total)
        return float(np.mean(dice))
    if info.task == "sr":
        y, ref = (rgb_to_y(np.clip(t[0], 0, 1).transpose(1, 2, 0) * 255) for t in (y, ref))
        return min(psnr(y, ref, shave=info.scale), PSNR_CAP)
    return min(psnr(np.clip(y, 0, 1), np.clip(ref, 0, 1), max_val=1.0), PSNR_CAP)


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
