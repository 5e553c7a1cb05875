"""VGG16 ImageNet features for the losses that compare images in a classifier's feature space
(perceptual loss for super-resolution, content and Gram style losses for style transfer). The
weights come from a local file only (torchvision's ``vgg16-397923af.pth`` layout), never the network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# indices in torchvision's vgg16().features of the ReLUs the losses read
RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WHERE_TO_GET = ("torchvision's ImageNet VGG16 file is vgg16-397923af.pth (VGG16_Weights.IMAGENET1K_V1); on a "
                "machine with internet, `python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\"` "
                "downloads it into the torch hub cache (~/.cache/torch/hub/checkpoints/), where pixbatch finds it")


def find_cached_vgg16() -> Path | None:
    """torchvision's VGG16 file in the torch hub cache, if someone put it there."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(cache.glob("vgg16-*.pth")) if cache.is_dir() else []
    return found[0] if found else None


class VGGFeatures(nn.Module):
    """Frozen VGG16 up to the deepest requested ReLU; images in [0, 1] in, {name: activation} out."""

    def __init__(self, layers: tuple[str, ...], weights_path: Path | None = None, *, purpose: str = "this loss") -> None:
        super().__init__()
        from torchvision.models import vgg16

        path = weights_path or find_cached_vgg16()
        if path is None:
            raise FileNotFoundError(
                f"{purpose} needs VGG16 ImageNet weights: pass --vgg-weights PATH or put the file in the torch "
                f"hub cache; pixbatch never downloads them; {WHERE_TO_GET}")
        self.taps = {RELU[name]: name for name in layers}
        last = max(self.taps)
        self.features = vgg16(weights=None).features[: last + 1].eval()
        try:  # the whole network's file, or one with only the convolutional part ("features.*")
            state = torch.load(path, map_location="cpu", weights_only=True)
            own = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
                   and int(k.split(".")[1]) <= last}
            self.features.load_state_dict(own, strict=True)
        except Exception as exc:  # not a file, not plain weights, or not VGG16's
            raise FileNotFoundError(f"{path}: not torchvision VGG16 weights ({type(exc).__name__})") from None
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out, x = {}, (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out[self.taps[i]] = x
        return out
