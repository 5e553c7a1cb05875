"""Decoded pixels as the model planes and float colours that several tasks need."""

from __future__ import annotations

import numpy as np
import torch

from pixbatch.io.decode import rgb_samples


def model_planes(pixels: np.ndarray, device: torch.device, in_channels: int) -> torch.Tensor:
    """(h, w, C) uint8/uint16 -> (1, in_channels, h, w) float in [0, 1]: gray repeated, alpha dropped."""
    maxv = 255.0 if pixels.dtype == np.uint8 else 65535.0
    c = pixels.shape[2]
    color = pixels[:, :, : c - 1] if c in (2, 4) else pixels
    color = color.astype(np.int32) if color.dtype == np.uint16 else np.ascontiguousarray(color)
    x = torch.from_numpy(color).to(device).permute(2, 0, 1).to(torch.float32).div_(maxv)
    if x.shape[0] == 1 and in_channels == 3:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 3 and in_channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=device).view(3, 1, 1)).sum(0, keepdim=True)
    return x.unsqueeze(0)


def rgb8(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """Input rows as (h, w, 3) float 0-255 for the overlay: gray repeated, alpha dropped, 16-bit scaled."""
    color = rgb_samples(pixels)
    color = color.astype(np.float32) / 257.0 if color.dtype == np.uint16 else np.ascontiguousarray(color)
    return torch.from_numpy(color).to(device).float()
