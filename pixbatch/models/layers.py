"""Layers the model families share: ICNR initialisation, activations, PixelShuffle upsamplers, mean
shifts, contrast-aware channel attention, conv-BN-ReLU, size matching for skip connections, and the
scale and block count a recogniser reads from a checkpoint."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# Mean RGB of DIV2K on a [0, 1] scale: EDSR-style models subtract it before the head and add it back.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def icnr_(weight: torch.Tensor, scale: int, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR init (Aitken et al. 2017): the r*r sub-pixel kernels of each output channel start equal,
    so conv -> PixelShuffle begins as nearest-neighbour upsampling, free of checkerboard artefacts."""
    out_c, in_c, kh, kw = weight.shape
    r2 = scale * scale
    if out_c % r2:
        raise ValueError(f"out channels {out_c} not divisible by scale^2 = {r2}")
    if weight.is_meta:  # a shapes-only build (e.g. `pixbatch models`): nothing to initialise
        return weight
    sub = torch.empty(out_c // r2, in_c, kh, kw, dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(r2, dim=0))
    return weight


def make_act(kind: str, n_feats: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(n_feats)
    if kind == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    raise ValueError(f"unknown activation {kind!r}")


def upsample_steps(scale: int) -> list[int]:
    """x2 steps for powers of two, one x3 step for 3."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise ValueError(f"scale must be 2, 3, 4 or 8, got {scale}")


class Upsampler(nn.Sequential):
    """conv(C -> C*r^2) -> PixelShuffle(r) per step, with an optional activation after each shuffle."""

    def __init__(self, scale: int, n_feats: int, act: str | None = None) -> None:
        layers: list[nn.Module] = []
        for r in upsample_steps(scale):
            conv = nn.Conv2d(n_feats, n_feats * r * r, 3, padding=1)
            icnr_(conv.weight, r)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.PixelShuffle(r)]
            if act is not None:
                layers.append(make_act(act, n_feats))
        super().__init__(*layers)


class MeanShift(nn.Module):
    """Subtract (sign -1) or add (+1) the dataset mean as a frozen 1x1 conv, as published checkpoints
    store it (keys ``shifter.weight``/``shifter.bias``)."""

    def __init__(self, sign: float, mean: tuple[float, float, float] = DIV2K_MEAN) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():  # constants made on the CPU: torch.eye on the meta device imports torch._dynamo (1 s)
            self.shifter.weight.copy_(torch.eye(3, device="cpu").view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(mean, device="cpu"))
        for p in self.shifter.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class ContrastChannelAttention(nn.Module):
    """Channel weights from each channel's spatial standard deviation plus mean ("CCA"; IMDN, BSRN)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


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


def resample_subpixels(tensor: torch.Tensor, from_scale: int, to_scale: int, out_channels: int = 3) -> torch.Tensor:
    """An upsampler conv's weight (or bias) for PixelShuffle(``from_scale``) turned into one for
    ``to_scale``: each new sub-pixel is the area-weighted mean of the old sub-pixels it covers (a 4x4
    grid onto 2x2 averages blocks of four; onto 3x3, overlaps of 4/3). The new layer then computes the old
    model's output box-filtered to the new grid: a start for training a new scale from a trained body,
    far closer than a random head."""
    from fractions import Fraction

    share = Fraction(from_scale, to_scale)
    a = torch.zeros(to_scale, from_scale, dtype=torch.float64)
    for i in range(to_scale):
        lo, hi = i * share, (i + 1) * share
        for k in range(from_scale):
            a[i, k] = float(max(0, min(hi, k + 1) - max(lo, k)) / share)
    a = a.to(tensor.dtype)
    grid = tensor.reshape(out_channels, from_scale, from_scale, -1)
    return torch.einsum("ik,jl,cklx->cijx", a, a, grid).reshape(out_channels * to_scale * to_scale,
                                                                  *tensor.shape[1:])


def shuffle_scale(conv_out_channels: int, out_channels: int = 3, scales: tuple[int, ...] = (2, 3, 4)) -> int | None:
    """The PixelShuffle factor of an upsampler conv with ``conv_out_channels`` = out_channels * r^2,
    as a recogniser reads it from a checkpoint; None when it is not one of ``scales``."""
    r = round((conv_out_channels / out_channels) ** 0.5)
    return r if r * r * out_channels == conv_out_channels and r in scales else None


def count_keys(state_dict: dict, pattern: str) -> int:
    """How many keys match ``pattern`` in full: a recogniser's count of repeated blocks."""
    import re

    return sum(1 for k in state_dict if re.fullmatch(pattern, k))


def conv_scale(state_dict: dict, key: str, out_channels: int = 3) -> int | None:
    """``shuffle_scale`` of the conv stored under ``key`` (a 4-D weight), or None when there is none."""
    w = state_dict.get(key)
    return shuffle_scale(int(w.shape[0]), out_channels) if isinstance(w, torch.Tensor) and w.dim() == 4 else None
