"""One huge tiled TIFF through a task with bounded memory: wall time, throughput and peak RSS of the CLI.

    python benchmarks/bench_huge.py --task upscale --size 10000 [--scale 2] [--tile 0] [--overlap auto]
    python benchmarks/bench_huge.py --task segment --size 20000 [--model unet_drive] [--tile 896] [--overlap 64]
    python benchmarks/bench_huge.py --task stylize --size 10000 [--model STYLE] [--tile 0]

The input is a mosaic of real photos (DRIVE fundus images from ../shared/data when present, else the
repo's examples/), written tile by tile as a tiled BigTIFF (so making it needs little memory too).
`pixbatch upscale`, `segment` or `stylize` runs in a child process (stylize: Engstrom's udnie net from
../shared/data unless --model; its windows first measure the whole image's instance-norm statistics); its peak resident memory comes from the kernel
(getrusage of the child), next to the size of the image decoded whole, for scale. Prints a table and
writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import REPO, SHARED_DATA, environment, write_result
from PIL import Image

SOURCES = [SHARED_DATA / "seg" / "drive" / "test" / "images", REPO / "examples"]


def make_mosaic(path: Path, size: int) -> str:
    """A size x size RGB tiled BigTIFF made of real images, written band by band."""
    from pixbatch.io.regions import TiledTiffWriter

    folder = next(d for d in SOURCES if d.is_dir())
    pieces = []
    for p in sorted(folder.iterdir())[:8]:
        if p.suffix.lower() in {".tif", ".png", ".jpg"}:
            with Image.open(p) as im:
                pieces.append(np.asarray(im.convert("RGB").resize((512, 512))))
    writer = TiledTiffWriter(path, size, size, 3, np.uint8, photometric="rgb", compression="zlib")
    band_h = 512
    for y in range(0, size, band_h):
        h = min(band_h, size - y)
        row = np.concatenate([pieces[(y // band_h + i) % len(pieces)] for i in range(-(-size // 512))], axis=1)
        writer.push(row[:h, :size])
    writer.close()
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["upscale", "segment", "stylize"], default="segment")
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--model", default=None, help="default: unet_drive (segment), the built-in model of --scale (upscale)")
    ap.add_argument("--scale", type=int, default=2, help="upscale only")
    ap.add_argument("--tile", type=int, default=None, help="default: the command's own")
    ap.add_argument("--overlap", type=int, default=None, help="default: the command's own")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default: benchmarks/results/<task>_huge_<size>_<device>.json)")
    args = ap.parse_args()

    import torch

    with tempfile.TemporaryDirectory(dir=os.environ.get("PIXBATCH_BENCH_TMP")) as tmp:
        src = Path(tmp) / "huge.tif"
        t0 = time.perf_counter()
        made_from = make_mosaic(src, args.size)
        make_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "pixbatch", "--json", "--device", args.device, args.task, str(src),
               str(Path(tmp) / "out")]
        if args.task == "stylize":
            cmd += ["--style", args.model or str(SHARED_DATA / "style_weights" / "ml5_lengstrom" / "udnie")]
        elif args.model:
            cmd += ["--model", args.model]
        elif args.task == "segment":
            cmd += ["--model", "unet_drive"]
        if args.task == "upscale" and not args.model:
            cmd += ["--scale", str(args.scale)]
        for flag, value in (("--tile", args.tile), ("--overlap", args.overlap)):
            if value is not None:
                cmd += [flag, str(value)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"pixbatch failed ({proc.returncode}):\n{proc.stderr}")
        peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
        summary = json.loads(proc.stdout)
        out_file = Path(tmp) / "out" / "huge.tif"
        import tifffile

        with tifffile.TiffFile(out_file) as tf:
            page = tf.pages[0]
            output_info = {"shape": list(page.shape), "tiled": bool(page.is_tiled), "bigtiff": tf.is_bigtiff,
                           "bytes": out_file.stat().st_size}
        input_bytes = src.stat().st_size

    mp = args.size * args.size / 1e6
    settings = summary["settings"]
    device = settings["device"]
    result = {
        "what": f"pixbatch {args.task} on one tiled BigTIFF, streamed region by region",
        "command": " ".join(["pixbatch", *cmd[3:]]).replace(tmp, "$TMP"),
        "size": [args.size, args.size], "megapixels": mp, "model": settings["model"], "scale": settings["scale"],
        "tile": settings["tile"], "overlap": settings["overlap"], "blend": settings["blend"],
        "precision": settings["precision"],
        **environment(torch.device(device)), "made_from": made_from, "make_input_s": round(make_s, 1),
        "input_file_bytes": input_bytes, "wall_s": round(wall, 1), "pipeline_s": summary["seconds"],
        "input_mp_per_s": round(mp / summary["seconds"], 3),
        "output_mp_per_s": round(mp * settings["scale"] ** 2 / summary["seconds"], 3), "peak_rss_bytes": peak_rss,
        "peak_rss_gib": round(peak_rss / 2**30, 3),
        "input_decoded_whole_gib": round(args.size * args.size * 3 / 2**30, 2),
        "output_decoded_whole_gib": round(args.size * args.size * 3 * settings["scale"] ** 2 / 2**30, 2),
        "output": output_info,
    }
    print(f"{args.task} {args.size}x{args.size} ({mp:.0f} MP) with {settings['model']} x{settings['scale']}, "
          f"tile {settings['tile']}, overlap {settings['overlap']}, {result['precision']} on {device}")
    print(f"  wall {wall:.1f} s (pipeline {summary['seconds']:.1f} s) = {result['input_mp_per_s']:.2f} MP/s in, "
          f"{result['output_mp_per_s']:.2f} MP/s out")
    print(f"  peak RSS {result['peak_rss_gib']:.2f} GiB (decoded whole, the input alone is "
          f"{result['input_decoded_whole_gib']:.2f} GiB and the output {result['output_decoded_whole_gib']:.2f} GiB)")
    print(f"  output: {output_info}")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    out = write_result(result, f"{args.task}_huge_{args.size}_{kind}", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
