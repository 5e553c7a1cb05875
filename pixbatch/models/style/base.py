"""What every style net shares: RGB in [0, 1] outside, its own 0-255 scale inside, size multiple 4."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from pixbatch.models.info import ImageModel


class StyleNet(ImageModel):
    """A feed-forward style net: image in [0, 1] -> stylised image (not clamped; the task clamps).

    The published nets take and give pixel values 0-255; ``net`` is that body. Two stride-2 stages
    make sizes multiples of 4; ``receptive_field`` is the radius the convolutions reach (in input px),
    which windows of a huge image need as context once instance norm uses whole-image statistics."""

    task = "style"
    scale = 1
    in_channels = 3
    out_channels = 3
    size_multiple = 4
    receptive_field = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 255.0) * (1.0 / 255.0)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")
