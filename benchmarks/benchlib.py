"""What every benchmark script shares: where things are, the environment record every result carries,
one timer, and result paths. Scripts run as ``python benchmarks/bench_<what>.py``, which puts this
folder on ``sys.path``: ``from benchlib import ...``. Torch is imported only where needed, so a
torch-free script (bench_pillow.py, run in a pillow-simd environment too) can use the paths."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("PIXBATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
COMPACT = SHARED_DATA / "weights" / "realesr-animevideov3.pth"  # the foreign Real-ESRGAN compact model


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from pixbatch.bench.pipeline import cpu_name

    return cpu_name()


def device_tag(device: torch.device) -> str:
    """``cpu``, or ``cuda_<model>`` (e.g. cuda_h100): results of different machines never overwrite."""
    return "cpu" if device.type != "cuda" else "cuda_" + device_name(device).split()[-1].lower()


def environment(device: torch.device) -> dict:
    """The record every result carries: device, threads and software versions."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    import PIL

    return {"device": device_name(device), "device_type": device.type, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "pillow": getattr(PIL, "__version__", None)}


def median_seconds(fn: Callable[[], object], device: torch.device, min_time: float = 1.0) -> float:
    """Median seconds per call after warm-up: ``triton.testing.do_bench`` (CUDA events) on a GPU,
    ``torch.utils.benchmark.Timer.blocked_autorange`` on the CPU."""
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=max(100, int(min_time * 1000)), return_mode="median") / 1e3
    import torch
    from torch.utils.benchmark import Timer

    fn()
    # Timer runs single-threaded unless told otherwise: measure with the threads pixbatch itself uses
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_time).median


def count_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Conv and matmul FLOPs (multiply-adds x 2) of one forward, by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def write_result(result: dict, name: str, out: Path | None = None) -> Path:
    """Write ``result`` as JSON to ``out`` or benchmarks/results/<name>.json; returns the path."""
    path = out or RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
