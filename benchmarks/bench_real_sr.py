"""Upscaling real photos: a realistic test set made here, and every model's Y-PSNR/SSIM on it.

    python benchmarks/bench_real_sr.py [--scale 4|2] [--set DIR] [--crop FILE] [--out FILE]

The set: the 20 Sun-Hays photos that training held out (benchmarks/holdout_sun_hays80.txt), Set5 and the
style content photo (../shared/data/style/content/amber.jpg), each cropped to a multiple of 4 and degraded
once, from a seed of its own, like a camera or the web would, by a chain that is not the training one and
reaches beyond its ranges:
  blur       Gaussian, isotropic (half the images) or anisotropic at any angle, σ 0.5-3.5 px each axis
             (training: 0.2-3 in its first round)
  resize     to 1/scale with antialiased bicubic (training never antialiases)
  noise      shot noise (Poisson, σ at white 2-30 levels) and read noise (Gaussian, σ 1-12), both, in
             colour (training adds one kind per round; together up to σ 32 against 30)
  JPEG       quality 25-90, 4:2:0 (training: 30-95)
It is written as DIR/HR and DIR/LR_x{scale} (PNG), so `pixbatch eval sr --hr DIR/HR --lr-images
DIR/LR_x4 --model real_x4 --denoise 0.5` measures the same. Models, through `pixbatch eval sr`'s own
evaluation (fp32, Y-PSNR with scale px shaved): bicubic, the default of the scale, the real-photo model at
denoise 0, 0.5 and 1, and Real-ESRGAN's anime video model at x4 when ../shared/data has it. Also the model
time of the default and of the real-photo model (eager fp32, 256x256 input), measured alternately in this
run, and a side-by-side crop (--crop). Writes benchmarks/results/real_sr_x{scale}.json.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import COMPACT, REPO, SHARED_DATA, environment, write_result
from PIL import Image

HOLDOUT = REPO / "benchmarks" / "holdout_sun_hays80.txt"


def sources() -> list[Path]:
    from pixbatch.io.discover import read_names

    names = read_names(HOLDOUT)
    return ([SHARED_DATA / "sr" / "train" / "sun_hays80" / n for n in names]
            + sorted((SHARED_DATA / "sr" / "set5").glob("*.png")) + [SHARED_DATA / "style" / "content" / "amber.jpg"])


def camera_degrade(hr: np.ndarray, scale: int, seed: int) -> tuple[np.ndarray, dict]:
    """The 8-bit LR of an 8-bit HR image (HWC) by the test set's chain, and the parameters drawn."""
    from pixbatch.train.degradations import (
        add_gaussian_noise,
        add_poisson_noise,
        filter2d,
        gaussian_kernel,
        jpeg,
    )

    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    sx = rng.uniform(0.5, 3.5)
    sy, theta = (rng.uniform(0.5, 3.5), rng.uniform(0, math.pi)) if rng.random() < 0.5 else (sx, 0.0)
    p = {"blur_sigma": (round(sx, 2), round(sy, 2)), "shot_sigma": round(rng.uniform(2, 30), 1),
         "read_sigma": round(rng.uniform(1, 12), 1), "jpeg": rng.randint(25, 90)}
    x = torch.from_numpy(hr).permute(2, 0, 1).float().div_(255)
    x = filter2d(x, gaussian_kernel(2 * math.ceil(3 * max(sx, sy)) + 1, sx, sy, theta))
    size = (hr.shape[0] // scale, hr.shape[1] // scale)
    x = torch.nn.functional.interpolate(x[None], size=size, mode="bicubic", antialias=True)[0].clamp_(0, 1)
    x = add_gaussian_noise(add_poisson_noise(x, p["shot_sigma"], False, gen), p["read_sigma"], False, gen)
    x = jpeg(x, p["jpeg"])
    return x.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy(), p


def make_set(folder: Path, scale: int) -> list[dict]:
    from pixbatch.io.decode import decode_rgb8

    (folder / "HR").mkdir(parents=True, exist_ok=True)
    (folder / f"LR_x{scale}").mkdir(exist_ok=True)
    drawn = []
    for i, path in enumerate(sources()):
        hr = decode_rgb8(path)
        hr = hr[: hr.shape[0] // 4 * 4, : hr.shape[1] // 4 * 4]
        lr, params = camera_degrade(hr, scale, 1000 * scale + i)
        Image.fromarray(hr).save(folder / "HR" / f"{path.stem}.png")
        Image.fromarray(lr).save(folder / f"LR_x{scale}" / f"{path.stem}.png")
        drawn.append({"image": path.stem, **params})
    return drawn


def evaluate(name: str, folder: Path, scale: int, denoise: float | None = None) -> dict:
    from pixbatch.cli.session import load_runner
    from pixbatch.eval.sr import evaluate_sr, mean_metrics
    from pixbatch.runtime.spec import ComputeSpec, ModelSpec

    runner = load_runner(ModelSpec(name, scale, task="sr", denoise=denoise),
                         ComputeSpec(device="cpu", precision="fp32", backend="torch"), n_jobs=0)
    rows = evaluate_sr(runner, folder / "HR", folder / f"LR_x{scale}")
    return {"model": mean_metrics([r.model for r in rows]), "bicubic": mean_metrics([r.bicubic for r in rows]),
            "images": {r.name: round(r.model["psnr_y"], 3) for r in rows}}


def model_ms(names: list[tuple[str, float | None]], scale: int, rounds: int = 5) -> dict[str, float]:
    """Eager fp32 ms per 256x256 input of each model, timed in alternation (median)."""
    from pixbatch.models import create_model

    nets = {f"{n}" + ("" if d is None else f"@{d}"): create_model(n, denoise=d).module.eval() for n, d in names}
    x, times = torch.rand(1, 3, 256, 256), {k: [] for k in nets}
    with torch.inference_mode():
        for net in nets.values():
            net(x)
        for _ in range(rounds):
            for k, net in nets.items():
                t = time.perf_counter()
                net(x)
                times[k].append(1000 * (time.perf_counter() - t))
    return {k: round(float(np.median(v)), 1) for k, v in times.items()}


def side_by_side(folder: Path, scale: int, image: str, box: tuple[int, int, int], out: Path) -> None:
    """LR (nearest), bicubic, the default model, real at denoise 0, 0.5, 1 and HR of one crop (HR px)."""
    from PIL import ImageDraw

    from pixbatch.models import create_model
    from pixbatch.ops.imresize import imresize_uint8
    from pixbatch.tasks.defaults import UPSCALE

    y, x, size = box
    hr = np.asarray(Image.open(folder / "HR" / f"{image}.png"))
    lr = np.asarray(Image.open(folder / f"LR_x{scale}" / f"{image}.png"))
    t = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float().div(255)
    panels = [("input (nearest)", lr.repeat(scale, 0).repeat(scale, 1)), ("bicubic", imresize_uint8(lr, scale))]
    for label, name, d in ((UPSCALE.models[scale], UPSCALE.models[scale], None), (f"real_x{scale} denoise 0", f"real_x{scale}", 0.0),
                           ("denoise 0.5", f"real_x{scale}", 0.5), ("denoise 1", f"real_x{scale}", 1.0)):
        with torch.inference_mode():
            out_t = create_model(name, denoise=d).module.eval()(t)
        panels.append((label, out_t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()))
    panels.append(("original", hr))
    tiles = []
    for label, img in panels:
        tile = Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size])).resize((2 * size, 2 * size), Image.NEAREST)
        ImageDraw.Draw(tile).text((6, 4), label, fill=(255, 255, 0))
        tiles.append(tile)
    sheet = Image.new("RGB", (len(tiles) * 2 * size + (len(tiles) - 1) * 4, 2 * size), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * (2 * size + 4), 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, choices=(2, 4), default=4)
    ap.add_argument("--set", type=Path, default=Path("/tmp/pixbatch_real_sr"), help="where the test set is written")
    ap.add_argument("--crop", type=Path, default=None, help="write the side-by-side crop here (PNG)")
    ap.add_argument("--crop-box", default="amber:160:770:160", help="IMAGE:Y:X:SIZE in HR px")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    from pixbatch.tasks.defaults import UPSCALE

    s, default = args.scale, UPSCALE.models[args.scale]
    drawn = make_set(args.set / f"x{s}", s)
    folder = args.set / f"x{s}"
    rows = {default: evaluate(default, folder, s)}
    for d in (0.0, 0.5, 1.0):
        rows[f"real_x{s} denoise {d:g}"] = evaluate(f"real_x{s}", folder, s, d)
    if s == 4 and COMPACT.is_file():
        rows[COMPACT.name] = evaluate(str(COMPACT), folder, s)
    bicubic = next(iter(rows.values()))["bicubic"]
    print(f"x{s}, {len(drawn)} images ({folder}); Y-PSNR / SSIM, fp32")
    print(f"{'bicubic':<28} {bicubic['psnr_y']:7.3f} {bicubic['ssim_y']:.4f}")
    for name, r in rows.items():
        m = r["model"]
        print(f"{name:<28} {m['psnr_y']:7.3f} {m['ssim_y']:.4f}   {m['psnr_y'] - bicubic['psnr_y']:+.3f} dB over bicubic")
    ms = model_ms([(default, None), (f"real_x{s}", 0.5)], s)
    print("eager fp32 ms per 256x256 input:", ms)
    result = {"environment": environment(torch.device("cpu")), "scale": s, "degradations": drawn,
              "bicubic": bicubic, "models": {k: {"mean": v["model"], "images": v["images"]} for k, v in rows.items()},
              "ms_per_256px_input_eager_fp32": ms}
    print("wrote", write_result(result, f"real_sr_x{s}", args.out))
    if args.crop:
        image, y, x, size = args.crop_box.split(":")
        side_by_side(folder, s, image, (int(y), int(x), int(size)), args.crop)
        print("wrote", args.crop)


if __name__ == "__main__":
    main()
