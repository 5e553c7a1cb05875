"""SAFMN (Sun et al. 2023, "Spatially-Adaptive Feature Modulation for Efficient Image Super-Resolution")
as entered in the NTIRE 2023 efficient-SR challenge, and its successor SAFMN++ from NTIRE 2024; written
for pixbatch with the parameter names of the authors' releases. RGB in [0, 1]; both add a bilinear x4
of the input to what the net predicts.

Both modulate features with maps max-pooled to a fixed fraction of the input size (SAFMN: 1/4, 1/8
and 1/16; SAFMN++: 1/8), and SAFMN normalises with statistics of the whole image: the receptive field
is unbounded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import conv_scale, count_keys, icnr_


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2): each channel scaled by its L2 norm over the image
    relative to the mean norm of all channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
        return self.gamma * (x * (gx / (gx.mean(dim=1, keepdim=True) + 1e-6))) + self.beta + x


class CCM(nn.Module):
    """Convolutional channel mixer: 3x3 conv to ``ffn_scale`` x the channels, GELU, 1x1 back."""

    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        hidden = int(dim * ffn_scale)
        self.ccm = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1, bias=False), nn.GELU(),
                                 nn.Conv2d(hidden, dim, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ccm(x)


class SAFM(nn.Module):
    """Spatially-adaptive feature modulation: four channel groups, each through a depthwise 3x3 at
    full, 1/4, 1/8 and 1/16 resolution (max-pooled, upsampled nearest), fused, and used as a GELU gate."""

    def __init__(self, dim: int, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels
        chunk = dim // levels
        self.mfr = nn.ModuleList(nn.Conv2d(chunk, chunk, 3, padding=1, groups=chunk, bias=False) for _ in range(levels))
        self.aggr = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for i, (part, conv) in enumerate(zip(x.chunk(self.levels, dim=1), self.mfr)):
            if i == 0:
                out.append(conv(part))
            else:
                pooled = F.adaptive_max_pool2d(part, (h // 2 ** (i + 1), w // 2 ** (i + 1)))
                out.append(F.interpolate(conv(pooled), size=(h, w), mode="nearest"))
        return F.gelu(self.aggr(torch.cat(out, dim=1))) * x


class SAFMBlock(nn.Module):
    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.safm = SAFM(dim)
        self.ccm = CCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.safm(x) + x
        return self.ccm(x) + x


class SAFMN(ImageModel):
    """The NTIRE 2023 variant: a GRN after the first conv, no per-block LayerNorm."""

    receptive_field = None  # unbounded: whole-image normalisation and pooling
    min_size = 16  # the coarsest modulation level pools to 1/16 of the input

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 8, ffn_scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale
        self.norm = GRN(dim)
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1)
        self.feats = nn.Sequential(*(SAFMBlock(dim, ffn_scale) for _ in range(n_blocks)))
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        icnr_(self.to_img[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.to_img(self.feats(self.norm(self.to_feat(x)))) + base


class SimpleSAFM(nn.Module):
    """SAFMN++'s modulation: a 3x3 projection; one third of the channels gated by a 1/8-resolution
    depthwise map of themselves (bilinear back up), the rest passed on; GELU; 1x1 fusion."""

    def __init__(self, dim: int, ratio: int = 3) -> None:
        super().__init__()
        self.dim, self.chunk_dim = dim, dim // ratio
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.dwconv = nn.Conv2d(self.chunk_dim, self.chunk_dim, 3, padding=1, groups=self.chunk_dim, bias=False)
        self.out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x0, x1 = self.proj(x).split([self.chunk_dim, self.dim - self.chunk_dim], dim=1)
        gate = self.dwconv(F.adaptive_max_pool2d(x0, (h // 8, w // 8)))
        gate = F.interpolate(gate, size=(h, w), mode="bilinear", align_corners=False)
        return self.out(F.gelu(torch.cat([x1, F.gelu(gate) * x0], dim=1)))


class MixerCCM(nn.Module):
    """SAFMN++'s channel mixer (keys ``conv1``/``conv2``)."""

    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        hidden = int(dim * ffn_scale)
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class SAFMNPPBlock(nn.Module):
    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.conv1 = SimpleSAFM(dim)
        self.conv2 = MixerCCM(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


class SAFMNPP(ImageModel):
    receptive_field = None  # unbounded: pooling to 1/8 of the whole input
    min_size = 8

    def __init__(self, scale: int = 4, dim: int = 36, n_blocks: int = 6, ffn_scale: float = 1.5) -> None:
        super().__init__()
        self.scale = scale
        self.to_feat = nn.Conv2d(3, dim, 3, padding=1, bias=False)
        self.feats = nn.Sequential(*(SAFMNPPBlock(dim, ffn_scale) for _ in range(n_blocks)))
        self.to_img = nn.Sequential(nn.Conv2d(dim, 3 * scale * scale, 3, padding=1, bias=False), nn.PixelShuffle(scale))
        icnr_(self.to_img[0].weight, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.to_img(self.feats(self.to_feat(x))) + base


@register_model
def safmn_ntire_x4(**kw) -> SAFMN:
    """SAFMN as entered in NTIRE 2023: 36 features, 8 blocks, mixer x2 (237K parameters)."""
    return SAFMN(**{"scale": 4, **kw})


@register_model
def safmnpp_x4(**kw) -> SAFMNPP:
    """SAFMN++ (NTIRE 2024): 36 features, 6 blocks, mixer x1.5 (212K parameters)."""
    return SAFMNPP(**{"scale": 4, **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    if not all(k in state_dict for k in ("to_feat.weight", "to_img.0.weight")) or conv_scale(state_dict, "to_img.0.weight") != 4:
        return None
    dim = int(state_dict["to_feat.weight"].shape[0])
    if "norm.gamma" in state_dict and "feats.0.safm.aggr.weight" in state_dict and "feats.0.ccm.ccm.0.weight" in state_dict:
        hidden = int(state_dict["feats.0.ccm.ccm.0.weight"].shape[0])
        return "safmn_ntire_x4", {"dim": dim, "n_blocks": count_keys(state_dict, r"feats\.\d+\.safm\.aggr\.weight"),
                                  "ffn_scale": hidden / dim}
    if "feats.0.conv1.proj.weight" in state_dict and "feats.0.conv2.conv1.weight" in state_dict:
        hidden = int(state_dict["feats.0.conv2.conv1.weight"].shape[0])
        return "safmnpp_x4", {"dim": dim, "n_blocks": count_keys(state_dict, r"feats\.\d+\.conv1\.proj\.weight"),
                              "ffn_scale": hidden / dim}
    return None
