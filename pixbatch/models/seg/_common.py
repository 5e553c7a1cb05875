"""What every segmentation model shares: any-size inputs and the descriptor attributes."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pixbatch.models.info import ImageModel


class SegModel(ImageModel):
    """Base of the segmentation models: pads any input (reflect) to ``size_multiple`` and crops back,
    so callers never meet "size must be divisible by 32"; exposes the descriptor attributes."""

    task = "seg"
    scale = 1

    def __init__(self, in_channels: int, num_classes: int, size_multiple: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, num_classes
        self.num_classes, self.size_multiple = num_classes, size_multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = -h % m, -w % m
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.forward_aligned(x)[..., :h, :w]

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def receptive_field(self) -> int:
        """Radius in input pixels of the region that can influence one output pixel (an upper bound)."""
        return (self._rf_size() + 1) // 2

    def _rf_size(self) -> int:
        raise NotImplementedError
