"""Model-only throughput of every shipped model, each speed-up next to eager fp32 NCHW from the same run.

    python benchmarks/bench_models.py [--models edsr_tiny_x4,unet_drive,compact] [--sizes 128,256]
                                      [--batches 1,4] [--compile] [--max-autotune] [--check]

Variants: eager fp32 NCHW (the baseline) -> channels-last -> + autocast bf16 / fp16 -> + torch.compile
(default mode; max-autotune with --max-autotune) -> + fused Triton conv+PixelShuffle (CUDA, SR models),
and "pixbatch default" (what `pixbatch upscale/segment` prepares on this device). For each: output MP/s,
images/s, speed-up over the baseline, achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode on the
baseline forward) and % of the device's peak (GPUs with a known peak), peak memory (CUDA), compile time
(apart), and max abs error / PSNR against the fp32 baseline output. Table on stdout, JSON and a PNG chart
in benchmarks/results/. ``--check`` runs every variant once at a tiny size and checks its output.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
from benchlib import COMPACT, count_flops, device_name, device_tag, environment, median_seconds, write_result

# Dense tensor-core peaks in TFLOP/s (vendor data sheets, SXM parts), by dtype.
GPU_PEAK_TFLOPS = {
    "H100": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},  # fp32 through TF32
    "H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0},
}


def load(name: str):
    from pixbatch.models import create_model

    return create_model(COMPACT if name == "compact" else name)


def device_peak(device: torch.device) -> dict | None:
    if device.type != "cuda":
        return None  # CPU peaks depend on clocks and ISA; not guessed here
    gpu = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_TFLOPS.items() if k in gpu), None)


def make_variants(loaded, device: torch.device, args) -> list[tuple[str, object, dict]]:
    """(name, module-like callable taking x, options) for every variant this device can run."""
    from pixbatch.runtime.device import resolve_precision
    from pixbatch.runtime.prepare import prepare_model

    base = copy.deepcopy(loaded.module).eval().to(device)
    for p in base.parameters():
        p.requires_grad_(False)
    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    out = [("eager fp32 NCHW", base, {"dtype": torch.float32, "cl": False}),
           ("eager fp32 channels-last", cl, {"dtype": torch.float32, "cl": True})]
    amp = [torch.bfloat16, torch.float16] if device.type == "cuda" else [torch.bfloat16]
    for dt in amp:
        out.append((f"{_dt(dt)} autocast channels-last", cl, {"dtype": dt, "cl": True}))
    fast = amp[0]
    if args.compile:
        out.append((f"{_dt(fast)} channels-last + compile", torch.compile(cl, dynamic=False),
                    {"dtype": fast, "cl": True, "compiled": True}))
        if args.max_autotune:
            out.append((f"{_dt(fast)} channels-last + compile max-autotune",
                        torch.compile(cl, dynamic=False, mode="max-autotune"), {"dtype": fast, "cl": True, "compiled": True}))
    if device.type == "cuda" and loaded.info.task == "sr":
        from pixbatch.runtime.fuse import fuse_upsamplers

        fused, n = fuse_upsamplers(cl)
        if n:
            out.append((f"{_dt(fast)} channels-last + fused Triton", fused, {"dtype": fast, "cl": True}))
            if args.compile:
                out.append((f"{_dt(fast)} channels-last + fused Triton + compile", torch.compile(fused, dynamic=False),
                            {"dtype": fast, "cl": True, "compiled": True}))
    runner = prepare_model(copy.deepcopy(loaded), device, resolve_precision("auto", device, loaded.info),
                           channels_last=True, compile=device.type == "cuda" and args.compile, kernels="auto")
    out.append(("pixbatch default", runner, {"runner": True, "dtype": runner.dtype, "cl": True,
                                              "compiled": runner.compiled is not None}))
    return out


def _dt(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def call(variant, opts: dict, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if opts.get("runner"):
        return variant(x)
    xi = x.contiguous(memory_format=torch.channels_last) if opts["cl"] else x
    with torch.no_grad(), torch.autocast(device.type, dtype=opts["dtype"], enabled=opts["dtype"] != torch.float32):
        return variant(xi).float()


def compare(y: torch.Tensor, ref: torch.Tensor, task: str) -> dict:
    if task == "seg":  # compare probabilities
        y, ref = torch.sigmoid(y) if y.shape[1] == 1 else y.softmax(1), torch.sigmoid(ref) if ref.shape[1] == 1 else ref.softmax(1)
    err = (y - ref).abs().max().item()
    mse = (y.clamp(0, 1) - ref.clamp(0, 1)).square().mean().item()
    return {"max_abs_err": err, "psnr_db": float("inf") if mse == 0 else 10 * math.log10(1 / mse)}


def run_model(name: str, device: torch.device, args) -> list[dict]:
    loaded = load(name)
    info = loaded.info
    rows = []
    variants = make_variants(loaded, device, args)
    peak = device_peak(device)
    for size in args.sizes:
        for batch in args.batches:
            x = torch.rand(batch, info.in_channels, size, size, device=device)
            out_mp = batch * (size * info.scale) ** 2 / 1e6
            ref = call(variants[0][1], variants[0][2], x, device)
            flops = count_flops(variants[0][1], x)
            base_s = None
            for vname, variant, opts in variants:
                if opts.get("compiled") and (size, batch) != (args.sizes[0], args.batches[0]) and not args.compile_all:
                    continue  # compile costs tens of seconds per shape: first shape only unless --compile-all
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                try:
                    y = call(variant, opts, x, device)
                except Exception as exc:  # a variant this stack cannot run is reported, not fatal
                    rows.append({"model": name, "size": size, "batch": batch, "variant": vname,
                                 "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
                    continue
                if device.type == "cuda":
                    torch.cuda.synchronize()
                first_s = time.perf_counter() - t0
                seconds = median_seconds(lambda v=variant, o=opts, xi=x: call(v, o, xi, device), device, args.min_time)
                base_s = base_s or seconds
                tflops = flops / seconds / 1e12
                dt = _dt(opts["dtype"])
                row = {"model": name, "task": info.task, "size": size, "batch": batch, "variant": vname,
                       "dtype": dt, "seconds": seconds, "output_mp_per_s": out_mp / seconds,
                       "images_per_s": batch / seconds, "speedup": base_s / seconds, "flops": flops,
                       "tflops": tflops, "pct_of_peak": 100 * tflops / peak[dt] if peak else None,
                       "peak_mem_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
                       **compare(y, ref, info.task)}
                if opts.get("compiled"):
                    row["compile_seconds"] = first_s
                rows.append(row)
                print(_fmt(row), flush=True)
    return rows


def _fmt(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:<14} {r['size']:>5} {r['batch']:>3}  {r['variant']:<44} error: {r['error']}"
    pk = f"{r['pct_of_peak']:5.1f}%" if r["pct_of_peak"] is not None else "    -"
    mem = f"{r['peak_mem_bytes'] / 2**20:7.0f}" if r["peak_mem_bytes"] is not None else "      -"
    comp = f" (compile {r['compile_seconds']:.0f} s)" if "compile_seconds" in r else ""
    return (f"{r['model']:<14} {r['size']:>5} {r['batch']:>3}  {r['variant']:<44} {r['output_mp_per_s']:8.2f} "
            f"{r['images_per_s']:8.2f} {r['speedup']:6.2f}x {r['tflops']:7.3f} {pk} {mem} "
            f"{r['max_abs_err']:8.1e} {r['psnr_db']:6.1f}{comp}")


def chart(rows: list[dict], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no chart", file=sys.stderr)
        return False
    ok = [r for r in rows if "error" not in r]
    groups = sorted({(r["model"], r["size"], r["batch"]) for r in ok}, key=lambda g: (g[0], g[1], g[2]))
    variants = list(dict.fromkeys(r["variant"] for r in ok))
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(groups)), 5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs, ys = [], []
        for j, g in enumerate(groups):
            r = next((r for r in ok if (r["model"], r["size"], r["batch"]) == g and r["variant"] == v), None)
            if r:
                xs.append(j + i * width)
                ys.append(r["speedup"])
        ax.bar(xs, ys, width, label=v)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{m}\n{s}px b{b}" for m, s, b in groups], fontsize=8)
    ax.set_ylabel("speed-up over eager fp32 NCHW (same run)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="edsr_tiny_x2,edsr_tiny_x4,unet_drive,compact")
    ap.add_argument("--sizes", default=None, help="input sizes (default: 128,256 on the CPU; 256,720 on a GPU)")
    ap.add_argument("--batches", default=None, help="batch sizes (default: 1,4 on the CPU; 1,8 on a GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (first shape only unless --compile-all)")
    ap.add_argument("--compile-all", action="store_true")
    ap.add_argument("--max-autotune", action="store_true", help="with --compile: also mode='max-autotune'")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per measurement")
    ap.add_argument("--check", action="store_true", help="every variant once at 24 px: outputs close to the baseline")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pixbatch.runtime.device import resolve_device

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    models = [m for m in args.models.split(",") if m != "compact" or COMPACT.is_file()]
    if args.check:
        args.sizes, args.batches, args.min_time = [24], [1], 0.01
    else:
        args.sizes = [int(v) for v in (args.sizes or ("256,720" if gpu else "128,256")).split(",")]
        args.batches = [int(v) for v in (args.batches or ("1,8" if gpu else "1,4")).split(",")]
    print(f"{'model':<14} {'size':>5} {'bat':>3}  {'variant':<44} {'MP/s':>8} {'img/s':>8} {'speed':>7} "
          f"{'TFLOP/s':>7} {'peak':>6} {'MiB':>7} {'max err':>8} {'PSNR':>6}")
    rows = []
    for name in models:
        rows += run_model(name, device, args)
    if args.check:
        bad = [r for r in rows if "error" in r or not (r["max_abs_err"] < 0.1 or r["psnr_db"] > 30)]
        if bad:
            sys.exit(f"check failed: {bad}")
        print(f"check: {len(rows)} variant runs agree with the fp32 baseline")
        return
    result = {**environment(device), "peak_tflops": device_peak(device), "rows": rows}
    out = write_result(result, f"models_{device_tag(device)}", args.out)
    png = out.with_suffix(".png")
    if chart(rows, png, f"{device_name(device)}, torch {torch.__version__}"):
        print(f"wrote {out} and {png}")
    else:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
