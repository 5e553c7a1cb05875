"""Style nets on this machine: eager fp32 NCHW (the baseline), the default path of `pixbatch
stylize` (bf16 autocast where the CPU computes it natively, channels-last) and the sub-pixel rewrite
of the nets' upsample -> conv layers, model only and end to end, all measured in the same run.

    python benchmarks/bench_stylize.py [--sizes 256,512] [--images 8] [--device auto]

Nets: Engstrom's udnie (../shared/data; transposed convs, so no rewrite applies), the PyTorch example's
TransformerNet and the MobileNetV2-bottleneck net (random weights: speed does not depend on them).
For each: output MP/s per variant, the ratio to the baseline, and the max abs difference of the output
against the baseline's ([0, 1] scale). End to end: `StylizeTask` through the engine over a folder of
photos (decode, run, encode and write included) with the same variants. Writes JSON to
benchmarks/results/stylize_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import SHARED_DATA, environment, median_seconds, write_result
from PIL import Image

CONTENT = SHARED_DATA / "style" / "content" / "amber.jpg"


def set_subpixel(module, on: bool) -> int:
    """Turn the sub-pixel form of every upsample -> conv layer on or off; how many there are."""
    n = 0
    for m in module.modules():
        if hasattr(m, "subpixel") and getattr(m, "upsample", False):
            m.subpixel = on
            n += 1
    return n


def variants(device):
    import torch

    from pixbatch.runtime.device import resolve_precision

    return [  # name, dtype (None: pixbatch's default), channels-last, sub-pixel rewrite
        ("eager fp32 NCHW", torch.float32, False, False),
        ("fp32 NCHW + sub-pixel", torch.float32, False, True),
        ("default, no sub-pixel", None, True, False),
        ("default (pixbatch stylize)", None, True, True),
    ], resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--images", type=int, default=8, help="photos in the end-to-end folder (512 x 512 each)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from pixbatch.io.discover import plan_jobs
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.models import LoadedModel, build_registered, create_model
    from pixbatch.models.info import describe_native
    from pixbatch.runtime.device import resolve_device
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.stylize import StylizeTask

    device = resolve_device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    table, resolve_precision = variants(device)

    def loaded_nets():
        udnie = SHARED_DATA / "style_weights" / "ml5_lengstrom" / "udnie"
        if udnie.is_dir():
            yield "engstrom udnie", create_model(udnie)
        for name in ("johnson_style", "mobilenet_style"):
            torch.manual_seed(0)
            module = build_registered(name).eval()
            yield name, LoadedModel(module, describe_native(name, module, source="untrained"))

    photo = np.asarray(Image.open(CONTENT).convert("RGB")) if CONTENT.is_file() else None
    rows, e2e = [], []
    for label, loaded in loaded_nets():
        runners = {}
        for name, dtype, cl, sub in table:
            dt = dtype or resolve_precision("auto", device, loaded.info)
            own = LoadedModel(copy.deepcopy(loaded.module), loaded.info)  # layouts are changed in place
            runner = prepare_model(own, device, dt, channels_last=cl, kernels="torch")
            runners[name] = (runner, sub)
        n_sub = set_subpixel(loaded.module, True)
        for size in sizes:
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(1, 3, size, size, generator=gen, device=device)
            if photo is not None:
                crop = photo[:size, :size] if min(photo.shape[:2]) >= size else np.resize(photo, (size, size, 3))
                x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().div(255).to(device)
            base = None
            for name, (runner, sub) in runners.items():
                if sub and not n_sub:
                    continue
                set_subpixel(runner.module, sub)
                y = runner(x)
                s = median_seconds(lambda r=runner, x=x: r(x), device, args.min_time)
                mp = size * size / 1e6 / s
                if base is None:
                    base = (mp, y)
                err = float((y - base[1]).abs().max())
                rows.append({"net": label, "size": size, "variant": name, "dtype": str(runner.dtype)[6:],
                             "channels_last": runner.channels_last, "subpixel": sub, "mp_per_s": round(mp, 3),
                             "ratio": round(mp / base[0], 2), "max_abs_diff_vs_baseline": err})
                print(f"{label:<16} {size:>4}px  {name:<28} {mp:7.3f} MP/s  {mp / base[0]:5.2f}x  "
                      f"max|diff| {err:.2e}", flush=True)
        # end to end: a folder of photos through the engine (decode, run, encode, write)
        if photo is None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in"
            src.mkdir()
            rng = np.random.default_rng(0)
            for i in range(args.images):
                y0, x0 = rng.integers(0, photo.shape[0] - 512), rng.integers(0, photo.shape[1] - 512)
                Image.fromarray(photo[y0:y0 + 512, x0:x0 + 512]).save(src / f"{i}.jpg", quality=92)
            for name, (runner, sub) in runners.items():
                if sub and not n_sub:
                    continue
                set_subpixel(runner.module, sub)
                out = Path(tmp) / f"out-{len(e2e)}"
                plan = plan_jobs([src], out, overwrite=True)
                opts = JobSpec(windowing=StylizeTask.windowing(), encode=EncodeOptions(overwrite=True))
                t0 = time.perf_counter()
                report = run_job(StylizeTask(runner), plan, opts, log=lambda m: None)
                secs = time.perf_counter() - t0
                mp = args.images * 512 * 512 / 1e6 / secs
                e2e.append({"net": label, "variant": name, "images": args.images, "done": report.done,
                            "seconds": round(secs, 2), "mp_per_s": round(mp, 3)})
                print(f"{label:<16} end to end {args.images} x 512px  {name:<28} {mp:7.3f} MP/s "
                      f"({report.done} done)", flush=True)
    result = {"what": "style nets: model only and end to end, eager fp32 NCHW vs pixbatch's default vs the "
                      "sub-pixel rewrite of upsample -> conv", **environment(device), "model_only": rows,
              "end_to_end": e2e}
    out = write_result(result, f"stylize_{'cuda' if device.type == 'cuda' else 'cpu'}", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
