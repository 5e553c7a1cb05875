"""U-Net decoder on a torchvision ResNet34 encoder (as segmentation_models_pytorch builds it).

ImageNet encoder weights are used only when given as a local file (``load_encoder_weights``); nothing
is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pixbatch.models._registry import register_model
from pixbatch.models.layers import conv_bn_relu, match_size
from pixbatch.models.seg._common import SegModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.block = nn.Sequential(*conv_bn_relu(cin + cskip, cout), *conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([match_size(x, skip), skip], dim=1)
        return self.block(x)


class ResNetUNet(SegModel):
    def __init__(self, in_channels: int = 3, num_classes: int = 1,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)) -> None:
        from torchvision.models import resnet34

        super().__init__(in_channels, num_classes, 32)
        enc = resnet34(weights=None)
        if in_channels != 3:
            enc.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(enc.conv1, enc.bn1, enc.relu)  # 1/2, 64
        self.pool = enc.maxpool
        self.layers = nn.ModuleList([enc.layer1, enc.layer2, enc.layer3, enc.layer4])  # 1/4 .. 1/32
        skips = (256, 128, 64, 64, 0)  # layer3, layer2, layer1, stem, none
        cins = (512,) + tuple(decoder_channels[:-1])
        self.decoder = nn.ModuleList([DecoderBlock(ci, cs, co) for ci, cs, co in zip(cins, skips, decoder_channels)])
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else (0.5,) * in_channels)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else (0.25,) * in_channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def _rf_size(self) -> int:
        # stem 7x7/2, max-pool 3x3/2, then ResNet34's 3x3 convs per stage (3, 4, 6, 3 blocks x 2 convs),
        # then the decoder's nearest upsampling + two 3x3 convs per level and the 3x3 head.
        size = 1 + 6 + 2 * 2
        jump = 4
        for stage, blocks in enumerate((3, 4, 6, 3)):
            if stage:
                size += 2 * jump  # the stride-2 conv, at the incoming resolution
                jump *= 2
                size += 2 * jump * (2 * blocks - 1)
            else:
                size += 2 * jump * 2 * blocks
        for _ in range(5):
            size += jump  # nearest upsampling
            jump //= 2
            size += 4 * jump
        return size + 2

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        feats = [self.stem(x)]
        x = self.pool(feats[0])
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        skips = [feats[3], feats[2], feats[1], feats[0], None]
        x = feats.pop()
        for block, skip in zip(self.decoder, skips):
            x = block(x, skip)
        return self.head(x)


def load_encoder_weights(model: ResNetUNet, path: Path) -> int:
    """Load torchvision ResNet34 ImageNet weights from a local file (weights_only); returns tensors loaded."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a ResNet34 state dict")
    mapping = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    mapping.update({f"layer{i}.": f"layers.{i - 1}." for i in range(1, 5)})
    own = model.state_dict()
    loaded = {}
    for key, value in state.items():
        for src, dst in mapping.items():
            if key.startswith(src) and dst + key[len(src):] in own:
                target = dst + key[len(src):]
                if own[target].shape != value.shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(own[target].shape)}")
                loaded[target] = value
    if not loaded:
        raise ValueError(f"{path}: no ResNet34 encoder weights found")
    model.load_state_dict(loaded, strict=False)
    return len(loaded)


@register_model
def resnet34_unet(**kw) -> ResNetUNet:
    """U-Net decoder on a ResNet34 encoder (ImageNet weights from a local file via `train seg --encoder-weights`)."""
    return ResNetUNet(**kw)
