"""Joint augmentation of image/mask pairs for segmentation training (pairing and loading: io/pairs.py).

Augmentations act on image and mask together (flips, 90-degree rotations, small rotations) and on
the image alone (brightness/contrast); masks are resampled with nearest neighbour so classes stay
classes."""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.nn import functional as F

from pixbatch.runtime.windows import reflect_index


def augment(image: torch.Tensor, mask: torch.Tensor, rng: random.Random, *, rotate_deg: float = 15.0,
            lighting: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random dihedral transform and small rotation (both), brightness/contrast (image only).
    image (3, H, W) float, mask (H, W) int."""
    k = rng.randrange(8)
    image = torch.rot90(image, k % 4, dims=(-2, -1))
    mask = torch.rot90(mask, k % 4, dims=(-2, -1))
    if k >= 4:
        image, mask = image.flip(-1), mask.flip(-1)
    if rotate_deg > 0 and rng.random() < 0.5:
        a = math.radians(rng.uniform(-rotate_deg, rotate_deg))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]).unsqueeze(0)
        grid = F.affine_grid(theta, (1, 1, *image.shape[-2:]), align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]
        mask = F.grid_sample(mask[None, None].float(), grid, mode="nearest", padding_mode="reflection",
                             align_corners=False)[0, 0].long()
    if lighting > 0:
        contrast = 1 + rng.uniform(-lighting, lighting)
        brightness = rng.uniform(-lighting, lighting) / 2
        mean = image.mean()
        image = ((image - mean) * contrast + mean + brightness).clamp_(0, 1)
    return image.contiguous(), mask.contiguous()


def random_crop(image: torch.Tensor, mask: torch.Tensor, size: int,
                rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """A size x size crop; images smaller than that are mirror-padded to it first (masks likewise), by
    as many reflections as it takes (an image of 40 px fills a 512 px crop)."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        rows = torch.from_numpy(reflect_index(np.arange(max(h, size)), h))
        cols = torch.from_numpy(reflect_index(np.arange(max(w, size)), w))
        image = image.index_select(-2, rows).index_select(-1, cols)
        mask = mask.index_select(-2, rows).index_select(-1, cols)
        h, w = image.shape[-2:]
    y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
    return image[:, y:y + size, x:x + size], mask[y:y + size, x:x + size]
