"""Train a super-resolution model on self-supervised pairs cut from any folder of images.

    python -m pixbatch.train.sr --data DIR [--data DIR ...] --arch edsr_tiny_x4 --steps 3000 --out x4.safetensors

HR crops are degraded with MATLAB-compatible bicubic downscaling and augmented with the 8 dihedral
transforms; L1 loss, Adam with a one-cycle schedule, gradient clipping; reproducible with --seed.
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_images(folders: list[Path], min_side: int) -> list[torch.Tensor]:
    """All RGB images of the folders as uint8 CHW tensors (small sets fit in memory)."""
    from PIL import Image

    images = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
            if min(arr.shape[:2]) >= min_side:
                images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    if not images:
        raise SystemExit(f"no training images of at least {min_side} px in {', '.join(map(str, folders))}")
    return images


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-compatible bicubic downscaling (HR in [0, 1], NCHW), rounded to 8-bit levels like the
    LR images of the standard benchmarks."""
    from pixbatch.train.degrade import imresize

    return imresize(hr, 1 / scale).mul_(255).round_().clamp_(0, 255).div_(255)


def random_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (rotations by 90 degrees, with or without a flip)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def sample_batch(images: list[torch.Tensor], batch: int, hr_patch: int, scale: int,
                 rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    crops = []
    for _ in range(batch):
        img = images[rng.randrange(len(images))]
        _, h, w = img.shape
        y, x = rng.randrange(h - hr_patch + 1), rng.randrange(w - hr_patch + 1)
        crops.append(random_dihedral(img[:, y:y + hr_patch, x:x + hr_patch], rng.randrange(8)))
    hr = torch.stack(crops).float().div_(255)
    return degrade(hr, scale), hr


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.clamp(0, 1), b).item()
    return 10 * math.log10(1 / max(mse, 1e-12))


def main(argv: list[str] | None = None) -> None:
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--arch", required=True, help="registered model name, e.g. edsr_tiny_x4")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--patch", type=int, default=48, help="LR patch size in px")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model = create_model(args.arch, pretrained=False)
    net, scale = model.module.train(), model.info.scale
    hr_patch = args.patch * scale
    images = load_images(args.data, hr_patch)
    # Fixed validation crops, never trained on the same draw.
    val_lr, val_hr = sample_batch(images, 32, hr_patch, scale, random.Random(args.seed + 1))

    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        lr, hr = sample_batch(images, args.batch_size, hr_patch, scale, rng)
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                val = psnr(net(val_lr), val_hr)
                bic = psnr(F.interpolate(val_lr, scale_factor=scale, mode="bicubic"), val_hr)
            net.train()
            print(f"step {step}/{args.steps} loss {loss.item():.4f} val PSNR {val:.2f} dB "
                  f"(bicubic {bic:.2f}) {time.perf_counter() - start:.0f}s", flush=True)
    recipe = {
        "command": "python -m pixbatch.train.sr " + shlex.join(sys.argv[1:] if argv is None else argv),
        "data": [str(d) for d in args.data], "steps": args.steps, "batch_size": args.batch_size,
        "lr_patch": args.patch, "peak_lr": args.lr, "loss": "l1", "seed": args.seed,
        "seconds": round(time.perf_counter() - start), "val_psnr_rgb": round(val, 2), "val_bicubic": round(bic, 2),
    }
    save_checkpoint(net.eval(), args.out, name=args.arch, training=recipe)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
