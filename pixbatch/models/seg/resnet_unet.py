"""U-Net decoder on a ResNet34 encoder (as segmentation_models_pytorch builds it).

The encoder is torchvision's ResNet34, written here with torchvision's module layout, so its
ImageNet weight files load as they are (``load_encoder_weights``, a local file only: nothing is ever
downloaded) and importing the model does not import torchvision (which costs a second and a half)."""

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


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


def resnet34_stages() -> nn.ModuleList:
    """layer1..layer4 of ResNet34 (3, 4, 6, 3 basic blocks; 64, 128, 256, 512 channels)."""
    stages, cin = [], 64
    for i, (blocks, cout) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        layers = [BasicBlock(cin, cout, 1 if i == 0 else 2)] + [BasicBlock(cout, cout) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*layers))
        cin = cout
    return nn.ModuleList(stages)


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
        super().__init__(in_channels, num_classes, 32)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True))  # 1/2, 64
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layers = resnet34_stages()  # 1/4 .. 1/32
        for m in [*self.stem.modules(), *self.layers.modules()]:  # torchvision's initialisation of the encoder
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:  # (nothing to initialise in a shapes-only build)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
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
