"""Train a super-resolution model on self-supervised pairs cut from any folder of images.

HR crops are degraded with MATLAB-compatible bicubic downscaling (rounded to 8 bits like a saved LR
image) and augmented with the 8 dihedral transforms. L1, MSE or perceptual loss; Adam with a
one-cycle schedule; AMP; gradient clipping; checkpoint/resume (the shared loop, train/loop.py);
progressive resizing from a model of a smaller scale (``--init``). CLI: ``pixbatch train sr``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class SrTrainConfig:
    data: list[Path]
    arch: str  # registered name, e.g. edsr_tiny_x4
    out: Path
    model_kwargs: dict = field(default_factory=dict)  # architecture arguments, e.g. {"n_resblocks": 16}
    steps: int = 3000
    batch_size: int = 16
    patch: int = 48  # LR patch size in px
    lr: float = 1e-3  # peak learning rate
    loss: str = "l1"  # l1 | mse | perceptual
    pixel_weight: float = 0.1  # perceptual loss: weight of the pixel L1 term
    vgg_weights: Path | None = None
    init: Path | None = None  # progressive resizing: start from this (smaller-scale) checkpoint
    freeze_steps: int = 0  # with --init: train only the new upsampler for this many steps
    amp: bool | None = None  # None: bf16 where it is fast (GPU, or a CPU with native bf16)
    seed: int = 0
    threads: int = 0
    val_every: int = 250
    save_every: int = 1000
    resume: bool = False
    command: str = field(default="", repr=False)


def load_images(folders: list[Path], min_side: int,
                on_error: Callable[[Path, str], None] | None = None) -> list[torch.Tensor]:
    """All images of the folders as upright 8-bit RGB, uint8 CHW tensors (small sets fit in memory).
    A file that cannot be decoded is reported to ``on_error`` and left out (raised without it)."""
    from pixbatch.io.decode import DecodeError, decode_rgb8
    from pixbatch.io.discover import IMAGE_SUFFIXES

    images = []
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                arr = decode_rgb8(path)
            except DecodeError as exc:
                if on_error is None:
                    raise
                on_error(path, str(exc))
                continue
            if min(arr.shape[:2]) >= min_side:
                images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
    if not images:
        raise ValueError(f"no training images of at least {min_side} px in {', '.join(map(str, folders))}")
    return images


def degrade(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB-compatible bicubic downscaling (HR in [0, 1], NCHW), rounded to 8-bit levels like the
    LR images of the standard benchmarks."""
    from pixbatch.ops.imresize import imresize

    return imresize(hr, 1 / scale).mul_(255).round_().clamp_(0, 255).div_(255)


def random_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (rotations by 90 degrees, with or without a flip)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def sample_batch(images: list[torch.Tensor], batch: int, hr_patch: int, scale: int,
                 rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    crops = []
    for _ in range(batch):
        img = images[rng.randrange(len(images))]
        _, h, w = img.shape
        y, x = rng.randrange(h - hr_patch + 1), rng.randrange(w - hr_patch + 1)
        crops.append(random_dihedral(img[:, y:y + hr_patch, x:x + hr_patch], rng.randrange(8)))
    hr = torch.stack(crops).float().div_(255)
    return degrade(hr, scale), hr


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """RGB PSNR of [0, 1] tensors, through the one PSNR definition in pixbatch.eval.metrics."""
    from pixbatch.eval.metrics import psnr as psnr_np

    return psnr_np(a.clamp(0, 1).float().cpu().numpy(), b.float().cpu().numpy(), max_val=1.0)


class PerceptualLoss(nn.Module):
    """L1 between VGG16 activations before its first three max-pools (weights 0.2/0.7/0.1), plus a
    small pixel L1 term. VGG weights come from a local file only, never from the network."""

    LAYERS = ("relu1_2", "relu2_2", "relu3_3")
    WEIGHTS = (0.2, 0.7, 0.1)

    def __init__(self, weights_path: Path | None, pixel_weight: float = 0.1) -> None:
        super().__init__()
        from pixbatch.train.vgg import VGGFeatures

        self.vgg = VGGFeatures(self.LAYERS, weights_path, purpose="the perceptual loss")
        self.pixel_weight = pixel_weight

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = self.pixel_weight * F.l1_loss(sr, hr)
        a, b = self.vgg(sr), self.vgg(hr)
        for w, name in zip(self.WEIGHTS, self.LAYERS):
            loss = loss + w * F.l1_loss(a[name], b[name])
        return loss


def make_loss(cfg: SrTrainConfig) -> nn.Module:
    if cfg.loss == "l1":
        return nn.L1Loss()
    if cfg.loss == "mse":
        return nn.MSELoss()
    if cfg.loss == "perceptual":
        return PerceptualLoss(cfg.vgg_weights, cfg.pixel_weight)
    raise ValueError(f"unknown loss {cfg.loss!r}; use l1, mse or perceptual")


def init_from_smaller_scale(net: nn.Module, path: Path) -> list[str]:
    """Progressive resizing: copy every tensor whose name and shape match (strict=False semantics),
    then re-apply ICNR to the upsampler convs that did not come from the checkpoint. Returns their names."""
    from pixbatch.models.checkpoint import read_state_dict
    from pixbatch.models.layers import icnr_

    source, _ = read_state_dict(Path(path))
    own = net.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(copied, strict=False)
    fresh = [k for k in own if k not in copied]
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and f"{name}.weight" in fresh and "upsampler" in name:
            r = int(round((module.out_channels / module.in_channels) ** 0.5))
            icnr_(module.weight, r)
            nn.init.zeros_(module.bias)
    return fresh


def train_sr(cfg: SrTrainConfig, device: torch.device | None = None, progress: bool = True,
             on_error: Callable[[Path, str], None] | None = None) -> dict:
    """Train and save ``cfg.out`` (safetensors with the recipe in its metadata). Returns the recipe.
    Unreadable training images go to ``on_error`` and are left out."""
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.train.loop import LoopOptions, TrainLoop, seed_everything

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = seed_everything(cfg.seed, cfg.threads)
    model = create_model(cfg.arch, pretrained=False, **cfg.model_kwargs)
    net, scale = model.module.to(device).train(), model.info.scale
    fresh = init_from_smaller_scale(net, cfg.init) if cfg.init else []
    hr_patch = cfg.patch * scale
    images = load_images(cfg.data, hr_patch, on_error)
    val_lr, val_hr = (t.to(device) for t in sample_batch(images, 32, hr_patch, scale, random.Random(cfg.seed + 1)))
    loss_fn = make_loss(cfg).to(device)
    loop = TrainLoop(net, LoopOptions(steps=cfg.steps, lr=cfg.lr, betas=(0.9, 0.99), clip=1.0, amp=cfg.amp,
                                      val_every=cfg.val_every, save_every=cfg.save_every, resume=cfg.resume),
                     device, Path(str(cfg.out) + ".state"), rng, progress=progress)
    scores = {"val": float("nan"), "bicubic": float("nan")}

    def set_frozen(step: int) -> None:  # progressive resizing: only the new upsampler at first
        frozen = bool(fresh) and step <= cfg.freeze_steps
        for name, p in net.named_parameters():
            p.requires_grad_(not frozen or name in fresh)

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(t.to(device) for t in sample_batch(images, cfg.batch_size, hr_patch, scale, rng))

    def validate(step: int) -> str:
        scores["val"] = psnr(net(val_lr), val_hr)
        scores["bicubic"] = psnr(F.interpolate(val_lr, scale_factor=scale, mode="bicubic"), val_hr)
        return f"val PSNR {scores['val']:.2f} dB (bicubic {scores['bicubic']:.2f})"

    loop.run(batch, loss_fn, validate, before_step=set_frozen)
    recipe = loop.recipe(cfg, val_psnr_rgb=round(scores["val"], 2), val_bicubic=round(scores["bicubic"], 2))
    save_checkpoint(net.eval(), cfg.out, name=cfg.arch, kwargs=cfg.model_kwargs, training=recipe)
    loop.finish()
    return recipe
