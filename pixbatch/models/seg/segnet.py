"""SegNet (Badrinarayanan et al. 2017): a VGG-style encoder whose max-pooling indices drive the
decoder's unpooling, so boundaries are placed where the encoder found them, without skip tensors."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.layers import conv_bn_relu
from pixbatch.models.seg._common import SegModel

VGG16_LEVELS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class SegNet(SegModel):
    def __init__(self, in_channels: int = 3, num_classes: int = 1, width: float = 1.0,
                 levels: tuple[tuple[int, int], ...] = VGG16_LEVELS) -> None:
        super().__init__(in_channels, num_classes, 2 ** len(levels))
        widths = [max(4, int(c * width)) for c, _ in levels]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for cout, (_, n) in zip(widths, levels):
            layers = conv_bn_relu(cin, cout)
            for _ in range(n - 1):
                layers += conv_bn_relu(cout, cout)
            self.encoder.append(nn.Sequential(*layers))
            cin = cout
        # Decoder level i mirrors encoder level i: n convs, the last one narrowing to the next width.
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(levels))):
            cout = widths[i - 1] if i > 0 else widths[0]
            n = levels[i][1]
            layers = []
            for _ in range(n - 1):
                layers += conv_bn_relu(widths[i], widths[i])
            layers += conv_bn_relu(widths[i], cout)
            self.decoder.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        self.convs = tuple(n for _, n in levels)

    def _rf_size(self) -> int:
        # encoder convs + pools, then decoder convs (unpooling puts a value back where it came from)
        return 1 + 2 + sum(2 * n * 2 ** i + 2 ** i + 2 * n * 2 ** i for i, n in enumerate(self.convs))

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        indices, sizes = [], []
        for block in self.encoder:
            x = block(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            indices.append(idx)
        for block in self.decoder:
            x = F.max_unpool2d(x, indices.pop(), 2, output_size=sizes.pop())
            x = block(x)
        return self.head(x)


@register_model
def segnet(**kw) -> SegNet:
    """SegNet with the VGG16-BN encoder layout (13 convs)."""
    return SegNet(**kw)


@register_model
def segnet_small(**kw) -> SegNet:
    """SegNet at a quarter of the width."""
    return SegNet(**{"width": 0.25, **kw})
