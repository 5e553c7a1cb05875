"""What every segmentation model shares: any-size inputs and the descriptor attributes."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pad (replicate) or crop ``x`` to ``like``'s height and width, for skip connections of odd sizes."""
    dh, dw = like.shape[-2] - x.shape[-2], like.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    if dh < 0 or dw < 0:
        x = x[..., : like.shape[-2], : like.shape[-1]]
        dh, dw = max(dh, 0), max(dw, 0)
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate") if dh or dw else x


class SegModel(nn.Module):
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
