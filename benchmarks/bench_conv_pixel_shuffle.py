"""The fused conv3x3 + PixelShuffle kernel against cuDNN conv + pixel_shuffle, on real layer shapes.

    python benchmarks/bench_conv_pixel_shuffle.py                 # GPU: full table, JSON and plot
    python benchmarks/bench_conv_pixel_shuffle.py --check         # any machine: every variant once, checked

Layer shapes are taken from the models themselves (every conv -> PixelShuffle of the shipped models
and of Real-ESRGAN's compact model when ../shared/data has it), at LR inputs of 256x256, 512x512 and
1920x1080 (a layer after an earlier x2 step sees twice that). Variants, all channels-last, same run:
  * eager: cuDNN conv2d + pixel_shuffle (+ activation / residual) -- the baseline
  * compiled: torch.compile of that same unfused function
  * fused: the Triton kernel
Reported per shape and dtype: median us (triton.testing.do_bench, through benchlib.median_seconds), TFLOP/s (2*M*N*K counted from the
shape), effective GB/s (input + weights + output bytes, each touched once) and speed-ups over eager
and over compiled. On a CPU the kernel cannot run natively: the script times the reference only and
says so (with --check it still verifies every variant, the kernel in Triton's interpreter).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from benchlib import COMPACT, device_tag, environment, median_seconds, write_result

SIZES = {"256": (256, 256), "512": (512, 512), "1080p": (1080, 1920)}


@dataclass(frozen=True)
class Layer:
    model: str
    c_in: int
    c: int  # channels after the shuffle
    r: int
    stage_scale: int  # resolution of the layer's input relative to the LR image
    act: str
    residual: bool


def model_layers() -> list[Layer]:
    """Every fusable conv -> PixelShuffle of the shipped models (and the foreign compact one)."""
    from pixbatch.models import create_model
    from pixbatch.ops.conv_pixel_shuffle import ConvPixelShuffle
    from pixbatch.runtime.fuse import fuse_upsamplers
    from pixbatch.tasks.defaults import UPSCALE

    names = list(UPSCALE.models.values()) + ([str(COMPACT)] if COMPACT.is_file() else [])
    layers = []
    for name in names:
        fused, _ = fuse_upsamplers(create_model(name).module)
        stage = 1
        for m in fused.modules():
            if isinstance(m, ConvPixelShuffle):
                c_in, c = m.weight.shape[1], m.weight.shape[0] // m.r ** 2
                layers.append(Layer(Path(name).stem, c_in, c, m.r, stage, m.act, m.residual))
                stage *= m.r
    return sorted(set(layers), key=lambda layer: (layer.model, layer.stage_scale))


def setup(layer: Layer, size: tuple[int, int], dtype: torch.dtype, device: str, batch: int = 1):
    """Inputs and the three callables for one layer at one LR size."""
    from pixbatch.ops.conv_pixel_shuffle import conv_pixel_shuffle, conv_pixel_shuffle_ref, pack_weight

    g = torch.Generator().manual_seed(0)
    h, w = size[0] * layer.stage_scale, size[1] * layer.stage_scale
    x = torch.randn(batch, layer.c_in, h, w, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    weight = (torch.randn(layer.c * layer.r ** 2, layer.c_in, 3, 3, generator=g) / (9 * layer.c_in) ** 0.5).to(device, dtype)
    bias = (torch.randn(layer.c * layer.r ** 2, generator=g) * 0.1).to(device, dtype)
    kw = {"act": layer.act}
    if layer.act == "prelu":
        kw["alpha"] = torch.full((layer.c,), 0.25, device=device, dtype=dtype)
    if layer.residual:
        kw["residual"] = torch.randn(batch, layer.c, h, w, generator=g).to(device, dtype).contiguous(
            memory_format=torch.channels_last)
    packed = pack_weight(weight, bias, layer.r)

    def eager():
        return conv_pixel_shuffle_ref(x, weight, bias, layer.r, **kw)

    compiled_fn = torch.compile(conv_pixel_shuffle_ref, dynamic=False)

    def compiled():
        return compiled_fn(x, weight, bias, layer.r, **kw)

    def fused():
        return conv_pixel_shuffle(x, weight, bias, layer.r, packed=packed, **kw)

    flops = 2 * batch * h * w * (layer.c * layer.r ** 2) * (9 * layer.c_in)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = itemsize * (x.numel() + weight.numel() + batch * layer.c * h * w * layer.r ** 2
                         + (kw["residual"].numel() if layer.residual else 0))
    return {"eager": eager, "compiled": compiled, "fused": fused}, flops, nbytes


def bench_gpu(layers: list[Layer], dtypes: list[torch.dtype]) -> list[dict]:
    cuda = torch.device("cuda")
    rows = []
    for layer in layers:
        for size_name, size in SIZES.items():
            for dtype in dtypes:
                fns, flops, nbytes = setup(layer, size, dtype, "cuda")
                row = {"model": layer.model, "layer": f"{layer.c_in}->{layer.c}x{layer.r}^2 {layer.act}"
                       + (" +res" if layer.residual else ""), "stage": layer.stage_scale, "lr_size": size_name,
                       "dtype": str(dtype).removeprefix("torch.")}
                ref = fns["eager"]()
                for name, fn in fns.items():
                    err = (fn().float() - ref.float()).abs().max().item()
                    us = median_seconds(fn, cuda, 0.1) * 1e6  # do_bench: 25 ms warm-up, 100 ms of runs
                    row[name] = {"us": us, "tflops": flops / us / 1e6, "gbps": nbytes / us / 1e3, "max_abs_err": err}
                row["speedup_vs_eager"] = row["eager"]["us"] / row["fused"]["us"]
                row["speedup_vs_compiled"] = row["compiled"]["us"] / row["fused"]["us"]
                rows.append(row)
                print(f"{row['model']:<22} {row['layer']:<22} x{row['stage']} {size_name:>6} {row['dtype']:>8} "
                      f"eager {row['eager']['us']:8.1f} us  compiled {row['compiled']['us']:8.1f} us  "
                      f"fused {row['fused']['us']:8.1f} us ({row['fused']['tflops']:6.1f} TFLOP/s, "
                      f"{row['fused']['gbps']:6.0f} GB/s)  x{row['speedup_vs_eager']:.2f} vs eager, "
                      f"x{row['speedup_vs_compiled']:.2f} vs compiled", flush=True)
    return rows


def bench_cpu_reference(layers: list[Layer]) -> list[dict]:
    rows = []
    for layer in layers:
        fns, flops, _ = setup(layer, (64, 64), torch.float32, "cpu")
        us = median_seconds(fns["eager"], torch.device("cpu"), 0.5) * 1e6
        rows.append({"model": layer.model, "layer": f"{layer.c_in}->{layer.c}x{layer.r}^2", "stage": layer.stage_scale,
                     "lr_size": "64", "dtype": "float32", "eager": {"us": us, "tflops": flops / us / 1e6}})
        print(f"{layer.model:<22} {layer.c_in}->{layer.c}x{layer.r}^2 x{layer.stage_scale} at 64x64 LR: "
              f"reference {us:9.1f} us ({flops / us / 1e3:.2f} GFLOP/s)")
    return rows


def check(layers: list[Layer]) -> None:
    """Every variant once at a small size, compared with the eager reference (kernel interpreted on CPU)."""
    import os

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("--check without a GPU needs TRITON_INTERPRET=1 (set it before starting Python)")
    for layer in layers:
        fns, _, _ = setup(layer, (5, 7), torch.float32, device)
        ref = fns["eager"]()
        for name in ("fused", "compiled"):
            err = (fns[name]() - ref).abs().max().item()
            assert err < 1e-3, (layer, name, err)
        print(f"ok {layer}")


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    bf16 = [r for r in rows if r["dtype"] == "bfloat16"]
    labels = [f"{r['model']}\n{r['layer']}\n{r['lr_size']}" for r in bf16]
    fig, ax = plt.subplots(figsize=(max(8, len(bf16) * 0.6), 4))
    ax.bar(range(len(bf16)), [r["speedup_vs_eager"] for r in bf16])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.5, color="g", lw=0.8, ls="--")
    ax.set_xticks(range(len(bf16)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("fused speed-up over cuDNN + pixel_shuffle (bf16)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="run every variant once at a small size and verify it")
    p.add_argument("--dtypes", default="bfloat16,float16,float32")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    layers = model_layers()
    if args.check:
        check(layers)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = environment(device)
    if device.type == "cuda":
        meta.update(cuda=torch.version.cuda)
        rows = bench_gpu(layers, [getattr(torch, d) for d in args.dtypes.split(",")])
    else:
        print("No CUDA GPU: the fused Triton kernel cannot run natively here. Timing the reference "
              "(conv2d + pixel_shuffle, fp32, CPU) only; no speed-up is claimed.")
        meta.update(note="CPU: reference only")
        rows = bench_cpu_reference(layers)
    out = write_result({"meta": meta, "rows": rows}, f"conv_pixel_shuffle_{device_tag(device)}", args.out)
    print(f"wrote {out}")
    if torch.cuda.is_available():
        plot(rows, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
