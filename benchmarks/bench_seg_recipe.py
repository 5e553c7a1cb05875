"""What a multi-class segmentation user should expect per CPU hour: a synthetic 4-class task with a
void label, trained with the README's recipe for a fixed number of steps, then `pixbatch eval seg`.

    python benchmarks/bench_seg_recipe.py [--steps 300] [--size 256]

THE TASK IS SYNTHETIC, made from DRIVE (../shared/data/seg/drive): each fundus photo (shrunk to 292
px) keeps its real vessels as class 1 and background as class 0; bright discs (class 2) and dark
squares (class 3) of random sizes are painted in at random places; outside the field of view is the
void label 255. Train: the 20 DRIVE training photos (4 held out for validation); test: the 20 DRIVE
test photos with their own shapes. Runs `pixbatch train seg` and `pixbatch eval seg` in child processes
and writes JSON (time, steps, per-class IoU, mIoU) to benchmarks/results/seg_recipe_cpu.json.
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
from benchlib import SHARED_DATA, environment, write_result
from PIL import Image, ImageDraw

DRIVE = SHARED_DATA / "seg" / "drive"
SIDE = 292
NAMES = ["background", "vessel", "disc", "square"]


def synthesise(split: str, out: Path, seed: int) -> tuple[Path, Path]:
    images, masks = out / split / "images", out / split / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for path in sorted((DRIVE / split / "images").iterdir()):
        num = path.name.split("_")[0]
        photo = Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC)
        vessels = Image.open(next((DRIVE / split / "masks").glob(f"{num}_*"))).convert("L").resize((SIDE, SIDE))
        fov = Image.open(next((DRIVE / split / "fov").glob(f"{num}_*"))).convert("L").resize((SIDE, SIDE))
        mask = np.where(np.asarray(vessels) > 127, 1, 0).astype(np.uint8)
        draw = ImageDraw.Draw(photo)
        label = Image.fromarray(mask)
        ldraw = ImageDraw.Draw(label)
        for _ in range(int(rng.integers(1, 4))):  # bright discs
            r = int(rng.integers(8, 24))
            x, y = (int(v) for v in rng.integers(60, SIDE - 60, 2))
            shade = tuple(int(v) for v in rng.integers(200, 256, 3))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=shade)
            ldraw.ellipse([x - r, y - r, x + r, y + r], fill=2)
        for _ in range(int(rng.integers(1, 4))):  # dark squares
            s = int(rng.integers(10, 28))
            x, y = (int(v) for v in rng.integers(60, SIDE - 60, 2))
            shade = tuple(int(v) for v in rng.integers(0, 50, 3))
            draw.rectangle([x, y, x + s, y + s], fill=shade)
            ldraw.rectangle([x, y, x + s, y + s], fill=3)
        m = np.asarray(label).copy()
        m[np.asarray(fov) < 128] = 255  # void outside the field of view
        photo.save(images / f"{num}.png")
        Image.fromarray(m).save(masks / f"{num}.png")
    return images, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if not DRIVE.is_dir():
        sys.exit(f"needs DRIVE at {DRIVE}")

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_images, train_masks = synthesise("train", root, seed=0)
        test_images, test_masks = synthesise("test", root, seed=1)
        model = root / "multiclass.safetensors"
        train = ["train", "seg", "--images", str(train_images), "--masks", str(train_masks), "--arch", "unet_small",
                 "--classes", "4", "--ignore-index", "255", "--loss", "ce", "--class-weights", "auto",
                 "--class-names", ",".join(NAMES), "--size", str(args.size), "--steps", str(args.steps),
                 "--batch-size", str(args.batch_size), "--val-every", str(max(1, args.steps // 6)),
                 "--out", str(model)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pixbatch", *train], capture_output=True, text=True)
        train_s = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        print(proc.stdout.strip(), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pixbatch", "--json", "eval", "seg", "--model", str(model),
                               "--images", str(test_images), "--masks", str(test_masks)], capture_output=True, text=True)
        eval_s = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        summary = json.loads(proc.stdout)
        table = subprocess.run([sys.executable, "-m", "pixbatch", "eval", "seg", "--model", str(model), "--images",
                                str(test_images), "--masks", str(test_masks)], capture_output=True, text=True).stdout
    pooled = summary["pooled"]
    print(table.split("\n\n", 1)[-1].strip())
    result = {"what": "SYNTHETIC 4-class task made from DRIVE (vessels, painted discs and squares, void outside "
                      "the field of view): `pixbatch train seg` with the README's recipe, then `pixbatch eval seg` "
                      "on the 20 DRIVE test photos", **environment(torch.device("cpu")),
              "command": "pixbatch " + " ".join(train[:2] + [a for a in train[2:] if not a.startswith("/")]),
              "steps": args.steps, "size": args.size, "batch_size": args.batch_size,
              "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
              "class_names": NAMES, "iou": pooled["iou"], "miou": pooled["miou"],
              "mean_accuracy": pooled["mean_accuracy"], "global_accuracy": pooled["global_accuracy"],
              "confusion_matrix": pooled["confusion_matrix"]}
    print(f"trained {args.steps} steps in {train_s / 60:.1f} min; test mIoU {pooled['miou']:.4f}")
    path = write_result(result, "seg_recipe_cpu", args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
