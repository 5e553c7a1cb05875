"""CARN-M (Ahn et al. 2018, "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network"), the mobile variant: grouped, weight-shared efficient residual blocks in a cascade, and one
multi-scale upsampler (x2, x3, x4 branches), so one set of weights serves every scale, chosen at run
time. Written for pixbatch with the parameter names of the authors' release. RGB in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import MeanShift


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class EResidualBlock(nn.Module):
    """Grouped 3x3, grouped 3x3, pointwise 1x1, plus the input."""

    def __init__(self, channels: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=group), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=group), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class CascadingBlock(nn.Module):
    """One shared residual block applied three times, its outputs cascaded through 1x1 convs."""

    def __init__(self, channels: int, group: int) -> None:
        super().__init__()
        self.b1 = EResidualBlock(channels, group)
        self.c1 = BasicBlock(channels * 2, channels)
        self.c2 = BasicBlock(channels * 3, channels)
        self.c3 = BasicBlock(channels * 4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = o = x
        for conv in (self.c1, self.c2, self.c3):
            c = torch.cat([c, self.b1(o)], dim=1)
            o = conv(c)
        return o


class _Upsample(nn.Module):
    def __init__(self, channels: int, scale: int, group: int) -> None:
        super().__init__()
        steps = [3] if scale == 3 else [2] * {2: 1, 4: 2, 8: 3}[scale]
        layers: list[nn.Module] = []
        for r in steps:
            layers += [nn.Conv2d(channels, channels * r * r, 3, padding=1, groups=group), nn.ReLU(inplace=True),
                       nn.PixelShuffle(r)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MultiScaleUpsample(nn.Module):
    def __init__(self, channels: int, group: int) -> None:
        super().__init__()
        self.up2 = _Upsample(channels, 2, group)
        self.up3 = _Upsample(channels, 3, group)
        self.up4 = _Upsample(channels, 4, group)

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        return {2: self.up2, 3: self.up3, 4: self.up4}[scale](x)


class CARNM(ImageModel):
    def __init__(self, scale: int = 4, channels: int = 64, group: int = 4) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"CARN-M upscales by 2, 3 or 4, not {scale}")
        self.scale = scale  # the branch forward() uses; the weights serve all three
        self.sub_mean = MeanShift(-1.0)
        self.add_mean = MeanShift(1.0)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.b1 = CascadingBlock(channels, group)
        self.b2 = CascadingBlock(channels, group)
        self.b3 = CascadingBlock(channels, group)
        self.c1 = BasicBlock(channels * 2, channels)
        self.c2 = BasicBlock(channels * 3, channels)
        self.c3 = BasicBlock(channels * 4, channels)
        self.upsample = MultiScaleUpsample(channels, group)
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    @property
    def receptive_field(self) -> int:
        # entry 1 + 3 cascading blocks x 3 passes x 2 grouped 3x3 convs + first upsampler conv, + 1 margin
        return 1 + 3 * 3 * 2 + 1 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.entry(self.sub_mean(x))
        c = o = x
        for block, conv in ((self.b1, self.c1), (self.b2, self.c2), (self.b3, self.c3)):
            c = torch.cat([c, block(o)], dim=1)
            o = conv(c)
        return self.add_mean(self.exit(self.upsample(o, self.scale)))


@register_model
def carn_m_x2(**kw) -> CARNM:
    return CARNM(**{"scale": 2, **kw})


@register_model
def carn_m_x3(**kw) -> CARNM:
    return CARNM(**{"scale": 3, **kw})


@register_model
def carn_m_x4(**kw) -> CARNM:
    return CARNM(**{"scale": 4, **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    """(registered name, kwargs) when the keys are CARN-M's; the scale is the caller's choice (default 4)."""
    needed = ("entry.weight", "b1.b1.body.0.weight", "c3.body.0.weight", "upsample.up2.body.0.weight",
              "upsample.up3.body.0.weight", "upsample.up4.body.0.weight", "exit.weight")
    if not all(k in state_dict for k in needed):
        return None
    channels = int(state_dict["entry.weight"].shape[0])
    group = channels // int(state_dict["b1.b1.body.0.weight"].shape[1])
    s = scale or 4
    return f"carn_m_x{s}", {"channels": channels, "group": group}
