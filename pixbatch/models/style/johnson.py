"""TransformerNet of PyTorch's fast_neural_style example (Johnson et al. 2016, with instance norm):
reflection-padded convs, two stride-2 downsamplings, five residual blocks, two nearest-upsample ->
conv stages. Written for pixbatch with the example's parameter names, so its ``.pth`` files
(``conv1.conv2d.weight``, ``in1.weight``, ``res1.conv1.conv2d.weight``, ``deconv1.conv2d.weight``, ...)
load as they are; older files also carry instance-norm running statistics, which are dropped."""

from __future__ import annotations

import torch
from torch import nn

from pixbatch.models._registry import register_model
from pixbatch.models.style.base import StyleNet, upsample2
from pixbatch.models.style.norm import InstanceNorm, drop_running_stats
from pixbatch.ops.upsample_conv import upsample_conv


class ConvLayer(nn.Module):
    """Reflection padding of k//2, then a conv (optionally after a 2x nearest upsampling, computed
    as a sub-pixel conv of the input unless ``subpixel`` is turned off: same output, 2.25x fewer
    multiply-adds)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, upsample: bool = False) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv2d = nn.Conv2d(c_in, c_out, kernel, stride)
        self.upsample = upsample
        self.subpixel = upsample and kernel == 3 and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subpixel:
            return upsample_conv(x, self.conv2d.weight, self.conv2d.bias, "reflect")
        return self.conv2d(self.pad(upsample2(x) if self.upsample else x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = InstanceNorm(channels)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = InstanceNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(torch.relu(self.in1(self.conv1(x)))))


class TransformerNet(StyleNet):
    # conv reach in input px: 4 + 1 + 2 (down), 10 x 4 (residual convs at 1/4), 2 + 1 + 4 (up), plus
    # the nearest upsamplings' rounding; checked against a gradient probe in the tests
    receptive_field = 60

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.conv1 = ConvLayer(3, c1, 9)
        self.in1 = InstanceNorm(c1)
        self.conv2 = ConvLayer(c1, c2, 3, 2)
        self.in2 = InstanceNorm(c2)
        self.conv3 = ConvLayer(c2, c3, 3, 2)
        self.in3 = InstanceNorm(c3)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(c3) for _ in range(5))
        self.deconv1 = ConvLayer(c3, c2, 3, upsample=True)
        self.in4 = InstanceNorm(c2)
        self.deconv2 = ConvLayer(c2, c1, 3, upsample=True)
        self.in5 = InstanceNorm(c1)
        self.deconv3 = ConvLayer(c1, 3, 9)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.in1(self.conv1(x)))
        y = torch.relu(self.in2(self.conv2(y)))
        y = torch.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = torch.relu(self.in4(self.deconv1(y)))
        y = torch.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


@register_model
def johnson_style(**kwargs) -> TransformerNet:
    """The PyTorch example's TransformerNet (1.68 M parameters); untrained unless loaded from a file."""
    return TransformerNet(**kwargs)


def recognise_johnson(state: dict, scale: int | None = None) -> tuple[str, dict] | None:
    """The example's keys (``conv2d`` or ``conv`` for the conv modules); running statistics dropped."""
    w = state.get("conv1.conv2d.weight", state.get("conv1.conv.weight"))
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or tuple(w.shape[1:]) != (3, 9, 9):
        return None
    if "deconv3.conv2d.weight" not in state and "deconv3.conv.weight" not in state:
        return None
    drop_running_stats(state)
    for key in [k for k in state if ".conv." in k]:
        state[key.replace(".conv.", ".conv2d.")] = state.pop(key)
    return "johnson_style", {"width": int(w.shape[0])}
