"""Time per 512x512 output of the shipped SR models (and published ones, for scale), next to quality.

    python benchmarks/bench_sr_models.py [MODEL ...] [--out FILE]

For each model: milliseconds to produce one 512x512 output (input 512/scale) in eager fp32 NCHW and in
pixbatch's default fast path for this device (channels-last, auto precision), measured with
torch.utils.benchmark in the same run, plus Set5 Y-PSNR from `pixbatch eval sr` when the data is there.
Writes benchmarks/results/sr_models_<device>.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from benchlib import SHARED_DATA, environment, median_seconds, write_result


def main() -> None:
    import argparse

    from pixbatch.eval.sr import evaluate_sr, mean_metrics
    from pixbatch.models import create_model
    from pixbatch.runtime.device import resolve_device, resolve_precision
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.defaults import UPSCALE

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="models or checkpoints (default: shipped + published ones)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = resolve_device("auto")
    names = args.models or list(UPSCALE.models.values()) + [
        str(q) for q in (SHARED_DATA / "weights" / "imdn_x4.pth", SHARED_DATA / "weights" / "realesr-animevideov3.pth") if q.is_file()]
    rows = []
    for name in names:
        loaded = create_model(name)
        s = loaded.info.scale
        x = torch.rand(1, 3, round(512 / s), round(512 / s), device=device)
        eager = prepare_model(loaded, device, torch.float32, channels_last=False, kernels="torch")
        fast_dtype = resolve_precision("auto", device, loaded.info)
        fast = prepare_model(create_model(name), device, fast_dtype)
        row = {"model": Path(name).stem, "scale": s, "params": loaded.info.params,
               "eager_fp32_nchw_ms": median_seconds(lambda r=eager, x=x: r(x), device) * 1e3,
               "fast_path_ms": median_seconds(lambda r=fast, x=x: r(x), device) * 1e3,
               "fast_path": f"channels-last, {str(fast_dtype).removeprefix('torch.')}, kernels={fast.kernels}"}
        if (SHARED_DATA / "sr" / "set5").is_dir() and "realesr" not in name:  # the GAN model has no PSNR to report
            m = mean_metrics([r.model for r in evaluate_sr(eager, SHARED_DATA / "sr" / "set5")])
            row.update(set5_psnr_y=round(m["psnr_y"], 2), set5_ssim_y=round(m["ssim_y"], 4))
        rows.append(row)
        print(f"{row['model']:<22} x{s} {row['params']:>9,} params  eager {row['eager_fp32_nchw_ms']:8.1f} ms  "
              f"fast {row['fast_path_ms']:8.1f} ms ({row['fast_path']})  Set5 {row.get('set5_psnr_y', '-')}")
    out = write_result({**environment(device), "output": "512x512", "rows": rows}, f"sr_models_{device.type}", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
