"""SPAN (Wan et al. 2024, "Swift Parameter-free Attention Network for Efficient Super-Resolution"),
winner of NTIRE 2024's efficient-SR challenge, in the re-parameterised form its slim checkpoints hold:
every conv is the single 3x3 ``eval_conv`` that the training-time branches (1x1-3x3-1x1 plus a 1x1
skip) fold into. Written for pixbatch with the parameter names of the challenge release.

Input is RGB in [0, 1]; the net itself subtracts the DIV2K mean and multiplies by 255, and its output
is in [0, 1]. The attention is parameter-free (``sigmoid(x) - 0.5``) and all convs are local: the
receptive field is 21 input pixels (21 3x3 convs on the longest path).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import DIV2K_MEAN, conv_scale, count_keys, icnr_


class FoldedConv(nn.Module):
    """A re-parameterised block's single 3x3 conv (keys ``eval_conv.*``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eval_conv(x)


class SPAB(nn.Module):
    """Swift parameter-free attention block: three 3x3 convs (SiLU between), then the residual sum
    gated by ``sigmoid(out) - 0.5``. Also returns the first conv's activated output, which the net
    taps (the release applies SiLU in place, so the tap it was trained with is the activated one)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1_r = FoldedConv(channels, channels)
        self.c2_r = FoldedConv(channels, channels)
        self.c3_r = FoldedConv(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out1 = F.silu(self.c1_r(x))
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(ImageModel):
    receptive_field = 21

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int = 3, feature_channels: int = 48,
                 n_blocks: int = 6, img_range: float = 255.0) -> None:
        super().__init__()
        if n_blocks < 2:
            raise ValueError("SPAN taps its second-to-last block: n_blocks must be at least 2")
        self.scale, self.in_channels, self.out_channels = scale, in_channels, out_channels
        self.n_blocks, self.img_range = n_blocks, img_range
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN, device="cpu").view(1, 3, 1, 1), persistent=False)
        self.conv_1 = FoldedConv(in_channels, feature_channels)
        for i in range(1, n_blocks + 1):
            self.add_module(f"block_{i}", SPAB(feature_channels))
        self.conv_cat = nn.Conv2d(feature_channels * 4, feature_channels, 1)
        self.conv_2 = FoldedConv(feature_channels, feature_channels)
        self.upsampler = nn.Sequential(nn.Conv2d(feature_channels, out_channels * scale * scale, 3, padding=1),
                                       nn.PixelShuffle(scale))
        icnr_(self.upsampler[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1((x - self.mean.to(x.dtype)) * self.img_range)
        out, first = feat, None
        taps = []
        for i in range(1, self.n_blocks + 1):
            out, inner = getattr(self, f"block_{i}")(out)
            if i == 1:
                first = out
            if i == self.n_blocks:
                taps = [first, inner]  # block 1's output and the last block's first conv
        return self.upsampler(self.conv_cat(torch.cat([feat, self.conv_2(out), *taps], dim=1)))


@register_model
def span_x4(**kw) -> SPAN:
    """SPAN, 48 features and 6 blocks (the paper's size); the NTIRE 2024 slim entries are 28 and 26."""
    return SPAN(**{"scale": 4, **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    needed = ("conv_1.eval_conv.weight", "block_1.c1_r.eval_conv.weight", "conv_cat.weight",
              "conv_2.eval_conv.weight", "upsampler.0.weight")
    if not all(k in state_dict for k in needed) or conv_scale(state_dict, "upsampler.0.weight") != 4:
        return None
    feat, in_ch = state_dict["conv_1.eval_conv.weight"].shape[:2]
    return "span_x4", {"feature_channels": int(feat), "in_channels": int(in_ch),
                       "n_blocks": count_keys(state_dict, r"block_\d+\.c1_r\.eval_conv\.weight")}
