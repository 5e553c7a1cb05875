"""The TensorFlow fast-style-transfer net of Engstrom (2016): zero "same" padding (TensorFlow's,
asymmetric for even sizes at stride 2), instance norm with eps 1e-3 after every conv (the last one
too), transposed convs to upsample, and ``tanh(x) * 150 + 127.5`` out. Written for pixbatch; loads
the raw exported variables (``Variable`` ... ``Variable_47``: for each of the 16 conv layers, the
kernel in TensorFlow layout, then the instance norm's shift, then its scale), e.g. a deeplearn.js /
ml5 export folder holding ``manifest.json`` and the variable files."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.style.base import StyleNet
from pixbatch.models.style.norm import InstanceNorm

EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding along one axis: (before, after); the odd pixel goes after. TensorFlow's
    max((ceil(size / stride) - 1) * stride + kernel - size, 0), for kernel >= stride, in integer operations
    only: a trace (OpenVINO's conversion, torch's exporter) keeps them as functions of the size, where
    ``math.ceil`` froze its term at the traced size and made every output that size."""
    total = kernel - 1 - (size - 1) % stride
    return total // 2, total - total // 2


class ConvNorm(nn.Module):
    """Conv with TensorFlow "SAME" zero padding (no bias), then instance norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.stride = stride
        self.norm = InstanceNorm(c_out, EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[-1]
        top, bottom = same_padding(x.shape[-2], k, self.stride)
        left, right = same_padding(x.shape[-1], k, self.stride)
        x = F.pad(x, (left, right, top, bottom))
        return self.norm(F.conv2d(x, self.weight, stride=self.stride))


class ConvTransposeNorm(nn.Module):
    """TensorFlow's stride-2 "SAME" transposed conv (output exactly twice the input), then instance norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_in, c_out, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.norm = InstanceNorm(c_out, EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # "SAME" for an even output of 2n puts no padding before: out[2i + k] += x[i] w[k]; the last of
        # the 2n + 1 rows a plain transposed conv makes lies beyond the output. Cut as "all but the last"
        # (not ": 2 * h", which a trace freezes at the traced size: OpenVINO's model, int8's above all, then
        # computed another size at every other shape)
        y = F.conv_transpose2d(x, self.weight, stride=2)
        return self.norm(y[..., :-1, :-1])


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(channels, channels, 3)
        self.conv2 = ConvNorm(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class EngstromNet(StyleNet):
    receptive_field = 60  # as the PyTorch example's net: same kernels and strides

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, 32, 9)
        self.conv2 = ConvNorm(32, 64, 3, 2)
        self.conv3 = ConvNorm(64, 128, 3, 2)
        self.res1, self.res2, self.res3, self.res4, self.res5 = (ResidualBlock(128) for _ in range(5))
        self.conv_t1 = ConvTransposeNorm(128, 64)
        self.conv_t2 = ConvTransposeNorm(64, 32)
        self.conv_t3 = ConvNorm(32, 3, 9)

    def net(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y))
        y = torch.relu(self.conv3(y))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = torch.relu(self.conv_t1(y))
        y = torch.relu(self.conv_t2(y))
        return torch.tanh(self.conv_t3(y)) * 150.0 + 127.5


@register_model
def engstrom_style(**kwargs) -> EngstromNet:
    """Engstrom's TensorFlow fast-style-transfer net (1.68 M parameters); weights from a file."""
    return EngstromNet(**kwargs)


# The 16 conv layers in the order TensorFlow created their variables (three each: kernel, shift, scale).
LAYERS = ["conv1", "conv2", "conv3"] + [f"res{i}.conv{j}" for i in range(1, 6) for j in (1, 2)] + \
         ["conv_t1", "conv_t2", "conv_t3"]
TRANSPOSED = {"conv_t1", "conv_t2"}


def variable_name(i: int) -> str:
    return "Variable" if i == 0 else f"Variable_{i}"


def recognise_engstrom(state: dict, scale: int | None = None) -> tuple[str, dict] | None:
    """Exactly ``Variable`` ... ``Variable_47``, the first a 9x9x3x32 kernel: converted in place from
    TensorFlow layouts (kernels [kh, kw, in, out]; transposed kernels [kh, kw, out, in])."""
    names = [variable_name(i) for i in range(3 * len(LAYERS))]
    if set(state) != set(names):
        return None
    first = state["Variable"]
    if not isinstance(first, torch.Tensor) or tuple(first.shape) != (9, 9, 3, 32):
        return None
    if any(not isinstance(state[n], torch.Tensor) or state[n].ndim != (4 if i % 3 == 0 else 1)
           for i, n in enumerate(names)):
        return None
    for layer, i in zip(LAYERS, range(0, len(names), 3)):
        kernel, shift, scale_ = (state.pop(names[i + k]) for k in range(3))
        # conv [kh, kw, in, out] -> [out, in, kh, kw]; conv_transpose [kh, kw, out, in] -> [in, out, kh, kw]
        state[f"{layer}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        state[f"{layer}.norm.weight"] = scale_
        state[f"{layer}.norm.bias"] = shift
    return "engstrom_style", {}
