"""The MobileNetV2-bottleneck fast style net (mmalotin/pytorch-fast-neural-style-mobilenetV2): the
TransformerNet layout with every conv after the first replaced by a bottleneck (1x1 -> instance norm
-> ReLU6 -> reflection-padded depthwise kxk -> instance norm -> ReLU6 -> 1x1 -> instance norm, plus
the input where shapes allow). Written for pixbatch with that repository's parameter names, so its
state dicts load as they are."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.style.base import StyleNet, upsample2
from pixbatch.models.style.norm import InstanceNorm, drop_running_stats


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, t: int = 1) -> None:
        super().__init__()
        mid = t * c_in
        self.residual = stride == 1 and c_in == c_out
        self.reflection_pad = nn.ReflectionPad2d(kernel // 2)
        self.conv1 = nn.Conv2d(c_in, mid, 1, bias=False)
        self.in1 = InstanceNorm(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self.in2 = InstanceNorm(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, bias=False)
        self.in3 = InstanceNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.in1(self.conv1(x)))
        y = F.relu6(self.in2(self.conv2(self.reflection_pad(y))))
        y = self.in3(self.conv3(y))
        return x + y if self.residual else y


class UpsampleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = Bottleneck(c_in, c_out, kernel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(upsample2(x)))


class TransformerMobileNet(StyleNet):
    # 4 (9x9) + 1 + 2 (stride-2 depthwise) + 5 x 4 (residual depthwise at 1/4) + 2 + 1 + 4, plus rounding
    receptive_field = 40

    def __init__(self) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(4)
        self.conv1 = nn.Conv2d(3, 32, 9, bias=False)
        self.in1 = InstanceNorm(32)
        self.conv2 = Bottleneck(32, 64, 3, 2)
        self.conv3 = Bottleneck(64, 128, 3, 2)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (Bottleneck(128, 128, 3, 1) for _ in range(5))
        self.upconv1 = UpsampleConv(128, 64, 3)
        self.upconv2 = UpsampleConv(64, 32, 3)
        self.conv4 = nn.Conv2d(32, 3, 9, bias=False)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.in1(self.conv1(self.reflection_pad(x))))
        y = self.conv3(self.conv2(y))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.upconv2(self.upconv1(y))
        return self.conv4(self.reflection_pad(y))


@register_model
def mobilenet_style(**kwargs) -> TransformerMobileNet:
    """The MobileNetV2-bottleneck fast style net (~0.06 M parameters); weights from a file."""
    return TransformerMobileNet(**kwargs)


def recognise_mobilenet(state: dict, scale: int | None = None) -> tuple[str, dict] | None:
    w = state.get("conv1.weight")
    if not isinstance(w, torch.Tensor) or tuple(w.shape) != (32, 3, 9, 9):
        return None
    if "res1.conv2.weight" not in state or "upconv1.conv1.conv1.weight" not in state:
        return None
    drop_running_stats(state)
    return "mobilenet_style", {}
