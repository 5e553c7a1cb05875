"""BSRN (Li et al. 2022, "Blueprint Separable Residual Network for Efficient Image Super-Resolution"),
written for pixbatch with the parameter names of the authors' releases, in both of their layouts:

- ``paper``: the authors' BasicSR release (``net_g_BSRN_x4.pth``; 64 features, 8 blocks): blueprint
  separable convs (1x1 pointwise without bias, then 3x3 depthwise), blocks with contrast-aware channel
  attention.
- ``ntire2022``: the NTIRE 2022 challenge entry (BSRN-S size, 48 features, 5 blocks): pointwise
  layers stored as ``nn.Linear`` (2-D weights, with bias), blocks with a learned channel weight ``cw``
  and an output projection instead of channel attention.

RGB in [0, 1]. Each block's enhanced spatial attention pools over a grid laid on the whole input, and
the paper layout's channel attention pools over all of it: the receptive field is unbounded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import ContrastChannelAttention, conv_scale, count_keys, icnr_

LAYOUTS = ("paper", "ntire2022")


class Pointwise(nn.Linear):
    """A 1x1 convolution whose weight is stored as ``nn.Linear``'s (out, in), as the NTIRE release
    keeps it; it runs as a convolution, so channels-last inputs need no permutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


def pointwise(c_in: int, c_out: int, linear: bool, bias: bool = True) -> nn.Module:
    return Pointwise(c_in, c_out, bias=bias) if linear else nn.Conv2d(c_in, c_out, 1, bias=bias)


class BSConvU(nn.Module):
    """Blueprint separable conv: pointwise mixing, then a per-channel (depthwise) k x k kernel."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 linear: bool = False) -> None:
        super().__init__()
        self.pw = pointwise(c_in, c_out, linear, bias=linear)
        self.dw = nn.Conv2d(c_out, c_out, kernel_size, stride=stride, padding=padding, groups=c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class ESA(nn.Module):
    """Enhanced spatial attention with BSConv layers and GELU, computed at 1/6 resolution."""

    def __init__(self, channels: int, linear: bool) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = pointwise(channels, f, linear)
        self.conv_f = pointwise(f, f, linear)
        self.conv_max = BSConvU(f, f, linear=linear)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2) if linear else BSConvU(f, f, 3, stride=2, padding=0)
        self.conv3 = BSConvU(f, f, linear=linear)
        self.conv3_ = BSConvU(f, f, linear=linear)
        self.conv4 = pointwise(f, channels, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        c3 = self.conv3_(F.gelu(self.conv3(F.gelu(self.conv_max(pooled)))))
        c3 = F.interpolate(c3, x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1)))


class ESDB(nn.Module):
    """Efficient separable distillation block: three refine steps that each distil half the
    channels through a pointwise layer, a last BSConv, fusion, spatial then channel attention."""

    def __init__(self, channels: int, layout: str) -> None:
        super().__init__()
        linear = layout == "ntire2022"
        dc = channels // 2
        for i in (1, 2, 3):
            self.add_module(f"c{i}_d", pointwise(channels, dc, linear))
            self.add_module(f"c{i}_r", BSConvU(channels, channels, linear=linear))
        self.c4 = BSConvU(channels, dc, linear=linear)
        self.c5 = pointwise(dc * 4, channels, linear)
        self.esa = ESA(channels, linear)
        if linear:
            self.cw = nn.Parameter(torch.ones(1, channels))
            self.conv_out = pointwise(channels, channels, linear)
        else:
            self.cca = ContrastChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, r = [], x
        for i in (1, 2, 3):
            kept.append(F.gelu(getattr(self, f"c{i}_d")(r)))
            r = F.gelu(getattr(self, f"c{i}_r")(r) + r)
        kept.append(F.gelu(self.c4(r)))
        out = self.esa(self.c5(torch.cat(kept, dim=1)))
        if hasattr(self, "cca"):
            return self.cca(out) + x
        return self.conv_out(out * self.cw[:, :, None, None]) + x


class DirectUpsampler(nn.Module):
    """One conv to out * r^2 channels and one PixelShuffle (keys ``upsampleOneStep.0.*``)."""

    def __init__(self, channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.upsampleOneStep = nn.Sequential(nn.Conv2d(channels, out_channels * scale * scale, 3, padding=1),
                                             nn.PixelShuffle(scale))
        icnr_(self.upsampleOneStep[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


class BSRN(ImageModel):
    receptive_field = None  # unbounded: pooling attention over the whole input
    min_size = 15  # the spatial attention pools a 7x7 window of a stride-2 conv's output

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int = 3, num_feat: int = 64,
                 num_block: int = 8, layout: str = "paper") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.scale, self.in_channels, self.out_channels = scale, in_channels, out_channels
        self.num_block, self.layout = num_block, layout
        linear = layout == "ntire2022"
        self.fea_conv = BSConvU(in_channels * 4, num_feat, linear=linear)
        for i in range(1, num_block + 1):
            self.add_module(f"B{i}", ESDB(num_feat, layout))
        self.c1 = pointwise(num_feat * num_block, num_feat, linear)
        self.c2 = BSConvU(num_feat, num_feat, linear=linear)
        self.upsampler = DirectUpsampler(num_feat, out_channels, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.fea_conv(x.repeat(1, 4, 1, 1))  # the published nets read four copies of the input
        outs, out = [], feat
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"B{i}")(out)
            outs.append(out)
        return self.upsampler(self.c2(F.gelu(self.c1(torch.cat(outs, dim=1)))) + feat)


@register_model
def bsrn_x4(**kw) -> BSRN:
    """The paper's BSRN: 64 features, 8 blocks (352K parameters)."""
    return BSRN(**{"scale": 4, **kw})


@register_model
def bsrn_s_x4(**kw) -> BSRN:
    """BSRN-S as entered in NTIRE 2022: 48 features, 5 blocks, the challenge release's layout."""
    return BSRN(**{"scale": 4, "num_feat": 48, "num_block": 5, "layout": "ntire2022", **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    needed = ("fea_conv.pw.weight", "fea_conv.dw.weight", "B1.c1_d.weight", "B1.esa.conv3_.dw.weight",
              "c2.dw.weight", "upsampler.upsampleOneStep.0.weight")
    if not all(k in state_dict for k in needed):
        return None
    if conv_scale(state_dict, "upsampler.upsampleOneStep.0.weight") != 4:
        return None
    pw = state_dict["fea_conv.pw.weight"]
    layout = "ntire2022" if pw.dim() == 2 else "paper"
    kwargs = {"num_feat": int(pw.shape[0]), "in_channels": int(pw.shape[1]) // 4, "layout": layout,
              "num_block": count_keys(state_dict, r"B\d+\.c1_d\.weight")}
    return "bsrn_x4", kwargs
