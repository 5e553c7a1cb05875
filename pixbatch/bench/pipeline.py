"""End-to-end benchmark of `pixbatch upscale`: each stage's capacity alone, the pipeline, and a plain
eager PyTorch loop on the same real photos in the same run (``pixbatch bench``, benchmarks/bench_pipeline.py).

Stage capacities (images/s, each stage alone with the resources the pipeline gives it):
decode (worker processes as the pipeline starts them), host->device copy (GPU), compute (the prepared
model, same batching as the pipeline), device->host copy (GPU) and encode (writer threads). The slowest
is the bottleneck; pipeline efficiency = end-to-end rate / bottleneck capacity.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from pixbatch.runtime.spec import ComputeSpec, JobSpec, Precision


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_photo_folder(dst: Path, sources: list[Path], n: int, size: int) -> list[Path]:
    """n centre crops (size x size) of real photos, alternately JPEG (quality 92) and PNG."""
    from PIL import Image

    from pixbatch.io.discover import IMAGE_SUFFIXES

    photos = [p for d in sources for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise FileNotFoundError(f"no photos in {', '.join(map(str, sources))}")
    dst.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        with Image.open(photos[i % len(photos)]) as im:
            im = im.convert("RGB")
            if min(im.size) < size:
                k = size / min(im.size)
                im = im.resize((max(size, round(im.width * k)), max(size, round(im.height * k))), Image.BICUBIC)
            x, y = (im.width - size) // 2, (im.height - size) // 2
            crop = im.crop((x, y, x + size, y + size))
        path = dst / (f"{i:03d}.jpg" if i % 2 == 0 else f"{i:03d}.png")
        crop.save(path, quality=92) if path.suffix == ".jpg" else crop.save(path)
        files.append(path)
    return files


def _rate(n: int, seconds: float, mp: float) -> dict:
    return {"seconds": seconds, "images_per_s": n / seconds, "output_mp_per_s": mp / seconds}


def stage_capacities(files: list[Path], runner, opts, on_stage=None) -> dict[str, dict]:
    """Each stage alone, timed over all files, with the resources the pipeline gives it;
    ``on_stage(name, figures)`` hears of each stage as soon as it is measured."""
    from torch.utils.data import DataLoader

    from pixbatch.io.encode import write_image
    from pixbatch.runtime.jobs import Report
    from pixbatch.runtime.sources import DecodeSet, decode_workers, start_loader
    from pixbatch.tasks.upscale import pixels_from_planes, planes_from_pixels, upscale_tensor

    dev, s, n = runner.device, runner.info.scale, len(files)
    from pixbatch.io.discover import Job

    jobs = [Job(f, f) for f in files]
    workers = decode_workers(opts.workers, n, dev.type == "cpu")
    stages: dict[str, dict] = {}

    # decode: the pipeline's own DataLoader, workers included (their start-up counted, as in a run)
    t = time.perf_counter()
    loader = DataLoader(DecodeSet(jobs, opts.max_pixels), batch_size=None, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    decoded = [(px, meta) for _, px, meta, _ in start_loader(loader)]
    out_mp = sum(px.shape[0] * px.shape[1] for px, _ in decoded) * s * s / 1e6
    stages["decode"] = {**_rate(n, time.perf_counter() - t, out_mp), "workers": workers}
    _tell(on_stage, "decode", stages)

    # host -> device (GPU): pinned, non-blocking, as the loader hands it over
    if dev.type == "cuda":
        pinned = [px.pin_memory() for px, _ in decoded]
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        on_dev = [p.to(dev, non_blocking=True) for p in pinned]
        torch.cuda.synchronize(dev)
        stages["host_to_device"] = _rate(n, time.perf_counter() - t, out_mp)
        _tell(on_stage, "host_to_device", stages)
        del on_dev

    # compute: the prepared model with the pipeline's windows and batching, float in and out
    planes = [planes_from_pixels(px.to(dev), meta.bits) for px, meta in decoded]
    if len({p.shape for p in planes}) != 1:
        raise ValueError("the benchmark folder must hold images of one size and mode")
    upscale_tensor(runner, planes[0][:1])  # warm-up (and compilation, when compiled)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    batch = torch.cat(planes)  # every image its own work item, batched by the engine as in the pipeline
    outs = list(upscale_tensor(runner, batch, report=Report()).split(1))
    del batch
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    stages["compute"] = _rate(n, time.perf_counter() - t, out_mp)
    _tell(on_stage, "compute", stages)
    pixels = [pixels_from_planes(o, meta.mode, meta.bits) for o, (_, meta) in zip(outs, decoded)]

    # device -> host (GPU)
    if dev.type == "cuda":
        host = [torch.empty(p.shape, dtype=p.dtype, pin_memory=True) for p in pixels]
        torch.cuda.synchronize(dev)
        t = time.perf_counter()
        for h, p in zip(host, pixels):
            h.copy_(p, non_blocking=True)
        torch.cuda.synchronize(dev)
        stages["device_to_host"] = _rate(n, time.perf_counter() - t, out_mp)
        _tell(on_stage, "device_to_host", stages)
        pixels = host
    arrays = [p.cpu().numpy() for p in pixels]

    # encode: the writer pool, same formats, compression and thread count as the pipeline
    writers = opts.writers or max(2, min(8, os.cpu_count() or 2))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(lambda i: write_image(arrays[i], decoded[i][1], Path(tmp) / files[i].name, opts.encode),
                          range(n)))
        stages["encode"] = {**_rate(n, time.perf_counter() - t, out_mp), "writers": writers}
    _tell(on_stage, "encode", stages)
    return stages


def _tell(on_stage, name: str, stages: dict) -> None:
    if on_stage is not None:
        on_stage(name, stages[name])


def plain_loop(module: torch.nn.Module, files: list[Path], out: Path, device: torch.device) -> None:
    """What most scripts do: PIL open -> tensor -> eager fp32 NCHW model -> CPU -> PIL save, one by one."""
    from PIL import Image

    module = module.to(device).eval()
    for f in files:
        with Image.open(f) as im:
            x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float().div(255).to(device)
        with torch.no_grad():
            y = module(x)
        arr = (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        Image.fromarray(arr).save(out / f.with_suffix(".png").name)


def openvino_loop(module: torch.nn.Module, size: int):
    """The plain loop with OpenVINO computing instead of PyTorch (the model converted once for SIZE px
    inputs, bf16 inference where the CPU computes it natively, the latency hint): what a user who reached
    for OpenVINO would write. Returns (loop over files into a folder, conversion seconds), or None when
    openvino is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    from PIL import Image

    from pixbatch.runtime.device import cpu_has_native_bf16

    t = time.perf_counter()
    converted = ov.convert_model(module.eval(), example_input=torch.rand(1, 3, size, size))
    compiled = ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if cpu_has_native_bf16() else "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    setup = time.perf_counter() - t

    def loop(files: list[Path], out: Path) -> None:
        for f in files:
            with Image.open(f) as im:
                x = (np.asarray(im.convert("RGB"), dtype=np.float32) / 255).transpose(2, 0, 1)[None]
            request.infer({0: np.ascontiguousarray(x)})
            y = request.get_output_tensor(0).data[0]
            Image.fromarray((np.clip(y, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)).save(
                out / f.with_suffix(".png").name)

    return loop, setup


def bench_upscale(model: str, photos: list[Path], *, images: int = 24, size: int = 256,
                  compute: ComputeSpec | None = None, log=print, on_line=None) -> dict:
    """Stage capacities, the pipeline and the plain loop on one generated folder; returns the figures.
    ``compute``: the pipeline's device, precision and backend (default: the commands' defaults).
    ``on_line`` receives the report's lines as each measurement finishes (a run takes minutes)."""
    import copy

    from pixbatch.io.discover import plan_jobs
    from pixbatch.models import create_model
    from pixbatch.runtime.backends import TORCH_THREADS
    from pixbatch.runtime.device import compile_by_default, resolve_device, resolve_precision
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.upscale import UpscaleTask

    compute = compute or ComputeSpec()
    dev = resolve_device(compute.device)
    loaded = create_model(model)
    s = loaded.info.scale
    env = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
           "device_type": dev.type, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "python": platform.python_version(), "pillow": _pillow_version(),
           "model": model, "params": loaded.info.params, "scale": s, "images": images, "size": size}
    say = on_line or (lambda line: None)
    for line in _head(env):
        say(line)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = make_photo_folder(tmp / "in", photos, images, size)
        out_mp = images * (size * s) ** 2 / 1e6
        opts = JobSpec(compute=compute)
        compile_ = compute.compile if compute.compile is not None else compile_by_default(dev, images)
        dtype = resolve_precision(compute.precision, dev, loaded.info)
        int8 = None
        if compute.precision == Precision.INT8:  # the job's int8 model, from the cache or made now
            from pixbatch.runtime.int8 import summary_line
            from pixbatch.tasks.calibration import int8_for

            int8 = int8_for(loaded, (), dtype, log=log)
            say(summary_line(int8.entry))
        runner = prepare_model(copy.deepcopy(loaded), dev, dtype, channels_last=compute.channels_last,
                               compile=compile_, kernels=compute.kernels, backend=compute.backend,
                               job_pixels=images * size * size, int8=int8)
        if runner.backend_note:
            say(runner.backend_note)
        log("measuring each stage alone ...")
        stages = stage_capacities(files, runner, opts, on_stage=lambda name, st: say(_row(name, st)))
        threads = torch.get_num_threads()  # one when the job went to OpenVINO; the plain loops get PyTorch's own
        torch.set_num_threads(TORCH_THREADS)
        log("plain eager loop ...")
        (tmp / "plain").mkdir()
        plain_module = copy.deepcopy(loaded.module)
        plain_loop(plain_module, files[:1], tmp / "plain", dev)  # warm-up (cuDNN, allocator)
        t = time.perf_counter()
        plain_loop(plain_module, files, tmp / "plain", dev)
        plain = _rate(images, time.perf_counter() - t, out_mp)
        say(_row("plain eager loop", plain))
        ov_plain = None
        if dev.type == "cpu" and (found := openvino_loop(copy.deepcopy(loaded.module), size)) is not None:
            log("plain OpenVINO loop ...")
            loop, setup = found
            (tmp / "ov").mkdir()
            loop(files[:1], tmp / "ov")  # warm-up
            t = time.perf_counter()
            loop(files, tmp / "ov")
            ov_plain = {**_rate(images, time.perf_counter() - t, out_mp), "conversion_seconds": setup}
            say(_row("plain OpenVINO loop", ov_plain))
        torch.set_num_threads(threads)
        log("pixbatch pipeline ...")
        t = time.perf_counter()
        report = run_job(UpscaleTask(runner), plan_jobs([tmp / "in"], tmp / "out"), opts)
        pipeline = {**_rate(images, time.perf_counter() - t, out_mp), "settings": report.settings}
        if report.done != images:
            raise RuntimeError(f"pipeline wrote {report.done} of {images} images: {report.failed}")
        say(_row("pixbatch pipeline", pipeline))
    bottleneck = min(stages, key=lambda k: stages[k]["images_per_s"])
    result = {
        **env, "stages": stages, "bottleneck": bottleneck,
        "pipeline": pipeline, "plain_loop": plain,
        "efficiency": pipeline["images_per_s"] / stages[bottleneck]["images_per_s"],
        "speedup_vs_plain_loop": pipeline["images_per_s"] / plain["images_per_s"],
    }
    if ov_plain is not None:
        result.update(openvino_loop=ov_plain, speedup_vs_openvino_loop=pipeline["images_per_s"] / ov_plain["images_per_s"])
    for line in _closing(result):
        say(line)
    return result


def _pillow_version() -> str:
    import PIL

    return getattr(PIL, "__version__", "?")


def _head(r: dict) -> list[str]:
    return [f"{r['model']} x{r['scale']} on {r['device']} ({r['device_type']}, {r['threads']} threads), "
            f"{r['images']} photos {r['size']}x{r['size']} (JPEG+PNG), torch {r['torch']}, Pillow {r['pillow']}",
            f"{'measured':<22} {'img/s':>8} {'MP/s out':>9}"]


def _row(label: str, st: dict) -> str:
    return f"{label:<22} {st['images_per_s']:8.2f} {st['output_mp_per_s']:9.2f}"


def _closing(r: dict) -> list[str]:
    name = r["bottleneck"]
    lines = [f"<- bottleneck: {name} ({r['stages'][name]['images_per_s']:.2f} img/s alone); the pipeline reaches "
             f"{100 * r['efficiency']:.0f}% of it and is {r['speedup_vs_plain_loop']:.2f}x the plain eager loop"
             + (f", {r['speedup_vs_openvino_loop']:.2f}x the plain OpenVINO loop" if "openvino_loop" in r else "")]
    if r["efficiency"] > 1:
        lines.append("(over 100 %: each stage alone was timed with its one-time costs, such as starting the decode "
                     "workers and the first batches, which the pipeline overlaps with other work; the stage's "
                     "capacity is then a lower bound)")
    return lines


def format_report(r: dict) -> list[str]:
    """The whole report: what ``on_line`` receives during a run, in the same order."""
    ov = [_row("plain OpenVINO loop", r["openvino_loop"])] if "openvino_loop" in r else []
    return [*_head(r), *(_row(n, st) for n, st in r["stages"].items()), _row("plain eager loop", r["plain_loop"]),
            *ov, _row("pixbatch pipeline", r["pipeline"]), *_closing(r)]
