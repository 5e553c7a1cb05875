"""End-to-end throughput of `pixbatch upscale` next to a plain eager PyTorch loop, stage by stage, same run.

    python benchmarks/bench_pipeline.py [--model edsr_tiny_x4] [--images 24] [--size 256] [--device auto]

The input folder is cut from real photos (../shared/data/sr/train/sun_hays80, or the repo's examples/),
--size px crops saved half as JPEG, half as PNG. Measured (pixbatch.bench.pipeline, also `pixbatch bench`):
  * each stage alone: decode (worker processes), host->device and device->host copies (GPU), compute (the
    prepared model with the pipeline's batching), encode (writer threads) -> the bottleneck stage;
  * the pipeline as `pixbatch upscale` runs it -> efficiency = its rate / the bottleneck's capacity;
  * a plain eager loop: PIL open -> tensor -> model (fp32 NCHW) -> PIL save, one image at a time.
Model-only variants (channels-last, AMP, compile, fused kernels) are benchmarks/bench_models.py's.
Prints a table and writes JSON to benchmarks/results/pipeline_<device>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import REPO, SHARED_DATA, write_result

PHOTOS = [SHARED_DATA / "sr" / "train" / "sun_hays80", REPO / "examples"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="edsr_tiny_x4")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from pixbatch.bench.pipeline import bench_upscale, format_report
    from pixbatch.runtime.spec import ComputeSpec

    photos = next([d] for d in PHOTOS if d.is_dir())
    result = bench_upscale(args.model, photos, images=args.images, size=args.size,
                           compute=ComputeSpec(device=args.device),
                           log=lambda m: print(m, file=sys.stderr))
    result["photos"] = str(photos[0])
    print("\n".join(format_report(result)))
    tag = "cpu" if result["device_type"] == "cpu" else "cuda_" + result["device"].split()[-1].lower()
    out = write_result(result, f"pipeline_{tag}", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
