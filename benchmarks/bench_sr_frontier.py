"""Quality per millisecond of super-resolution models of one scale: Set5 Y-PSNR against CPU (or GPU) time
per 512x512 output on pixbatch's default path, with the Pareto front drawn.

    python benchmarks/bench_sr_frontier.py [MODEL ...] [--scale 2|3|4] [--out FILE] [--plot FILE]

Default models: MATLAB bicubic, the shipped models of the scale (x4 by default), IMDN of that scale and,
at x4, every checkpoint in ../shared/data/weights/efficient_sr, except the two RLFN files: the shipped
rlfn_x4 holds their tensors. For each: parameters, conv/matmul FLOPs per output pixel (torch's
FlopCounterMode: multiply-adds x 2; element-wise work is not counted), ms per 512x512 output in eager
fp32 NCHW and on the default path (channels-last, auto precision), all timed in this one run, and Set5
Y-PSNR/SSIM (the standard LR_bicubic set) in fp32 and at the default path's precision.
Writes benchmarks/results/sr_frontier[_x2|_x3]_<device>.json and .png.
"""

from __future__ import annotations

from pathlib import Path

import torch
from benchlib import RESULTS, SHARED_DATA, count_flops, device_tag, environment, median_seconds, write_result

EFFICIENT = SHARED_DATA / "weights" / "efficient_sr"
DUPLICATES = {"team04_rlfn.pth", "team00_rlfn.pth"}  # the same tensors as the shipped rlfn_x4


def default_models(scale: int) -> list[str]:
    from pixbatch.models import builtin_weights, list_models

    shipped = [n for n in list_models(f"*_x{scale}") if builtin_weights(n) is not None]
    files = [SHARED_DATA / "weights" / f"imdn_x{scale}.pth"] + (sorted(EFFICIENT.glob("*.pth")) if scale == 4 else [])
    return shipped + [str(p) for p in files if p.is_file() and p.name not in DUPLICATES]


def flops_per_output_pixel(module: torch.nn.Module, scale: int, size: int = 64) -> float:
    return count_flops(module, torch.rand(1, 3, size, size)) / (size * scale) ** 2


def pareto(rows: list[dict], x: str, y: str) -> list[str]:
    """Names of the rows no other row beats on both: faster (lower x) and better (higher y)."""
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r[x], -r[y])):
        if r[y] > best:
            front.append(r["model"])
            best = r[y]
    return front


def main() -> None:
    import argparse

    from torch.nn import functional as F

    from pixbatch.eval.sr import evaluate_sr, mean_metrics
    from pixbatch.models import create_model
    from pixbatch.runtime.device import resolve_device, resolve_precision
    from pixbatch.runtime.prepare import prepare_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="models or checkpoints of --scale (default: see above)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--replot", type=Path, default=None, metavar="JSON", help="only redraw the chart of a result file")
    args = p.parse_args()
    if args.replot is not None:
        import json

        result = json.loads(args.replot.read_text())
        plot = args.plot or args.replot.with_suffix(".png")
        draw(result["rows"], result["pareto_front"], plot, result["device"], result["scale"])
        print(f"wrote {plot}")
        return
    device = resolve_device("auto")
    set5 = SHARED_DATA / "sr" / "set5"
    scale = args.scale
    lr_dir = set5 / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir():
        raise SystemExit(f"needs Set5 with its LR_bicubic/X{scale} set: {lr_dir} is missing")
    x = torch.rand(1, 3, round(512 / scale), round(512 / scale), device=device)
    rows, bicubic = [], None
    for name in args.models or default_models(scale):
        loaded = create_model(name)
        if loaded.info.scale != scale:
            raise SystemExit(f"{name}: x{loaded.info.scale}; this chart compares x{scale} models")
        eager = prepare_model(loaded, device, torch.float32, channels_last=False, kernels="torch")
        dtype = resolve_precision("auto", device, loaded.info)
        fast = prepare_model(create_model(name), device, dtype)
        scores = evaluate_sr(eager, set5, lr_dir)
        m32 = mean_metrics([r.model for r in scores])
        m_fast = mean_metrics([r.model for r in evaluate_sr(fast, set5, lr_dir)])
        bicubic = mean_metrics([r.bicubic for r in scores])
        row = {"model": Path(name).stem, "arch": loaded.info.arch, "params": loaded.info.params,
               "flops_per_output_px": round(flops_per_output_pixel(create_model(name).module, scale)),
               "eager_fp32_nchw_ms": median_seconds(lambda r=eager: r(x), device) * 1e3,
               "default_ms": median_seconds(lambda r=fast: r(x), device) * 1e3,
               "default_path": f"channels-last, {str(dtype).removeprefix('torch.')}",
               "set5_psnr_y": round(m32["psnr_y"], 2), "set5_ssim_y": round(m32["ssim_y"], 4),
               "set5_psnr_y_default": round(m_fast["psnr_y"], 2)}
        rows.append(row)
        print(f"{row['model']:<28} {row['params']:>8,} params {row['flops_per_output_px'] / 1e3:7.1f} kFLOP/px  "
              f"eager {row['eager_fp32_nchw_ms']:7.1f} ms  default {row['default_ms']:7.1f} ms  "
              f"Set5 {row['set5_psnr_y']:.2f} / {row['set5_ssim_y']:.4f} (default path {row['set5_psnr_y_default']:.2f})",
              flush=True)
    ms = median_seconds(lambda: F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False), device) * 1e3
    rows.append({"model": "bicubic", "arch": "bicubic", "params": 0, "flops_per_output_px": 0,
                 "eager_fp32_nchw_ms": ms, "default_ms": ms, "default_path": "torch bicubic, fp32",
                 "set5_psnr_y": round(bicubic["psnr_y"], 2), "set5_ssim_y": round(bicubic["ssim_y"], 4),
                 "set5_psnr_y_default": round(bicubic["psnr_y"], 2)})
    front = pareto(rows, "default_ms", "set5_psnr_y_default")
    print("Pareto front (faster and better than every other):", ", ".join(front))
    result = {**environment(device), "output": "512x512", "scale": scale, "pareto_front": front, "rows": rows}
    stem = f"sr_frontier{'' if scale == 4 else f'_x{scale}'}_{device_tag(device)}"
    out = write_result(result, stem, args.out)
    print(f"wrote {out}")
    plot = args.plot or RESULTS / f"{stem}.png"
    draw(rows, front, plot, result["device"], scale)
    print(f"wrote {plot}")


LABELS = {"net_g_BSRN_x4": "BSRN", "team15_SAFMN": "SAFMN", "team18_bsrn": "BSRN-S", "team23_safmnpp": "SAFMN++",
          "team24_smfan": "SMFAN", "team38_span_ch28_slim": "SPAN-28", "team39_spantiny_ch26_slim": "SPAN-tiny",
          "imdn_x4": "IMDN", "rlfn_x4": "RLFN (rlfn_x4, default)", "imdn_x2": "IMDN", "imdn_x3": "IMDN",
          "rlfn_x2": "RLFN x2 (rlfn_x2, default)", "rlfn_x3": "RLFN x3 (rlfn_x3, default)"}


def draw(rows: list[dict], front: list[str], path: Path, device: str, scale: int = 4) -> None:
    """Two panels: every model, and the corner within 1 dB of the best where the efficient nets crowd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.4]})
    corner = max(r["set5_psnr_y_default"] for r in rows) - 1.0 if scale != 4 else 31.5
    pts = sorted((r["default_ms"], r["set5_psnr_y_default"]) for r in rows if r["model"] in front)
    for ax, zoom in zip(axes, (False, True)):
        shown = [r for r in rows if not zoom or r["set5_psnr_y_default"] >= corner]
        for i, r in enumerate(sorted(shown, key=lambda r: r["default_ms"])):
            on = r["model"] in front
            ax.scatter(r["default_ms"], r["set5_psnr_y_default"], s=30 + r["params"] / 6000, alpha=0.8,
                       color="tab:red" if on else "tab:blue", zorder=3)
            ax.annotate(f"{LABELS.get(r['model'], r['model'])} ({r['params'] / 1e3:.0f}K)",
                        (r["default_ms"], r["set5_psnr_y_default"]), textcoords="offset points",
                        xytext=(6, 6 if i % 2 else -11), fontsize=7.5)
        ax.plot(*zip(*[p for p in pts if not zoom or p[1] >= corner]), color="tab:red", linewidth=1,
                label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.set_xlabel("ms per 512x512 output, pixbatch default path (log scale)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"Set5 x{scale} Y-PSNR (dB), at that path's precision")
    axes[0].set_title("all models, bicubic included", fontsize=9)
    axes[1].set_title(f">= {corner:.1f} dB", fontsize=9)
    axes[1].legend(loc="lower right")
    fig.suptitle(f"x{scale} super-resolution: quality per millisecond on {device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
