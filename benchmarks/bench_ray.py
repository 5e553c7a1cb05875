"""The same job in one process and on a local Ray cluster with 1 and 2 CPU model workers.

    python benchmarks/bench_ray.py [--images 24] [--size 256] [--task upscale]
    python benchmarks/bench_ray.py --video 240 [--size 320]    # one H.264 clip (a keyframe every 60 frames)

With --video, the input is one clip of that many frames (SIZE x SIZE*9/16, x264 crf 18, medium), written as
FFV1 so that the frames can be compared (--segment-frames 60): with 2 workers it is split at keyframes into
2 parts, one per worker; "identical" then means the same decoded frames and timestamps as the one-process run's.

Each run is `pixbatch ... --json` in a child process, so wall time includes everything a user waits
for; the pipeline time is pixbatch's own (`seconds` in the summary: for Ray, from the first task to
the last result, after the cluster is up), and the difference is the start-up overhead (for Ray:
starting a local cluster, the workers and their model replicas). The outputs of every run are
compared byte for byte with the one-process run's. Writes JSON to benchmarks/results/ray_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import REPO, environment, write_result
from PIL import Image


def make_folder(folder: Path, n: int, size: int) -> None:
    with Image.open(REPO / "examples" / "astronaut.jpg") as im:  # the repo's own photo, enlarged to crop from
        photo = np.asarray(im.convert("RGB").resize((2 * size, 2 * size), Image.BICUBIC))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        y, x = rng.integers(0, photo.shape[0] - size + 1), rng.integers(0, photo.shape[1] - size + 1)
        Image.fromarray(photo[y:y + size, x:x + size]).save(folder / f"{i:03d}.png")


def tree(root: Path) -> dict[str, bytes]:
    """Every output file's bytes; a video's: the hash of each decoded frame with its pts."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        if p.suffix == ".mkv":
            import av

            with av.open(str(p)) as c:
                out[str(p.relative_to(root))] = hashlib.sha256(b"".join(
                    str(f.pts).encode() + f.to_ndarray(format="rgb24").tobytes()
                    for f in c.decode(c.streams.video[0]))).digest()
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--task", choices=["upscale", "segment"], default="upscale")
    ap.add_argument("--video", type=int, default=0, help="frames of one clip instead of a folder of images")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        if args.video:
            from bench_video import make_clip

            src.mkdir()
            make_clip(src / "clip.mp4", args.video, args.size, args.size * 9 // 16 // 2 * 2, gop=60)
        else:
            make_folder(src, args.images, args.size)
        variants = [("one process", []), ("ray, 1 CPU worker", ["--ray", "local", "--ray-workers", "1"]),
                    ("ray, 2 CPU workers", ["--ray", "local", "--ray-workers", "2"])]
        if args.video:  # as before splitting: the whole video on one worker (parts of 100000+ frames: none)
            variants.append(("ray, 2 CPU workers, not split", ["--ray", "local", "--ray-workers", "2",
                                                                "--segment-frames", "100000"]))
        reference = None
        for name, extra in variants:
            out = Path(tmp) / f"out{len(rows)}"
            cmd = [sys.executable, "-m", "pixbatch", "--json", args.task, str(src), str(out), *extra]
            if args.task == "upscale":
                cmd += ["--scale", "2"]
            if args.video:  # parts of at least 60 frames (--segment-frames, also what a resumed run restarts at)
                cmd += ["--codec", "ffv1", "--segment-frames", "60"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr}")
            summary = json.loads(proc.stdout)
            outputs = tree(out)
            reference = reference or outputs
            if args.video:  # frames, not files, are the units of work
                summary["done"] = args.video
            rows.append({"variant": name, "images": summary["done"], "wall_s": round(wall, 2),
                         "pipeline_s": summary["seconds"], "startup_s": round(wall - summary["seconds"], 2),
                         "images_per_s": round(summary["done"] / summary["seconds"], 3),
                         "images_per_s_wall": round(summary["done"] / wall, 3),
                         "identical_to_one_process": outputs == reference})
            r = rows[-1]
            print(f"{name:<20} {r['images']} images: wall {wall:6.1f} s = pipeline {r['pipeline_s']:6.1f} s + "
                  f"start-up {r['startup_s']:5.1f} s; {r['images_per_s']:.2f} images/s; identical: "
                  f"{r['identical_to_one_process']}", flush=True)
    one, two = rows[1]["images_per_s"], rows[2]["images_per_s"]
    what = (f"one {args.size}px H.264 clip of {args.video} frames (images = frames)" if args.video
            else f"{args.images} {args.size}px images")
    result = {"what": f"pixbatch {args.task} on {what}: one process vs Ray (local cluster) with 1 and 2 CPU model "
                      "workers", **environment(torch.device("cpu")),
              **({"split_over_not_split_2_workers": round(two / rows[3]["images_per_s"], 3)} if args.video else {}),
              "rows": rows, "scaling_2_over_1_workers": round(two / one, 3),
              "ray_1_worker_over_one_process": round(one / rows[0]["images_per_s"], 3)}
    print(f"scaling 2 workers / 1 worker: {two / one:.2f}x; Ray 1 worker / one process: "
          f"{one / rows[0]['images_per_s']:.2f}x")
    path = write_result(result, "ray_video_cpu" if args.video else "ray_cpu", args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
