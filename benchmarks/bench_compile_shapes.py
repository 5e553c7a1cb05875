"""Compiled runs on images of many sizes: graphs compiled and wall time, per-size vs 64-px size buckets.

    python benchmarks/bench_compile_shapes.py [--model edsr_tiny_x2] [--images 12] [--device auto]

The same images (distinct sizes between 96 and 232 px) go through a torch.compile'd runner twice, each
in a fresh process: once with every image size compiled as is (bucket 1) and once with pixbatch's
default (sizes padded up to multiples of COMPILE_BUCKET). Reports the distinct input shapes, the graphs dynamo
compiled (past its recompile limit, further shapes silently run eager), and the wall time (compilation
included, as a user pays it). JSON in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import environment, write_result


def child(model: str, images: int, bucket: int, device: str) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from pixbatch.models import create_model
    from pixbatch.runtime import backends, prepare
    from pixbatch.runtime.device import resolve_device, resolve_precision
    from pixbatch.tasks.upscale import upscale_tensor

    backends.TorchCompiled.size_bucket = bucket
    dev = resolve_device(device)
    loaded = create_model(model)
    runner = prepare.prepare_model(loaded, dev, resolve_precision("auto", dev, loaded.info), compile=True)
    gen = torch.Generator().manual_seed(0)
    sizes = [(96 + 12 * i, 232 - 11 * i) for i in range(images)]
    t = time.perf_counter()
    for h, w in sizes:
        upscale_tensor(runner, torch.rand(1, 3, h, w, generator=gen))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    m = math.lcm(loaded.info.size_multiple, bucket)
    shapes = {(-(-h // m) * m, -(-w // m) * m) for h, w in sizes}
    graphs = int(counters["stats"]["unique_graphs"])
    limit = getattr(torch._dynamo.config, "recompile_limit", getattr(torch._dynamo.config, "cache_size_limit", None))
    return {"bucket": bucket, "sizes": sizes, "seconds": seconds, "distinct_shapes": len(shapes),
            "graphs_compiled": graphs, "recompile_limit": limit,
            "shapes_run_uncompiled": max(0, len(shapes) - graphs),  # past dynamo's limit: eager fallback
            "device": str(dev), "precision": str(runner.dtype).removeprefix("torch."), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="edsr_tiny_x2")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.model, args.images, args.child, args.device)))
        return
    from pixbatch.runtime.backends import COMPILE_BUCKET

    rows = []
    for bucket in (1, COMPILE_BUCKET):
        with tempfile.TemporaryDirectory() as cache:  # a cold compile cache, as on a user's first run
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            done = subprocess.run([sys.executable, __file__, "--child", str(bucket), "--model", args.model,
                                   "--images", str(args.images), "--device", args.device],
                                  capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"bucket {bucket:>3}: {r['distinct_shapes']:>3} input shapes, {r['graphs_compiled']:>3} graphs compiled "
              f"(dynamo's limit: {r['recompile_limit']}; {r['shapes_run_uncompiled']} shapes fell back to eager), "
              f"{r['seconds']:7.1f} s for {args.images} images")
    print(f"time with buckets / per size: {rows[1]['seconds'] / rows[0]['seconds']:.2f}")
    import torch

    dev = torch.device(rows[0]["device"])
    out = write_result({**environment(dev), "model": args.model, "rows": rows}, f"compile_shapes_{dev.type}", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
