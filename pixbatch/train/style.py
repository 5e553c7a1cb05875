"""Train a fast style-transfer net (Johnson et al. 2016) for one style image.

Random square crops of a folder of content photos go through the net; the loss compares, in VGG16
feature space, the output with the content photo (relu2_2) and the Gram matrices of the output with
the style image's (relu1_2, relu2_2, relu3_3, relu4_3), plus total variation. Adam with the shared
one-cycle loop (train/loop.py): AMP, checkpoint/resume, progress bar with each loss; a preview of a
fixed content photo is written every few hundred steps. CLI: ``pixbatch train style``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu2_2"


@dataclass
class StyleTrainConfig:
    style: Path  # the style image
    content: list[Path]  # folders of content photos
    out: Path
    arch: str = "johnson_style"
    model_kwargs: dict = field(default_factory=dict)
    vgg_weights: Path | None = None
    steps: int = 20000
    batch_size: int = 4
    size: int = 256  # content crops, px
    style_size: int | None = None  # longer side of the style image (None = as it is)
    lr: float = 1e-3
    content_weight: float = 1e5  # on mean squared VGG activations of [0, 1] images, as PyTorch's example
    style_weight: float = 1e10  # on mean squared Gram matrices (normalised by C x H x W)
    tv_weight: float = 1e2  # on mean squared differences of neighbouring output pixels ([0, 1])
    preview: Path | None = None  # a content photo stylised every preview_every steps (default: the first)
    preview_every: int = 500
    amp: bool | None = None
    seed: int = 0
    threads: int = 0
    save_every: int | None = 1000
    save_minutes: float | None = None  # or every this many minutes
    resume: bool = False
    command: str = field(default="", repr=False)


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices normalised by C x H x W, in fp32."""
    n, c, h, w = f.shape
    f = f.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).square().mean() + (x[..., :, 1:] - x[..., :, :-1]).square().mean()


class StyleLoss(nn.Module):
    """content_weight x content + style_weight x style + tv_weight x TV; ``parts`` holds the last
    weighted terms for the progress line."""

    def __init__(self, vgg: nn.Module, style_image: torch.Tensor, content_weight: float, style_weight: float,
                 tv_weight: float, amp: torch.dtype | None = None) -> None:
        super().__init__()
        self.vgg, self.amp = vgg, amp
        self.weights = (content_weight, style_weight, tv_weight)
        with torch.no_grad():
            feats = self._features(style_image)
            self.targets = {k: gram(feats[k]) for k in STYLE_LAYERS}
        self.parts: dict[str, float] = {}

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(x.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            return self.vgg(x)

    def forward(self, out: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        fo = self._features(out)
        with torch.no_grad():
            fc = self._features(content)[CONTENT_LAYER]
        wc, ws, wt = self.weights
        c = wc * F.mse_loss(fo[CONTENT_LAYER].float(), fc.float())
        s = ws * sum(F.mse_loss(gram(fo[k]), self.targets[k].expand(out.shape[0], -1, -1)) for k in STYLE_LAYERS)
        t = wt * total_variation(out)
        self.parts = {"content": c.item(), "style": s.item(), "tv": t.item()}
        return c + s + t


class ContentCrops:
    """Random crops of the content photos, decoded as needed (a folder may hold many thousands):
    each photo's shorter side resized to the crop size, then a random square and a random flip.
    Files that cannot be decoded are skipped (and counted)."""

    def __init__(self, folders: list[Path], size: int, rng: random.Random,
                 on_error: Callable[[Path, str], None] | None = None) -> None:
        from pixbatch.io.discover import image_paths

        self.paths = image_paths(folders)
        if not self.paths:
            raise ValueError(f"no content images in {', '.join(map(str, folders))}")
        self.size, self.rng, self.on_error = size, rng, on_error
        self.skipped: set[Path] = set()

    def crop(self) -> torch.Tensor:
        from pixbatch.io.decode import DecodeError

        for _ in range(100):
            path = self.paths[self.rng.randrange(len(self.paths))]
            try:
                img = load_rgb(path)
            except (DecodeError, OSError) as exc:
                if path not in self.skipped and self.on_error is not None:
                    self.on_error(path, str(exc))
                self.skipped.add(path)
                if len(self.skipped) == len(self.paths):
                    break
                continue
            h, w = img.shape[-2:]
            f = self.size / min(h, w)
            img = F.interpolate(img[None], size=(max(self.size, round(h * f)), max(self.size, round(w * f))),
                                mode="bilinear", antialias=True, align_corners=False)[0]
            y = self.rng.randrange(img.shape[1] - self.size + 1)
            x = self.rng.randrange(img.shape[2] - self.size + 1)
            img = img[:, y:y + self.size, x:x + self.size]
            return img.flip(-1) if self.rng.random() < 0.5 else img
        raise ValueError("none of the content images could be decoded")

    def batch(self, n: int) -> torch.Tensor:
        return torch.stack([self.crop() for _ in range(n)]).clamp_(0, 1)


def load_rgb(path: Path, max_side: int | None = None) -> torch.Tensor:
    """An image file as (3, H, W) float in [0, 1], upright, optionally shrunk to ``max_side``."""
    from pixbatch.io.decode import decode_rgb8

    img = torch.from_numpy(np.ascontiguousarray(decode_rgb8(path))).permute(2, 0, 1).float().div_(255)
    h, w = img.shape[-2:]
    if max_side is not None and max(h, w) > max_side:
        f = max_side / max(h, w)
        img = F.interpolate(img[None], size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear",
                            antialias=True, align_corners=False)[0]
    return img


def save_preview(net: nn.Module, photo: torch.Tensor, path: Path) -> None:
    """The net's output for ``photo`` as a PNG, written atomically."""
    from pixbatch.io.decode import ImageMeta
    from pixbatch.io.encode import EncodeOptions, write_image

    h, w = (s // 4 * 4 for s in photo.shape[-2:])
    y = net(photo[None, :, :h, :w])[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    write_image(y.cpu().numpy(), ImageMeta("RGB", 8, "PNG"), path, EncodeOptions(overwrite=True))


def train_style(cfg: StyleTrainConfig, device: torch.device | None = None, progress: bool = True,
                on_error: Callable[[Path, str], None] | None = None) -> dict:
    """Train and save ``cfg.out`` (safetensors, the recipe in its metadata). Returns the recipe."""
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.train.loop import LoopOptions, TrainLoop, seed_everything
    from pixbatch.train.vgg import VGGFeatures

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = seed_everything(cfg.seed, cfg.threads)
    model = create_model(cfg.arch, pretrained=False, **cfg.model_kwargs)
    if model.info.task != "style":
        raise ValueError(f"{cfg.arch} is not a style net; use johnson_style or mobilenet_style")
    net = model.module.to(device).train()
    vgg = VGGFeatures(STYLE_LAYERS, cfg.vgg_weights, purpose="training a style net").to(device)
    crops = ContentCrops(cfg.content, cfg.size, rng, on_error)
    preview = load_rgb(cfg.preview or crops.paths[0], max_side=512).to(device)
    preview_path = cfg.out.with_name(f"{cfg.out.stem}_preview.png")
    loop = TrainLoop(net, LoopOptions(steps=cfg.steps, lr=cfg.lr, clip=10.0, amp=cfg.amp,
                                      val_every=cfg.preview_every, save_every=cfg.save_every,
                                      save_minutes=cfg.save_minutes, resume=cfg.resume),
                     device, Path(str(cfg.out) + ".state"), rng, progress=progress)
    style = load_rgb(cfg.style, cfg.style_size).to(device)[None]
    loss_fn = StyleLoss(vgg, style, cfg.content_weight, cfg.style_weight, cfg.tv_weight, loop.amp)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = crops.batch(cfg.batch_size).to(device)
        return x, x

    def status() -> str:
        return " ".join(f"{k} {v:.3g}" for k, v in loss_fn.parts.items())

    def validate(step: int) -> tuple[str, dict[str, float]]:
        save_preview(net, preview, preview_path)
        return f"preview {preview_path.name}", {}

    loop.run(batch, loss_fn, validate, status=status)
    recipe = loop.recipe(cfg, final_losses={k: round(v, 4) for k, v in loss_fn.parts.items()},
                         unreadable_content=len(crops.skipped))
    save_checkpoint(net.eval(), cfg.out, name=cfg.arch, kwargs=cfg.model_kwargs, training=recipe)
    loop.finish()
    return recipe
