"""Pillow vs pillow-simd on the image stages pixbatch uses: decode, resize, RGB conversion, encode.

    python benchmarks/bench_pillow.py [--photos DIR] [--out FILE]

Run it once in an environment with Pillow and once in one with pillow-simd (which replaces the `PIL`
package; see the README's "pillow-simd" section), then compare the two JSON files:

    python benchmarks/bench_pillow.py --compare benchmarks/results/pillow_cpu.json benchmarks/results/pillow-simd_cpu.json

Needs only Pillow and numpy (no torch), so the pillow-simd environment stays small. Photos: the SR
training photos of ../shared/data (or the repo's examples/), centre-cropped to 1024 px for encode and
256 px for decode, as the upscale benchmark's inputs and outputs are.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from pathlib import Path

from benchlib import REPO, SHARED_DATA, write_result

PHOTOS = [SHARED_DATA / "sr" / "train" / "sun_hays80", REPO / "examples"]


def timed(fn, min_time: float = 0.5) -> float:
    """Median seconds per call over at least ``min_time`` seconds of calls, after one warm-up call
    (a plain timer: this script must run without torch, in a pillow-simd environment too)."""
    fn()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("PILLOW_JSON", "SIMD_JSON"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)

    import PIL
    from PIL import Image

    folder = args.photos or next(d for d in PHOTOS if d.is_dir())
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[: args.count]
    big, small = [], []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
        k = 1024 / min(im.size)
        im = im.resize((max(1024, round(im.width * k)), max(1024, round(im.height * k))), Image.BICUBIC)
        big.append(im.crop((0, 0, 1024, 1024)))
        small.append(big[-1].resize((256, 256), Image.BICUBIC))

    def encoded(images, fmt, **kw):
        out = []
        for im in images:
            buf = io.BytesIO()
            im.save(buf, fmt, **kw)
            out.append(buf.getvalue())
        return out

    jpeg_small, png_small = encoded(small, "JPEG", quality=92), encoded(small, "PNG")
    n = len(big)
    ops = {
        "decode JPEG 256px": lambda: [Image.open(io.BytesIO(b)).load() for b in jpeg_small],
        "decode PNG 256px": lambda: [Image.open(io.BytesIO(b)).load() for b in png_small],
        "resize 1024->256 bicubic": lambda: [im.resize((256, 256), Image.BICUBIC) for im in big],
        "resize 256->1024 lanczos": lambda: [im.resize((1024, 1024), Image.LANCZOS) for im in small],
        "convert RGB->L 1024px": lambda: [im.convert("L") for im in big],
        "encode PNG level 1 1024px": lambda: encoded(big, "PNG", compress_level=1),
        "encode PNG level 6 1024px": lambda: encoded(big, "PNG", compress_level=6),
        "encode JPEG q95 1024px": lambda: encoded(big, "JPEG", quality=95),
    }
    simd = "simd" in getattr(PIL, "__version__", "") or "post" in getattr(PIL, "__version__", "")
    rows = {}
    for name, fn in ops.items():
        s = timed(fn)
        rows[name] = {"ms_per_image": 1000 * s / n}
        print(f"{name:<28} {1000 * s / n:8.2f} ms/image")
    result = {"pillow": PIL.__version__, "simd_build": simd, "python": platform.python_version(),
              "machine": platform.machine(), "photos": str(folder), "images": n, "ops": rows}
    tag = "pillow-simd" if simd else "pillow"
    out = write_result(result, f"{tag}_cpu", args.out)
    print(f"Pillow {PIL.__version__}: wrote {out}")


def compare(a_path: Path, b_path: Path) -> None:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    print(f"{'operation':<28} {'Pillow ' + a['pillow']:>16} {'pillow-simd ' + b['pillow']:>20} {'speed-up':>9}")
    for name, row in a["ops"].items():
        other = b["ops"].get(name)
        if other:
            print(f"{name:<28} {row['ms_per_image']:13.2f} ms {other['ms_per_image']:17.2f} ms "
                  f"{row['ms_per_image'] / other['ms_per_image']:8.2f}x")


if __name__ == "__main__":
    sys.exit(main())
