"""int8 against the default path, quality beside speed, all in one run.

    python benchmarks/bench_int8.py [--models rlfn_x4,edsr_tiny_x4,unet_drive,udnie] [--size 256] [--out FILE]

Per model, four ways of computing, each through pixbatch's engine (a Runner: windows, padding, OpenVINO):
- fp32: PyTorch eager fp32, the reference of every quality figure;
- default: `--precision auto` for a large CPU job (bf16 on OpenVINO where that is what it picks);
- pixbatch int8: `--precision int8` (runtime/int8.py: NNCF's accuracy-aware quantization on the shipped
  calibration set; the time to make it is reported apart, and it is cached as the command caches it);
- NNCF default int8: plain ``nncf.quantize`` (its default preset and range estimators) on the same
  calibration inputs, as a user trying NNCF would get it (runtime/int8.py's recipe "plain").
Quality, on data no calibration saw: super-resolution, Y-PSNR on Set5 (MATLAB bicubic LR, shave = scale,
`pixbatch eval sr`'s protocol); segmentation, Dice on DRIVE's 20 test images inside the FOV (`pixbatch eval
seg`'s); style (udnie, Engstrom's net from the shared data), PSNR of the output against the default's on the
style content photo. Speed: output MP/s of the model alone on one real image of SIZE px (``probe``), the
four ways timed in alternation, ROUNDS rounds, the median of the rounds' medians; and the ratio to the default.
End to end (``--e2e-images``, 0 to skip): the default and pixbatch int8 each running the command's whole job
(decode workers, the engine, the writers; run_job, as `pixbatch upscale/segment/stylize` runs it) over one
folder of real images: for super-resolution and style E2E_IMAGES crops of SIZE px of the photos shipped with
pixbatch's examples (`pixbatch bench`'s images), for segmentation DRIVE's 20 test images (565 x 584); the
two timed in alternation, E2E_ROUNDS rounds, the median kept. Writes benchmarks/results/int8_cpu.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import SHARED_DATA, environment, median_seconds, write_result

UDNIE = SHARED_DATA / "style_weights" / "ml5_lengstrom" / "udnie"
CONTENT = SHARED_DATA / "style" / "content"
ROUNDS = 5
E2E_ROUNDS = 3


def load(name: str):
    from pixbatch.models import create_model

    return create_model(UDNIE if name == "udnie" else name)


def nncf_default(loaded, dtype):
    """Plain NNCF post-training quantization on the same calibration inputs (made, measured and cached as
    `--precision int8` is, never refused): an Int8Model the engine can run."""
    from pixbatch.tasks.calibration import int8_for

    return int8_for(loaded, (), dtype, recipe="plain", bound=float("inf"))


def probe(info, size: int) -> torch.Tensor:
    """The image the speed is timed on: a real one (random noise drives int8 activations outside anything
    calibrated, and the engine's first-batch check then hands the shape back to PyTorch): a centre crop of
    Set5's baby for super-resolution, of DRIVE's first test image for segmentation, of the content photo for
    style, resized to SIZE px."""
    from PIL import Image

    from pixbatch.io.decode import decode_rgb8

    path = {"sr": SHARED_DATA / "sr" / "set5" / "baby.png",
            "seg": SHARED_DATA / "seg" / "drive" / "test" / "images" / "01_test.tif"}.get(
        info.task, sorted(CONTENT.iterdir())[0] if CONTENT.is_dir() else None)
    img = decode_rgb8(path)
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    crop = Image.fromarray(img[top : top + side, left : left + side]).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None].float().div(255)


def quality(runner, task: str, default_runner) -> tuple[str, float]:
    """(metric, value) on held-out public data."""
    if task == "sr":
        from pixbatch.eval.sr import evaluate_sr, mean_metrics

        return "Set5 Y-PSNR (dB)", mean_metrics([r.model for r in evaluate_sr(runner, SHARED_DATA / "sr" / "set5")])["psnr_y"]
    if task == "seg":
        from pixbatch.eval.seg import evaluate_seg

        drive = SHARED_DATA / "seg" / "drive" / "test"
        _, pooled = evaluate_seg(runner, drive / "images", drive / "masks", drive / "fov")
        return "DRIVE Dice", pooled["dice"]
    from pixbatch.eval.seg import predict_logits
    from pixbatch.io.decode import decode_rgb8
    from pixbatch.ops.psnr import psnr

    photo = decode_rgb8(sorted(CONTENT.iterdir())[0])
    a, b = (predict_logits(r, photo).float().clamp(0, 1).numpy() for r in (runner, default_runner))
    return "PSNR against the default (dB)", psnr(a, b, max_val=1.0)


def use_threads_of(runner) -> None:
    """PyTorch's threads as the command sets them for ``runner``: one beside OpenVINO, else its own count."""
    from pixbatch.runtime.backends import TORCH_THREADS

    torch.set_num_threads(1 if runner.backend.startswith("openvino") else TORCH_THREADS)


def e2e_folder(task: str, dst: Path, images: int, size: int) -> Path:
    """The real images the end-to-end rows run on (module docstring)."""
    if task == "seg":
        return SHARED_DATA / "seg" / "drive" / "test" / "images"
    from pixbatch.bench.pipeline import make_photo_folder
    from pixbatch.cli.bench import shipped_examples

    make_photo_folder(dst, [shipped_examples()], images, size)
    return dst


def end_to_end(runners: dict, task: str, folder: Path, work: Path) -> dict[str, float]:
    """Images per second of each runner's whole job over ``folder`` (module docstring), by label."""
    from pixbatch.io.discover import plan_jobs
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.segment import SegmentTask
    from pixbatch.tasks.stylize import StylizeTask
    from pixbatch.tasks.upscale import UpscaleTask

    kind = {"sr": UpscaleTask, "seg": SegmentTask, "style": StylizeTask}[task]
    rates: dict[str, list[float]] = {label: [] for label in runners}
    for r in range(E2E_ROUNDS):
        for label, runner in runners.items():
            use_threads_of(runner)
            out = work / f"{label.replace(' ', '_')}-{r}"
            # masks as PNG, as `pixbatch segment` writes them for DRIVE's (untiled) TIFFs
            plan = plan_jobs([folder], out, suffix_of=(lambda p: ".png") if task == "seg" else None)
            t = time.perf_counter()
            report = run_job(kind(runner), plan, JobSpec(windowing=kind.windowing()), log=lambda line: None)
            seconds = time.perf_counter() - t
            if report.failed or report.done != len(plan.todo):
                raise RuntimeError(f"{label}: {report.done} of {len(plan.todo)} images written: {report.failed}")
            rates[label].append(len(plan.todo) / seconds)
            shutil.rmtree(out)
    return {label: float(np.median(v)) for label, v in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="rlfn_x4,edsr_tiny_x4,unet_drive,udnie")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--min-time", type=float, default=5.0, help="seconds of timing per row, over ROUNDS rounds")
    p.add_argument("--e2e-images", type=int, default=24, help="images of the end-to-end rows (0: none)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from pixbatch.runtime.backends import OPENVINO_MIN_PIXELS, TORCH_THREADS
    from pixbatch.runtime.device import resolve_precision
    from pixbatch.runtime.int8 import Int8Refused, quality_line
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.calibration import int8_for

    # int8 models made in this run (the time to make them is a figure), not read from the user's cache
    os.environ["PIXBATCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-int8-")
    cpu = torch.device("cpu")
    rows = []
    for name in args.models.split(","):
        if name == "udnie" and not UDNIE.exists():
            continue
        info = load(name).info
        dtype = resolve_precision("auto", cpu, info)
        t0 = time.perf_counter()
        try:
            made = int8_for(load(name), (), dtype)
        except Int8Refused as exc:  # beyond its bound: the row says so, the others are measured
            made = None
            print(f"{name:<13} pixbatch int8: {exc}", flush=True)
            rows.append({"model": name, "task": info.task, "way": "pixbatch int8", "refused": str(exc)})
        made_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = nncf_default(load(name), dtype)
        plain_s = time.perf_counter() - t0
        x = probe(info, args.size)
        out_mp = (args.size * (info.scale if info.task == "sr" else 1)) ** 2 / 1e6
        runners = {}
        for label in ("fp32 eager", "default", "pixbatch int8", "NNCF default int8"):
            torch.set_num_threads(TORCH_THREADS)
            if label == "fp32 eager":
                runners[label] = prepare_model(load(name), cpu, torch.float32, channels_last=False, kernels="torch",
                                               backend="torch")
            elif label == "default":
                runners[label] = prepare_model(load(name), cpu, dtype, backend="auto", job_pixels=OPENVINO_MIN_PIXELS)
            elif label == "NNCF default int8" or made is not None:
                runners[label] = prepare_model(load(name), cpu, dtype,
                                               int8=made if label == "pixbatch int8" else plain)
        # timed in alternation, ROUNDS times each, the median kept: this VM's speed drifts by up to 1.7x within
        # minutes, which one block of calls per row would put into the ratios
        times = {label: [] for label in runners}
        for _ in range(ROUNDS):
            for label, runner in runners.items():
                use_threads_of(runner)
                times[label].append(median_seconds(lambda runner=runner, x=x: runner(x), cpu, args.min_time / ROUNDS))
        for label, runner in runners.items():
            setup = {"pixbatch int8": made_s, "NNCF default int8": plain_s}.get(label)
            use_threads_of(runner)
            metric, value = quality(runner, info.task, runners["default"])
            seconds = float(np.median(times[label]))
            # shapes where an int8 model's first batch was too far from PyTorch's, which then ran them
            fell_back = runner.compiled.pytorch_shapes() if hasattr(runner.compiled, "pytorch_shapes") else []
            row = {"model": name, "task": info.task, "way": label, "backend": runner.backend,
                   "precision": runner.precision, "metric": metric, "quality": value, "size": args.size,
                   "output_mp_per_s": out_mp / seconds, "setup_seconds": setup,
                   "shapes_left_to_pytorch": [list(shape) for shape in fell_back]}
            if label == "pixbatch int8":
                row["int8"] = {k: made.entry.get(k) for k in ("loss", "bound", "float_convolutions", "convolutions", "selection", "ways",
                                                          "calibration", "held_out")}
                row["held_out_line"] = quality_line(made.entry)
            if label == "NNCF default int8":
                row["int8"] = {k: plain.entry[k] for k in ("float_convolutions", "convolutions")}
            rows.append(row)
        base = next(r for r in rows if r["model"] == name and r["way"] == "default")
        fp32 = next(r for r in rows if r["model"] == name and r["way"] == "fp32 eager")
        for r in (r for r in rows if r["model"] == name and "quality" in r):
            r["speed_vs_default"] = r["output_mp_per_s"] / base["output_mp_per_s"]
            r["quality_vs_fp32"] = r["quality"] - fp32["quality"]
            print(f"{name:<13} {r['way']:<18} {r['metric']:<30} {r['quality']:8.4f} ({r['quality_vs_fp32']:+.4f})  "
                  f"{r['output_mp_per_s']:6.2f} MP/s  {r['speed_vs_default']:4.2f}x default  [{r['backend']}]"
                  + (f"  (PyTorch ran {len(r['shapes_left_to_pytorch'])} of its shapes)" if r["shapes_left_to_pytorch"]
                     else ""), flush=True)
        if made is not None and args.e2e_images:
            with tempfile.TemporaryDirectory() as work:
                folder = e2e_folder(info.task, Path(work) / "in", args.e2e_images, args.size)
                rates = end_to_end({k: runners[k] for k in ("default", "pixbatch int8")}, info.task, folder, Path(work))
            row = {"model": name, "task": info.task, "way": "end to end", "images_per_s": rates,
                   "folder": str(folder) if info.task == "seg" else f"{args.e2e_images} example photo crops",
                   "int8_vs_default": rates["pixbatch int8"] / rates["default"]}
            rows.append(row)
            print(f"{name:<13} end to end (run_job): default {rates['default']:.2f} img/s, pixbatch int8 "
                  f"{rates['pixbatch int8']:.2f} img/s, {row['int8_vs_default']:.2f}x", flush=True)
        if made is not None:
            print(f"{'':<13} pixbatch int8 on its held-out calibration images: {quality_line(made.entry)}; "
                  f"{len(made.entry['float_convolutions'])} of {made.entry['convolutions']} convolutions in floating "
                  f"point; made in {made_s:.0f} s", flush=True)
    shutil.rmtree(os.environ["PIXBATCH_CACHE_DIR"], ignore_errors=True)
    out = write_result({**environment(cpu), "cpu_flags": _flags(), "rows": rows}, "int8_cpu", args.out)
    print(f"wrote {out}")


def _flags() -> list[str]:
    from pixbatch.runtime.int8 import cpu_features

    return cpu_features()["flags"]


if __name__ == "__main__":
    main()
