"""Train a super-resolution model on self-supervised pairs cut from any folder of images.

Pairs and validation: train/sr_data.py. L1, MSE or perceptual loss; Adam with a one-cycle schedule; AMP;
gradient clipping; a moving average of the weights; checkpoint/resume (the shared loop, train/loop.py);
starting from another model, of another scale too (``--init``: a file or a built-in model's name), with
fresh upsampler layers. CLI: ``pixbatch train sr``.
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
    loss: str = "l1"  # l1 | l1+fft | mse | perceptual
    degrade: str = "bicubic"  # bicubic, or a name in train/degradations.py's DEGRADATIONS
    workers: int = 1  # DataLoader workers making the real-world LR (0: in the training process)
    pixel_weight: float = 0.1  # perceptual loss: weight of the pixel L1 term
    vgg_weights: Path | None = None
    init: Path | str | None = None  # start from this checkpoint or built-in model (of any scale)
    freeze_steps: int = 0  # with --init: train only the new upsampler for this many steps
    holdout: Path | None = None  # list of images in ``data`` left out of training and validated whole
    ema: float = 0.999  # decay of the weights' moving average, validated and saved (0: off)
    amp: bool | None = None  # None: bf16 where it is fast (GPU, or a CPU with native bf16)
    seed: int = 0
    threads: int = 0
    val_every: int = 250
    save_every: int | None = 1000
    save_minutes: float | None = None  # or every this many minutes
    resume: bool = False
    command: str = field(default="", repr=False)


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


class L1FftLoss(nn.Module):
    """L1 on pixels plus ``weight`` x L1 between the images' 2-D spectra (orthonormal FFT, real and
    imaginary parts): the frequency term weighs the fine detail that plain L1 lets blur away."""

    def __init__(self, weight: float = 0.05) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        a, b = (torch.view_as_real(torch.fft.rfft2(x.float(), norm="ortho")) for x in (sr, hr))
        return F.l1_loss(sr, hr) + self.weight * F.l1_loss(a, b)


def make_loss(cfg: SrTrainConfig) -> nn.Module:
    if cfg.loss == "l1":
        return nn.L1Loss()
    if cfg.loss == "l1+fft":
        return L1FftLoss()
    if cfg.loss == "mse":
        return nn.MSELoss()
    if cfg.loss == "perceptual":
        return PerceptualLoss(cfg.vgg_weights, cfg.pixel_weight)
    raise ValueError(f"unknown loss {cfg.loss!r}; use l1, l1+fft, mse or perceptual")


def init_source(init: Path | str) -> Path:
    """--init's checkpoint: a file, else the shipped weights of the built-in model of that name."""
    from pixbatch.models import builtin_weights, list_models

    if Path(init).is_file():
        return Path(init)
    if str(init) in list_models():
        if (path := builtin_weights(str(init))) is None:
            raise ValueError(f"--init {init}: that built-in model has no shipped weights")
        return path
    raise ValueError(f"--init {init}: no such file, and no built-in model of that name (see `pixbatch models`)")


def init_from(net: nn.Module, init: Path | str) -> list[str]:
    """Start from another model: copy every tensor whose name and shape match (strict=False semantics).
    An upsampler conv of another scale (out channels 3 x r^2) is resampled to this one's sub-pixel grid
    (``resample_subpixels``: x4 -> x2 starts as x4's output box-filtered); other new upsampler convs get
    ICNR. Returns the names of the tensors that did not come from the checkpoint as they were."""
    from pixbatch.models.checkpoint import read_state_dict
    from pixbatch.models.layers import icnr_, resample_subpixels, shuffle_scale

    source, _ = read_state_dict(init_source(init))
    own = net.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    for key, value in source.items():
        if key in own and key not in copied and "upsampler" in key and own[key].shape[1:] == value.shape[1:]:
            old, new = shuffle_scale(value.shape[0]), shuffle_scale(own[key].shape[0])
            if old and new:
                copied[key] = resample_subpixels(value, old, new).to(own[key].dtype)
    net.load_state_dict(copied, strict=False)
    fresh = [k for k in own if k not in copied or copied[k] is not source.get(k)]
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and f"{name}.weight" not in copied and "upsampler" in name:
            r = int(round((module.out_channels / module.in_channels) ** 0.5))
            icnr_(module.weight, r)
            nn.init.zeros_(module.bias)
    return fresh


def train_sr(cfg: SrTrainConfig, device: torch.device | None = None, progress: bool = True,
             on_error: Callable[[Path, str], None] | None = None) -> dict:
    """Train and save ``cfg.out`` (safetensors with the recipe in its metadata; the validation curve beside
    it as OUT-without-suffix.curve.csv). Returns the recipe. Unreadable training images go to
    ``on_error`` and are left out."""
    from pixbatch.io.discover import image_paths, read_names
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.train.degradations import DEGRADATIONS
    from pixbatch.train.loop import LoopOptions, TrainLoop, seed_everything
    from pixbatch.train.sr_data import (
        HeldOut,
        load_images,
        real_batches,
        real_lr,
        sample_batch,
        split_holdout,
    )

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = seed_everything(cfg.seed, cfg.threads)
    model = create_model(cfg.arch, pretrained=False, **cfg.model_kwargs)
    net, scale = model.module.to(device).train(), model.info.scale
    fresh = init_from(net, cfg.init) if cfg.init else []
    hr_patch = cfg.patch * scale
    if cfg.degrade != "bicubic" and cfg.degrade not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {cfg.degrade!r}; use one of: {', '.join(['bicubic', *DEGRADATIONS])}")
    real = None if cfg.degrade == "bicubic" else cfg.degrade
    paths = image_paths(cfg.data)
    held = None
    if cfg.holdout is not None:
        paths, held_paths = split_holdout(paths, read_names(cfg.holdout))
        held = HeldOut(held_paths, scale, on_error, degradation=real)
    images = load_images(paths, hr_patch, on_error)
    if not images:
        raise ValueError(f"no training images of at least {hr_patch} px in {', '.join(map(str, cfg.data))}")
    if held is None:  # no held-out images named: 32 crops of the training images
        val_lr, val_hr = (t.to(device) for t in sample_batch(images, 32, hr_patch, scale, random.Random(cfg.seed + 1)))
        if real is not None:
            val_lr = torch.stack([real_lr(hr, scale, real, i) for i, hr in enumerate(val_hr.cpu())]).to(device)
    loss_fn = make_loss(cfg).to(device)
    loop = TrainLoop(net, LoopOptions(steps=cfg.steps, lr=cfg.lr, betas=(0.9, 0.99), clip=1.0, amp=cfg.amp,
                                      val_every=cfg.val_every, save_every=cfg.save_every,
                                      save_minutes=cfg.save_minutes, ema=cfg.ema, resume=cfg.resume),
                     device, Path(str(cfg.out) + ".state"), rng, progress=progress,
                     curve_path=cfg.out.with_suffix(".curve.csv"))
    scores = {"val": float("nan"), "bicubic": float("nan")}

    def set_frozen(step: int) -> None:  # progressive resizing: only the new upsampler at first
        frozen = bool(fresh) and step <= cfg.freeze_steps
        for name, p in net.named_parameters():
            p.requires_grad_(not frozen or name in fresh)

    # the real-world pairs' iterator, started at the first step from the seed and that step: a resumed run
    # draws its own stream (reproducible, though not the uninterrupted run's batches)
    stream = []

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if real is None:
            return tuple(t.to(device) for t in sample_batch(images, cfg.batch_size, hr_patch, scale, rng))
        if not stream:
            stream.append(real_batches(images, cfg.batch_size, hr_patch, scale, real, cfg.seed * 1_000_003 + step,
                                       cfg.workers))
        return tuple(t.to(device) for t in next(stream[0]))

    def validate(step: int) -> tuple[str, dict[str, float]]:
        if held is not None:
            scores.update(val=held.psnr_y(loop.eval_net, device), bicubic=held.bicubic)
            return (f"held-out Y-PSNR {scores['val']:.3f} dB (bicubic {scores['bicubic']:.2f})",
                    {"val_psnr_y": scores["val"]})
        scores["val"] = psnr(loop.eval_net(val_lr), val_hr)
        scores["bicubic"] = psnr(F.interpolate(val_lr, scale_factor=scale, mode="bicubic"), val_hr)
        return f"val PSNR {scores['val']:.2f} dB (bicubic {scores['bicubic']:.2f})", {"val_psnr_rgb": scores["val"]}

    try:
        loop.run(batch, loss_fn, validate, before_step=set_frozen)
    finally:
        stream.clear()  # stops the workers
    metric = "val_psnr_y" if held is not None else "val_psnr_rgb"
    recipe = loop.recipe(cfg, **{metric: round(scores["val"], 3 if held else 2)}, val_bicubic=round(scores["bicubic"], 2),
                         holdout_images=None if held is None else len(held.pairs), train_images=len(images))
    save_checkpoint(loop.eval_net.eval(), cfg.out, name=cfg.arch, kwargs=cfg.model_kwargs, training=recipe)
    loop.finish()
    return recipe
