"""Super-resolution training data: the images of the training folders, a named held-out subset of them,
self-supervised LR/HR pairs cut from the rest, and validation on the held-out images by the papers'
protocol (train/sr.py trains with them).

HR crops are augmented with the 8 dihedral transforms and degraded with MATLAB-compatible bicubic
downscaling (rounded to 8 bits like a saved LR image), or with the real-world chain of
train/degradations.py in DataLoader workers (``--degrade real``). Held-out images are validated whole: Y-PSNR of the
8-bit output, ``scale`` pixels shaved, as ``pixbatch eval sr`` measures."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset


def split_holdout(paths: list[Path], names: list[str]) -> tuple[list[Path], list[Path]]:
    """(training paths, held-out paths): the files named in ``names`` (by file name) are held out. Every
    name must match exactly one file, so that a typo cannot leave an image in the training set."""
    by_name: dict[str, list[Path]] = {}
    for p in paths:
        by_name.setdefault(p.name, []).append(p)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"--holdout names {len(missing)} image(s) not in --data: {', '.join(missing[:5])}")
    twice = [n for n in names if len(by_name[n]) > 1]
    if twice:
        raise ValueError(f"--holdout name(s) matching several files in --data: {', '.join(twice[:5])}")
    held = [by_name[n][0] for n in dict.fromkeys(names)]
    chosen = set(held)
    return [p for p in paths if p not in chosen], held


def load_images(paths: list[Path], min_side: int,
                on_error: Callable[[Path, str], None] | None = None) -> list[torch.Tensor]:
    """The images as upright 8-bit RGB, uint8 CHW tensors (small sets fit in memory), those of at least
    ``min_side`` px. A file that cannot be decoded is reported to ``on_error`` and left out (raised
    without it)."""
    from pixbatch.io.decode import DecodeError, decode_rgb8

    images = []
    for path in paths:
        try:
            arr = decode_rgb8(path)
        except DecodeError as exc:
            if on_error is None:
                raise
            on_error(path, str(exc))
            continue
        if min(arr.shape[:2]) >= min_side:
            images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    return images


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-compatible bicubic downscaling (HR in [0, 1], NCHW), rounded to 8-bit levels like the
    LR images of the standard benchmarks."""
    from pixbatch.ops.imresize import imresize

    return imresize(hr, 1 / scale).mul_(255).round_().clamp_(0, 255).div_(255)


def random_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (rotations by 90 degrees, with or without a flip)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def sample_crops(images: list[torch.Tensor], batch: int, hr_patch: int, rng: random.Random) -> torch.Tensor:
    """``batch`` random HR crops (NCHW float in [0, 1]), each in one of the 8 dihedral orientations."""
    crops = []
    for _ in range(batch):
        img = images[rng.randrange(len(images))]
        _, h, w = img.shape
        y, x = rng.randrange(h - hr_patch + 1), rng.randrange(w - hr_patch + 1)
        crops.append(random_dihedral(img[:, y:y + hr_patch, x:x + hr_patch], rng.randrange(8)))
    return torch.stack(crops).float().div_(255)


def sample_batch(images: list[torch.Tensor], batch: int, hr_patch: int, scale: int,
                 rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR): random crops and their MATLAB-bicubic LR."""
    hr = sample_crops(images, batch, hr_patch, rng)
    return degrade(hr, scale), hr


class RealPairs(IterableDataset):
    """An endless stream of (LR, HR) batches whose LR goes through the real-world chain of
    train/degradations.py (``degradation``: "real" or "real-light"). Each worker draws from its own
    seed, derived from ``seed`` and its number, so a seed gives the same stream."""

    def __init__(self, images: list[torch.Tensor], batch: int, hr_patch: int, scale: int, degradation: str,
                 seed: int) -> None:
        from pixbatch.train.degradations import DEGRADATIONS

        self.images, self.batch, self.hr_patch, self.scale = images, batch, hr_patch, scale
        self.spec, self.seed = DEGRADATIONS[degradation], seed

    def __iter__(self):
        from pixbatch.train.degradations import Sampler, degrade_real

        info = torch.utils.data.get_worker_info()
        if info is not None:
            torch.set_num_threads(1)  # the workers share the cores with training
        rng = random.Random(f"{self.seed}/{0 if info is None else info.id}")
        sampler = Sampler(self.spec, rng.randrange(2 ** 63))
        while True:
            hr = sample_crops(self.images, self.batch, self.hr_patch, rng)
            yield torch.stack([degrade_real(x, self.scale, sampler) for x in hr]), hr


def real_batches(images: list[torch.Tensor], batch: int, hr_patch: int, scale: int, degradation: str,
                 seed: int, workers: int):
    """An iterator over RealPairs' batches, made in ``workers`` DataLoader worker processes (0: here)."""
    from torch.utils.data import DataLoader

    pairs = RealPairs(images, batch, hr_patch, scale, degradation, seed)
    return iter(DataLoader(pairs, batch_size=None, num_workers=workers, prefetch_factor=2 if workers else None))


def real_lr(hr: torch.Tensor, scale: int, degradation: str, seed: int) -> torch.Tensor:
    """The LR (CHW on 8-bit levels) of an HR image (CHW in [0, 1]) through the real-world chain, drawn
    from ``seed``."""
    from pixbatch.train.degradations import DEGRADATIONS, Sampler, degrade_real

    return degrade_real(hr, scale, Sampler(DEGRADATIONS[degradation], seed))


class HeldOut:
    """Whole held-out images, validated as the papers do: MATLAB-bicubic LR of the HR image (cropped to a
    multiple of the scale), the output rounded to 8 bits, Y-PSNR with ``scale`` pixels shaved. With a
    ``degradation`` ("real", "real-light"), the LR goes through that chain instead, drawn once per image
    (seeded by its place in the list), so every validation sees the same inputs."""

    def __init__(self, paths: list[Path], scale: int, on_error: Callable[[Path, str], None] | None = None,
                 degradation: str | None = None) -> None:
        from pixbatch.eval.metrics import psnr, rgb_to_y
        from pixbatch.eval.sr import modcrop
        from pixbatch.ops.imresize import imresize_uint8

        self.scale = scale
        self.pairs: list[tuple[torch.Tensor, np.ndarray]] = []  # (LR as NCHW float in [0, 1], HR's Y)
        bicubic = []
        for i, image in enumerate(load_images(paths, 2 * scale + 11, on_error)):
            hr = modcrop(image.permute(1, 2, 0).numpy(), scale)
            if degradation is None:
                lr = imresize_uint8(hr, 1 / scale)
            else:
                x = real_lr(torch.from_numpy(hr).permute(2, 0, 1).float().div_(255), scale, degradation, i)
                lr = x.mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
            self.pairs.append((torch.from_numpy(lr).permute(2, 0, 1)[None].float().div_(255), rgb_to_y(hr)))
            bicubic.append(psnr(rgb_to_y(imresize_uint8(lr, scale)), self.pairs[-1][1], scale))
        if not self.pairs:
            raise ValueError("none of the --holdout images could be read")
        self.bicubic = float(np.mean(bicubic))

    def psnr_y(self, net: torch.nn.Module, device: torch.device) -> float:
        """Mean Y-PSNR of ``net``'s outputs (fp32) over the held-out images."""
        from pixbatch.eval.metrics import psnr, rgb_to_y

        scores = []
        for lr, hr_y in self.pairs:
            out = net(lr.to(device)).float().clamp_(0, 1).mul_(255).round_()[0].permute(1, 2, 0)
            scores.append(psnr(rgb_to_y(out.to(torch.uint8).cpu().numpy()), hr_y, self.scale))
        return float(np.mean(scores))
