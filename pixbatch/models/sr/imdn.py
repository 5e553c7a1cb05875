"""IMDN (Hui et al. 2019, "Lightweight Image Super-Resolution with Information Multi-distillation
Network"), written for pixbatch with the parameter names of the authors' release so their
checkpoints load with ``weights_only=True``. RGB in [0, 1], no mean shift.

Its contrast-aware channel attention pools over the whole image, so the receptive field is global:
tiled output only approximates whole-image output.
"""

from __future__ import annotations

import torch
from torch import nn

from pixbatch.models._registry import register_model
from pixbatch.models.info import ImageModel
from pixbatch.models.layers import ContrastChannelAttention, icnr_


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2)


class DistillationBlock(nn.Module):
    """Progressive refinement: each 3x3 conv keeps a quarter of its channels and refines the rest."""

    def __init__(self, channels: int = 64, distillation_rate: float = 0.25) -> None:
        super().__init__()
        self.kept = int(channels * distillation_rate)
        self.rest = channels - self.kept
        self.c1 = _conv(channels, channels, 3)
        self.c2 = _conv(self.rest, channels, 3)
        self.c3 = _conv(self.rest, channels, 3)
        self.c4 = _conv(self.rest, self.kept, 3)
        self.act = nn.LeakyReLU(0.05, inplace=True)
        self.c5 = _conv(self.kept * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.kept * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, out = [], x
        for conv in (self.c1, self.c2, self.c3):
            d, out = torch.split(self.act(conv(out)), (self.kept, self.rest), dim=1)
            kept.append(d)
        kept.append(self.c4(out))
        return self.c5(self.cca(torch.cat(kept, dim=1))) + x


class IMDN(ImageModel):
    def __init__(self, scale: int = 4, in_nc: int = 3, nf: int = 64, num_modules: int = 6, out_nc: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.fea_conv = _conv(in_nc, nf, 3)
        for i in range(1, num_modules + 1):
            self.add_module(f"IMDB{i}", DistillationBlock(nf))
        self.num_modules = num_modules
        self.c = nn.Sequential(_conv(nf * num_modules, nf, 1), nn.LeakyReLU(0.05, inplace=True))
        self.LR_conv = _conv(nf, nf, 3)
        self.upsampler = nn.Sequential(_conv(nf, out_nc * scale * scale, 3), nn.PixelShuffle(scale))
        icnr_(self.upsampler[0].weight, scale)

    receptive_field = None  # global (channel attention pools over the image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs, out = [], fea
        for i in range(1, self.num_modules + 1):
            out = getattr(self, f"IMDB{i}")(out)
            outs.append(out)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea)


@register_model
def imdn_x2(**kw) -> IMDN:
    return IMDN(**{"scale": 2, **kw})


@register_model
def imdn_x3(**kw) -> IMDN:
    return IMDN(**{"scale": 3, **kw})


@register_model
def imdn_x4(**kw) -> IMDN:
    return IMDN(**{"scale": 4, **kw})


def recognise(state_dict: dict[str, torch.Tensor], scale: int | None = None) -> tuple[str, dict] | None:
    """(registered name, kwargs) when the keys and shapes are IMDN's, else None; the scale is the
    file's own (from the upsampler's out-channels)."""
    needed = ("fea_conv.weight", "IMDB1.c1.weight", "c.0.weight", "LR_conv.weight", "upsampler.0.weight")
    if not all(k in state_dict for k in needed):
        return None
    nf, in_nc = state_dict["fea_conv.weight"].shape[:2]
    modules = sum(1 for k in state_dict if k.startswith("IMDB") and k.endswith(".c1.weight"))
    out_total = state_dict["upsampler.0.weight"].shape[0]
    for out_nc in (3, 1):
        scale = round((out_total / out_nc) ** 0.5)
        if scale * scale * out_nc == out_total and scale in (2, 3, 4):
            kwargs = {"in_nc": int(in_nc), "nf": int(nf), "num_modules": modules, "out_nc": out_nc}
            return f"imdn_x{scale}", kwargs
    return None
