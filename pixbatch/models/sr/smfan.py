"""SMFAN, an NTIRE 2024 efficient-SR entry built on SMFA (self-modulation feature aggregation, Zheng et
al. 2024, "SMFANet"): per block, a branch gated by a 1/8-resolution max-pooled map plus the channel
variance over the whole image, a local depthwise branch, and a partial-conv feed-forward, each after
per-pixel L2 normalisation. Written for pixbatch with the parameter names of the challenge release.
RGB in [0, 1]. The variance is the whole image's: the receptive field is unbounded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import conv_scale, count_keys, icnr_


class DMlp(nn.Module):
    """Local detail branch: depthwise 3x3 expanding x2, pointwise, GELU, pointwise back."""

    def __init__(self, dim: int, growth: float = 2.0) -> None:
        super().__init__()
        hidden = int(dim * growth)
        self.conv_0 = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1, groups=dim), nn.Conv2d(hidden, hidden, 1))
        self.conv_1 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(F.gelu(self.conv_0(x)))


class PCFN(nn.Module):
    """Partial-conv feed-forward: pointwise expand, a 3x3 conv on the first quarter, pointwise back."""

    def __init__(self, dim: int, growth: float, p_rate: float = 0.25) -> None:
        super().__init__()
        hidden = int(dim * growth)
        self.p_dim, self.hidden = int(hidden * p_rate), hidden
        self.conv_0 = nn.Conv2d(dim, hidden, 1)
        self.conv_1 = nn.Conv2d(self.p_dim, self.p_dim, 3, padding=1)
        self.conv_2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part, rest = F.gelu(self.conv_0(x)).split([self.p_dim, self.hidden - self.p_dim], dim=1)
        return self.conv_2(torch.cat([F.gelu(self.conv_1(part)), rest], dim=1))


class SMFA(nn.Module):
    down = 8

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_0 = nn.Conv2d(dim, dim * 2, 1)
        self.linear_1 = nn.Conv2d(dim, dim, 1)
        self.linear_2 = nn.Conv2d(dim, dim, 1)
        self.lde = DMlp(dim, 2.0)
        self.dw_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h, w = f.shape[-2:]
        y, x = self.linear_0(f).chunk(2, dim=1)
        coarse = self.dw_conv(F.adaptive_max_pool2d(x, (h // self.down, w // self.down)))
        var = torch.var(x, dim=(-2, -1), keepdim=True)  # unbiased, as trained
        gate = F.interpolate(F.gelu(self.linear_1(coarse + var)), size=(h, w), mode="nearest")
        return self.linear_2(x * gate + self.lde(y))


class FMB(nn.Module):
    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.smfa = SMFA(dim)
        self.pcfn = PCFN(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.smfa(F.normalize(x)) + x
        return self.pcfn(F.normalize(x)) + x


class SMFAN(ImageModel):
    receptive_field = None  # unbounded: whole-image variance and 1/8-resolution pooling
    min_size = 8

    def __init__(self, scale: int = 4, dim: int = 24, n_blocks: int = 8, ffn_scale: float = 1.5) -> None:
        super().__init__()
        self.scale = scale
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.feats = nn.Sequential(*(FMB(dim, ffn_scale) for _ in range(n_blocks)))
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1, bias=False), nn.PixelShuffle(scale))
        icnr_(self.to_img[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_feat(x)
        return self.to_img(self.feats(x) + x)


@register_model
def smfan_x4(**kw) -> SMFAN:
    """The NTIRE 2024 entry's configuration: 24 features, 8 blocks (84K parameters)."""
    return SMFAN(**{"scale": 4, **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    needed = ("to_feat.weight", "feats.0.smfa.linear_0.weight", "feats.0.pcfn.conv_0.weight", "to_img.0.weight")
    if not all(k in state_dict for k in needed) or conv_scale(state_dict, "to_img.0.weight") != 4:
        return None
    dim = int(state_dict["to_feat.weight"].shape[0])
    return "smfan_x4", {"dim": dim, "ffn_scale": int(state_dict["feats.0.pcfn.conv_0.weight"].shape[0]) / dim,
                        "n_blocks": count_keys(state_dict, r"feats\.\d+\.smfa\.linear_0\.weight")}
