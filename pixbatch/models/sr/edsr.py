"""EDSR / SRResNet-style residual networks without batch norm (Lim et al. 2017; Ledig et al. 2017).

Inputs and outputs are RGB in [0, 1], NCHW. Every upsampler is conv -> PixelShuffle with ICNR init.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import DIV2K_MEAN, Upsampler, make_act


class ResBlock(nn.Module):
    """conv -> act -> conv, scaled and added to the input (no batch norm)."""

    def __init__(self, n_feats: int, res_scale: float, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.act = make_act(act, n_feats)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x))) * self.res_scale


class EDSR(ImageModel):
    """EDSR: head conv, residual body with a long skip, upsampler, tail conv; mean shift around it."""

    def __init__(
        self,
        scale: int = 4,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 0.1,
        n_colors: int = 3,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.scale = scale
        self.n_resblocks = n_resblocks
        self.register_buffer("mean", torch.tensor(DIV2K_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(n_colors, n_feats, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale, act) for _ in range(n_resblocks)])
        self.body_tail = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.upsampler = Upsampler(scale, n_feats)
        self.tail = nn.Conv2d(n_feats, n_colors, 3, padding=1)

    @property
    def receptive_field(self) -> int:
        """Radius in input pixels beyond which an input pixel cannot affect an output pixel."""
        lr_convs = 1 + 2 * self.n_resblocks + 1 + 1  # head, body, body tail, first upsampler conv
        return lr_convs + 1  # later upsampler convs and the tail add under one LR pixel together

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean
        x = self.head(x)
        x = x + self.body_tail(self.body(x))
        return self.tail(self.upsampler(x)) + self.mean


class SRResNet(ImageModel):
    """SRResNet without batch norm (as in ESRGAN's MSRResNet): residual body, PReLU upsampler,
    HR convs, plus a bilinear upsample of the input so the network learns only the residual."""

    def __init__(
        self, scale: int = 4, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 0.1, n_colors: int = 3
    ) -> None:
        super().__init__()
        self.scale = scale
        self.n_resblocks = n_resblocks
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1), nn.PReLU(n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale, "prelu") for _ in range(n_resblocks)])
        self.upsampler = Upsampler(scale, n_feats, act="prelu")
        self.conv_hr = nn.Sequential(nn.Conv2d(n_feats, n_feats, 3, padding=1), nn.PReLU(n_feats))
        self.tail = nn.Conv2d(n_feats, n_colors, 3, padding=1)
        with torch.no_grad():  # start close to the bilinear skip (zeros would block every gradient)
            self.tail.weight.mul_(0.1)
            self.tail.bias.zero_()

    @property
    def receptive_field(self) -> int:
        # head, body, first upsampler conv at LR; +1 covers the HR convs and the bilinear skip.
        return 1 + 2 * self.n_resblocks + 1 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        feat = self.head(x)
        feat = self.body(feat) + feat
        return self.tail(self.conv_hr(self.upsampler(feat))) + base


def _create_edsr(**kwargs) -> EDSR:
    return EDSR(**kwargs)


def _create_srresnet(**kwargs) -> SRResNet:
    return SRResNet(**kwargs)


# Small EDSR: the fast default family (8 blocks, 32 features).
@register_model
def edsr_tiny_x2(**kw) -> EDSR:
    return _create_edsr(**{"scale": 2, "n_resblocks": 8, "n_feats": 32, **kw})


@register_model
def edsr_tiny_x3(**kw) -> EDSR:
    return _create_edsr(**{"scale": 3, "n_resblocks": 8, "n_feats": 32, **kw})


@register_model
def edsr_tiny_x4(**kw) -> EDSR:
    return _create_edsr(**{"scale": 4, "n_resblocks": 8, "n_feats": 32, **kw})


# EDSR-baseline sizes (16 blocks, 64 features), residual scaling 0.1.
@register_model
def edsr_baseline_x2(**kw) -> EDSR:
    return _create_edsr(**{"scale": 2, "n_resblocks": 16, "n_feats": 64, **kw})


@register_model
def edsr_baseline_x3(**kw) -> EDSR:
    return _create_edsr(**{"scale": 3, "n_resblocks": 16, "n_feats": 64, **kw})


@register_model
def edsr_baseline_x4(**kw) -> EDSR:
    return _create_edsr(**{"scale": 4, "n_resblocks": 16, "n_feats": 64, **kw})


@register_model
def edsr_baseline_x8(**kw) -> EDSR:
    return _create_edsr(**{"scale": 8, "n_resblocks": 16, "n_feats": 64, **kw})


# Full EDSR sizes (32 blocks, 256 features).
@register_model
def edsr_x2(**kw) -> EDSR:
    return _create_edsr(**{"scale": 2, "n_resblocks": 32, "n_feats": 256, **kw})


@register_model
def edsr_x3(**kw) -> EDSR:
    return _create_edsr(**{"scale": 3, "n_resblocks": 32, "n_feats": 256, **kw})


@register_model
def edsr_x4(**kw) -> EDSR:
    return _create_edsr(**{"scale": 4, "n_resblocks": 32, "n_feats": 256, **kw})


@register_model
def srresnet_x2(**kw) -> SRResNet:
    return _create_srresnet(**{"scale": 2, **kw})


@register_model
def srresnet_x4(**kw) -> SRResNet:
    return _create_srresnet(**{"scale": 4, **kw})
