"""U-Net (Ronneberger et al. 2015): a contracting path that tells *what*, an expanding path with skip
connections that tells *where*. Double 3x3 conv + BN + ReLU per level; configurable depth and width;
transposed-conv or resize-conv (bilinear + 3x3 conv) upsampling."""

from __future__ import annotations

import torch
from torch import nn

from pixbatch.models._registry import register_model
from pixbatch.models.layers import conv_bn_relu, match_size
from pixbatch.models.seg._common import SegModel


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout))


class UNet(SegModel):
    def __init__(self, in_channels: int = 3, num_classes: int = 1, base: int = 64, depth: int = 4,
                 upsample: str = "transpose") -> None:
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', not {upsample!r}")
        super().__init__(in_channels, num_classes, 2 ** depth)
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([double_conv(in_channels, widths[0])] +
                                     [double_conv(widths[i - 1], widths[i]) for i in range(1, depth + 1)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(depth)):
            if upsample == "transpose":
                self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                             nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)))
            self.decoder.append(double_conv(2 * widths[i], widths[i]))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.depth, self.upsample = depth, upsample

    def _rf_size(self) -> int:
        d = self.depth
        size = 1 + sum(4 * 2 ** i + 2 ** i for i in range(d)) + 4 * 2 ** d + sum(4 * 2 ** i for i in range(d))
        if self.upsample == "resize":  # 3x3 conv at the coarse level + bilinear (half a coarse pixel a side)
            size += sum(2 * 2 ** (i + 1) + 2 ** i for i in range(d))
        return size

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder):
            skip = skips.pop()
            x = block(torch.cat([match_size(up(x), skip), skip], dim=1))
        return self.head(x)


def _create_unet(**kwargs) -> UNet:
    return UNet(**kwargs)


@register_model
def unet(**kw) -> UNet:
    """The classic U-Net: 64 base channels, 4 poolings."""
    return _create_unet(**{"base": 64, "depth": 4, **kw})


@register_model
def unet_small(**kw) -> UNet:
    """A quarter-width U-Net for small data sets and CPUs."""
    return _create_unet(**{"base": 16, "depth": 4, **kw})


@register_model
def unet_drive(**kw) -> UNet:
    """Retinal vessels (DRIVE): shipped weights trained with `pixbatch train seg`."""
    return _create_unet(**{"base": 16, "depth": 3, **kw})
