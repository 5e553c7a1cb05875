"""End-to-end and model-only throughput of `pixbatch upscale` next to plain eager PyTorch, same run.

    python benchmarks/bench_pipeline.py [--model edsr_tiny_x4] [--images 24] [--size 256] [--compile]

The input folder is made from real photos (../shared/data/sr/train/sun_hays80, or the repo's
examples/), cropped to --size and saved half as JPEG, half as PNG. Three measurements:
  * model-only: output MP/s of each variant (eager fp32 NCHW baseline, channels-last, bf16 autocast,
    torch.compile with --compile), with the max abs error against the baseline;
  * plain loop: open with PIL -> tensor -> model (eager fp32 NCHW) -> PIL save, one image at a time,
    which is what most scripts do;
  * pixbatch: the CLI's pipeline with its defaults (decode workers, batching, channels-last, writers).
Prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = [REPO.parent / "shared" / "data" / "sr" / "train" / "sun_hays80", REPO / "examples"]


def make_folder(dst: Path, n: int, size: int) -> list[Path]:
    """n crops of real photos (JPEG and PNG alternately), each size x size."""
    sources = next(sorted(p for p in d.iterdir() if p.suffix.lower() in {".jpg", ".png"})
                   for d in PHOTOS if d.is_dir())
    files = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            if min(im.size) < size:
                im = im.resize((max(size, im.width * size // min(im.size)), max(size, im.height * size // min(im.size))))
            x, y = (im.width - size) // 2, (im.height - size) // 2
            crop = im.crop((x, y, x + size, y + size))
        path = dst / (f"{i:03d}.jpg" if i % 2 == 0 else f"{i:03d}.png")
        crop.save(path, quality=92) if path.suffix == ".jpg" else crop.save(path)
        files.append(path)
    return files


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, repeat: int = 3) -> float:
    """Median seconds of ``repeat`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def model_variants(loaded, size: int, batch: int, use_compile: bool) -> list[dict]:
    module = loaded.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 3, size, size)
    out_mp = batch * (size * loaded.info.scale) ** 2 / 1e6
    with torch.no_grad():
        ref = module(x)

    def run_nchw():
        with torch.no_grad():
            return module(x)

    cl_module = __import__("copy").deepcopy(module).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def run_cl():
        with torch.no_grad():
            return cl_module(x_cl)

    def run_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return cl_module(x_cl)

    variants = [("eager fp32 NCHW (baseline)", run_nchw), ("eager fp32 channels-last", run_cl),
                ("eager bf16 autocast channels-last", run_bf16)]
    compile_s = None
    if use_compile:
        compiled = torch.compile(cl_module, dynamic=False)

        def run_compiled():
            with torch.no_grad():
                return compiled(x_cl)

        t = time.perf_counter()
        run_compiled()
        compile_s = time.perf_counter() - t
        variants.append(("torch.compile fp32 channels-last", run_compiled))
    rows = []
    for name, fn in variants:
        seconds = timed(fn)
        err = (fn().float() - ref).abs().max().item()
        rows.append({"variant": name, "seconds": seconds, "output_mp_per_s": out_mp / seconds, "max_abs_err": err})
    base = rows[0]["output_mp_per_s"]
    for r in rows:
        r["speedup"] = r["output_mp_per_s"] / base
    if compile_s is not None:
        rows[-1]["compile_seconds"] = compile_s
    return rows


def plain_loop(loaded, files: list[Path], out: Path) -> None:
    module = loaded.module
    for f in files:
        with Image.open(f) as im:
            x = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = module(x)
        arr = (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(out / f.name)


def pixbatch_run(loaded, files: list[Path], src: Path, out: Path):
    from pixbatch.io.discover import plan_jobs
    from pixbatch.runtime.device import resolve_precision
    from pixbatch.runtime.pipeline import UpscaleOptions, upscale_images
    from pixbatch.runtime.prepare import prepare_model

    device = torch.device("cpu")
    runner = prepare_model(loaded, device, resolve_precision("auto", device, loaded.info))
    plan = plan_jobs([src], out)
    return upscale_images([src], out, runner, UpscaleOptions(), plan, log=lambda m: print(m, file=sys.stderr))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="edsr_tiny_x4")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1, help="batch for the model-only figures")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (tens of seconds to compile)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pipeline_cpu.json")
    args = p.parse_args()

    from pixbatch.models import create_model

    loaded = create_model(args.model)
    s = loaded.info.scale
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        files = make_folder(tmp / "in", args.images, args.size)
        out_mp = args.images * (args.size * s) ** 2 / 1e6
        rows = model_variants(loaded, args.size, args.batch, args.compile)

        (tmp / "plain").mkdir()
        t = time.perf_counter()
        plain_loop(loaded, files, tmp / "plain")
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        report = pixbatch_run(loaded, files, tmp / "in", tmp / "pixbatch")
        pix_s = time.perf_counter() - t
        assert report.done == args.images, report.as_dict()

    e2e = {
        "plain_loop": {"seconds": plain_s, "images_per_s": args.images / plain_s, "output_mp_per_s": out_mp / plain_s},
        "pixbatch": {"seconds": pix_s, "images_per_s": args.images / pix_s, "output_mp_per_s": out_mp / pix_s,
                     "settings": report.settings},
    }
    e2e["speedup"] = plain_s / pix_s
    result = {
        "device": cpu_name(), "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "model": args.model,
        "params": loaded.info.params, "images": args.images, "size": args.size, "scale": s,
        "model_only": rows, "end_to_end": e2e,
    }
    print(f"\nmodel-only: {args.model} on {args.batch}x3x{args.size}x{args.size}, CPU, {torch.get_num_threads()} threads")
    print(f"{'variant':<36} {'MP/s out':>9} {'speed-up':>9} {'max err':>9}")
    for r in rows:
        print(f"{r['variant']:<36} {r['output_mp_per_s']:>9.2f} {r['speedup']:>8.2f}x {r['max_abs_err']:>9.1e}")
    print(f"\nend-to-end: {args.images} images of {args.size}x{args.size} (JPEG+PNG) -> x{s}")
    for name in ("plain_loop", "pixbatch"):
        r = e2e[name]
        print(f"{name:<12} {r['seconds']:>7.2f} s {r['images_per_s']:>7.2f} img/s {r['output_mp_per_s']:>7.2f} MP/s")
    print(f"pixbatch / plain loop: {e2e['speedup']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
