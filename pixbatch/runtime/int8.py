"""int8 on the CPU (``--precision int8``): the model quantized by NNCF under accuracy control, run by OpenVINO.

Naive post-training int8 visibly damages super-resolution: NNCF's default quantization of rlfn_x4 gave
30.35 dB on Set5 x4 (Y-PSNR) against 32.10 in fp32 on a 2-core Xeon with AMX, and no choice of its
presets or activation-range estimators brought the output within 36 dB of fp32's. So nothing here
is naive:

- **Quantization**: two ways (style nets: the second alone), each measured, the fastest one within the
  bound kept (``_quantize_with_accuracy_control``). NNCF's accuracy-aware quantization first quantizes every layer it can
  (for image outputs the MIXED preset: asymmetric activations, so an image in [0, 1] is exact at 8 bits;
  activation ranges from histograms; for masks NNCF's faster defaults; per-channel weight scales and fast
  bias correction for both), then ranks each quantized layer group by how much its int8 moves the held-out
  images' score, and returns groups to floating point (bf16 where the CPU computes it natively), worst
  first, until the loss is within the task's bound. For image outputs also pixbatch's own: weights rounded
  by their effect on the output (runtime/int8_rounding.py), only convolutions quantized, and only those int8
  costs least per FLOP kept in it (runtime/int8_select.py). Which layers stayed in floating point, and which
  way won, is measured per model and written in the cache entry.
- **Data**: ``Int8Data`` (runtime/int8_quantize.py, built by the task: pixbatch/tasks/calibration.py): calibration inputs and
  held-out inputs. The held-out inputs measure the loss at the end, in this module, against the fp32
  PyTorch model's outputs; that measurement decides.
- **Bounds** (``BOUNDS``): super-resolution, outputs within 52 dB (Y-PSNR) of fp32's; segmentation,
  masks that agree with fp32's at Dice 0.99 or better; style, outputs within 40 dB (PSNR) of the float
  model's as the job would otherwise run it (bf16 where native), judged on photos enlarged to 1024 px.
  Beyond its bound int8 is refused with one line giving the loss. Why 52 dB and not the drop of PSNR
  against reference images: that drop depends on how good the image already is, so held-out crops
  (textures and photos at 20-30 dB) predicted 0.02 dB where Set5 (32 dB) lost 0.24 for rlfn_x4; an error
  52 dB below fp32's output, independent of the model's own error, costs an image at 32 dB 0.04 dB (and
  one at 38 dB, as Set5 at x2, 0.17 dB).
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
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from pixbatch.io.atomic import OutputExistsError, commit_folder, remove, temp_path
from pixbatch.models import ModelInfo
from pixbatch.runtime.int8_quantize import (
    BOUNDS,
    PSNR_CAP,
    RECIPE,
    Int8Data,
    Int8Model,
    cpu_features,
    quantize,
    versions,
)

INT8_NEEDS = "--precision int8 needs OpenVINO and NNCF: pip install 'pixbatch[int8]'"


class Int8Refused(ValueError):
    """int8 measured beyond the task's bound for this model; the message gives the loss."""


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
    bound = entry.get("bound", BOUNDS[task][1])  # the one it was judged by
    if loss <= bound and not entry["accepted"]:  # within it only with no int8 left
        return (f"within its bound only with all {entry['convolutions']} convolutions returned to floating point, "
                f"on {n} held-out images")
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
    """Quantize (runtime/int8_quantize.py's ``quantize(*args)``) and write the entry to ``folder`` in a worker process: NNCF's OpenVINO
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
        write_entry(Path(folder), made)
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


def write_entry(folder: Path, made: Int8Model) -> None:
    """``made`` as the cache folder ``folder``: a temporary folder beside it, renamed into place."""
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
