"""RLFN (Kong et al. 2022, "Residual Local Feature Network for Efficient Super-Resolution"), the
winner of the NTIRE 2022 efficient-SR challenge, written for pixbatch with the parameter names of the
challenge's release (``conv_1``/``block_N``/``conv_2``; the 2022 ``fea_conv``/``B1``/``LR_conv`` names
load too). Its published weights take RGB in [0, 255]: the module scales [0, 1] in and out itself.

Each block ends in enhanced spatial attention (strided conv, 7x7 max-pool, bilinear upsampling back
to the image): the pooling grid is laid on the whole input, so the receptive field is unbounded and a
tile's output only approximates the whole image's.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import conv_scale, count_keys, icnr_


def _conv(c_in: int, c_out: int, k: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=kw.pop("padding", (k - 1) // 2), **kw)


class ESA(nn.Module):
    """Enhanced spatial attention: a per-pixel sigmoid gate computed at 1/6 resolution."""

    def __init__(self, esa_channels: int, channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = _conv(channels, f, 1)
        self.conv_f = _conv(f, f, 1)
        self.conv2 = _conv(f, f, 3, stride=2, padding=0)
        self.conv3 = _conv(f, f, 3)
        self.conv4 = _conv(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(pooled), x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1)))


class RLFB(nn.Module):
    """Residual local feature block: three 3x3 convs with a skip, a 1x1 conv, spatial attention."""

    def __init__(self, channels: int, mid: int, esa_channels: int = 16) -> None:
        super().__init__()
        self.c1_r = _conv(channels, mid, 3)
        self.c2_r = _conv(mid, mid, 3)
        self.c3_r = _conv(mid, channels, 3)
        self.c5 = _conv(channels, channels, 1)
        self.esa = ESA(esa_channels, channels)
        self.act = nn.LeakyReLU(0.05, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(out + x))


class RLFN(ImageModel):
    receptive_field = None  # unbounded: the attention's pooling grid spans the whole input
    min_size = 15  # the attention pools a 7x7 window of a stride-2 conv's output

    def __init__(self, scale: int = 4, in_channels: int = 3, out_channels: int = 3, feature_channels: int = 46,
                 mid_channels: int = 48, n_blocks: int = 4, esa_channels: int = 16, img_range: float = 255.0) -> None:
        super().__init__()
        self.scale, self.in_channels, self.out_channels = scale, in_channels, out_channels
        self.img_range = img_range
        self.n_blocks = n_blocks
        self.conv_1 = _conv(in_channels, feature_channels, 3)
        for i in range(1, n_blocks + 1):
            self.add_module(f"block_{i}", RLFB(feature_channels, mid_channels, esa_channels))
        self.conv_2 = _conv(feature_channels, feature_channels, 3)
        self.upsampler = nn.Sequential(_conv(feature_channels, out_channels * scale * scale, 3), nn.PixelShuffle(scale))
        icnr_(self.upsampler[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_1(x * self.img_range)
        out = feat
        for i in range(1, self.n_blocks + 1):
            out = getattr(self, f"block_{i}")(out)
        return self.upsampler(self.conv_2(out) + feat) / self.img_range


@register_model
def rlfn_x4(**kw) -> RLFN:
    """The NTIRE 2022/2024 configuration: 46 features, 48 inside each of 4 blocks."""
    return RLFN(**{"scale": 4, **kw})


@register_model
def rlfn_x2(**kw) -> RLFN:
    """rlfn_x4's body with an x2 upsampler (``pixbatch train sr --init rlfn_x4`` starts it from x4's)."""
    return RLFN(**{"scale": 2, **kw})


@register_model
def rlfn_x3(**kw) -> RLFN:
    """rlfn_x4's body with an x3 upsampler."""
    return RLFN(**{"scale": 3, **kw})


@register_model
def real_x4(**kw) -> RLFN:
    """rlfn_x4 fine-tuned for real photos (``--degrade real``): blur, noise and JPEG removed, ``--denoise``."""
    return RLFN(**{"scale": 4, **kw})


@register_model
def real_x2(**kw) -> RLFN:
    """rlfn_x2 fine-tuned for real photos (``--degrade real``): blur, noise and JPEG removed, ``--denoise``."""
    return RLFN(**{"scale": 2, **kw})


# The NTIRE 2022 release names the same tensors differently.
_RENAMES = ((re.compile(r"^fea_conv\."), "conv_1."), (re.compile(r"^B(\d+)\."), r"block_\1."),
            (re.compile(r"^LR_conv\."), "conv_2."))


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict, dict] | None:
    """(registered name, kwargs, the tensors under our names) for either release's layout."""
    if "B1.esa.conv_f.weight" in state_dict and "LR_conv.weight" in state_dict:
        renamed = {}
        for key, value in state_dict.items():
            for pattern, repl in _RENAMES:
                key = pattern.sub(repl, key)
            renamed[key] = value
        state_dict = renamed
    needed = ("conv_1.weight", "block_1.c1_r.weight", "block_1.esa.conv_f.weight", "conv_2.weight",
              "upsampler.0.weight")
    if not all(k in state_dict for k in needed) or (found := conv_scale(state_dict, "upsampler.0.weight")) not in (2, 3, 4):
        return None
    feat, in_ch = state_dict["conv_1.weight"].shape[:2]
    kwargs = {"in_channels": int(in_ch), "feature_channels": int(feat),
              "mid_channels": int(state_dict["block_1.c1_r.weight"].shape[0]),
              "n_blocks": count_keys(state_dict, r"block_\d+\.c1_r\.weight"),
              "esa_channels": int(state_dict["block_1.esa.conv1.weight"].shape[0])}
    return f"rlfn_x{found}", kwargs, state_dict
