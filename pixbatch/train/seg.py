"""Train a segmentation model on a folder of images and a folder of masks (paired by file stem).

Random crops with joint augmentation; BCE / soft Dice / focal / cross-entropy and their sums; Adam
with a one-cycle schedule (the shared loop, train/loop.py: AMP, clipping, ``--resume``); progressive resizing (``sizes=(256, 512)`` trains the first half of
the steps on 256 px crops, the second on 512 px, at equal pixels per batch); the checkpoint with the
best validation Dice is kept. CLI: ``pixbatch train seg``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixbatch.io.pairs import Pair, load_image, load_mask, pair_folders
from pixbatch.train.seg_data import augment, random_crop


@dataclass
class SegTrainConfig:
    images: Path
    masks: Path
    arch: str  # registered name: unet, unet_small, unet_drive, segnet, resnet34_unet, ...
    out: Path
    model_kwargs: dict = field(default_factory=dict)
    classes: int = 1  # 1 = binary (one logit); C >= 2 = multi-class
    ignore_index: int | None = None  # multi-class: mask value that counts for nothing
    loss: str = "bce+dice"
    sizes: tuple[int, ...] = (512,)  # crop size per stage (progressive resizing)
    steps: int = 2000
    batch_size: int = 8  # at the first size; later stages keep the pixels per batch
    lr: float = 2e-3
    val_fraction: float = 0.1
    val_images: Path | None = None
    val_masks: Path | None = None
    val_every: int = 100
    save_every: int | None = 500
    save_minutes: float | None = None  # or every this many minutes
    resume: bool = False
    encoder_weights: Path | None = None  # resnet34_unet: local ImageNet weights
    tune_threshold: bool = False  # binary: store the validation-best threshold instead of 0.5
    class_weights: str | None = None  # multi-class cross-entropy: "auto" (median frequency) or "w0,w1,..."
    class_names: list[str] | None = None  # stored in the checkpoint for eval and segment
    amp: bool | None = None
    seed: int = 0
    threads: int = 0
    command: str = field(default="", repr=False)


def load_pairs(pairs: list[Pair], binary: bool,
               on_error: Callable[[Path, str], None] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every pair decoded; one that cannot be read (or whose sizes differ) goes to ``on_error`` and is
    left out (raised without it)."""
    from pixbatch.io.decode import DecodeError

    data = []
    for p in pairs:
        try:
            image, mask = load_image(p.image), load_mask(p.mask, binary)
            if image.shape[-2:] != mask.shape:
                raise ValueError(f"{p.mask.name} is {mask.shape[1]}x{mask.shape[0]} but {p.image.name} is "
                                 f"{image.shape[2]}x{image.shape[1]}")
        except (DecodeError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(p.image, str(exc))
            continue
        data.append((image, mask))
    if pairs and not data:
        raise ValueError("none of the image/mask pairs could be read")
    return data


def split(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    if fraction <= 0:
        return pairs, []
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(pairs) * fraction)) if len(pairs) > 1 else 0
    val = sorted(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in val], [pairs[i] for i in val]


def batch_size_for(cfg: SegTrainConfig, size: int) -> int:
    return max(1, round(cfg.batch_size * (cfg.sizes[0] / size) ** 2))


def sample(data, size: int, batch: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(batch):
        image, mask = data[rng.randrange(len(data))]
        image, mask = random_crop(image, mask, size, rng)
        image, mask = augment(image, mask, rng)
        xs.append(image)
        ys.append(mask)
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def validate(net: torch.nn.Module, data, classes: int, device: torch.device,
             ignore_index: int | None) -> float:
    """Over all validation pixels: binary, Dice at p = 0.5; multi-class, mIoU (the ignore label and
    classes absent from the validation truth left out), as ``pixbatch eval seg`` reports them."""
    from pixbatch.eval.metrics import class_scores, confusion, confusion_matrix, scores_from_confusion
    from pixbatch.eval.seg import predicted_classes

    net.eval()
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    cm = np.zeros((classes, classes), np.int64)
    for image, mask in data:
        logits = net(image[None].to(device)).float()[0].cpu()
        target = mask.numpy()
        if classes == 1:
            valid = None if ignore_index is None else target != ignore_index
            c = confusion((logits[0] > 0).numpy(), target == 1, valid)
            total = {k: total[k] + c[k] for k in total}
        else:
            cm += confusion_matrix(predicted_classes(logits, ignore_index).numpy(), target, classes, ignore_index)
    net.train()
    if classes == 1:
        return scores_from_confusion(total)["dice"]
    miou = class_scores(cm, ignore_index)["miou"]
    return miou if miou == miou else 0.0


def class_weights(spec: str, data, classes: int, ignore_index: int | None) -> torch.Tensor:
    """Cross-entropy weights: "auto" = median-frequency balancing over the training masks (SegNet), or
    one number per class."""
    from pixbatch.eval.metrics import median_frequency_weights

    if spec != "auto":
        try:
            weights = [float(w) for w in spec.split(",")]
        except ValueError:
            weights = []
        if len(weights) != classes or min(weights) < 0:
            raise ValueError(f"--class-weights needs 'auto' or {classes} non-negative numbers, got {spec!r}")
        return torch.tensor(weights)
    counts, images_with = np.zeros(classes), np.zeros(classes)
    for _, mask in data:
        m = mask.numpy()
        m = m[(m >= 0) & (m < classes) & ((m != ignore_index) if ignore_index is not None else True)]
        n = np.bincount(m.astype(np.int64), minlength=classes)[:classes]
        counts += n
        images_with += n > 0
    return torch.from_numpy(median_frequency_weights(counts, images_with)).float()


@torch.no_grad()
def best_threshold(net: torch.nn.Module, data, device: torch.device, ignore_index: int | None) -> tuple[float, float]:
    """The probability threshold (0.05 steps) with the best Dice over the validation pixels, and that Dice."""
    from pixbatch.eval.metrics import confusion, scores_from_confusion

    net.eval()
    probs, targets = [], []
    for image, mask in data:
        p = torch.sigmoid(net(image[None].to(device)).float())[0, 0].cpu().numpy()
        t = mask.numpy()
        keep = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
        probs.append(p[keep])
        targets.append(t[keep] == 1)
    p, t = np.concatenate(probs), np.concatenate(targets)
    best = max((scores_from_confusion(confusion(p > th, t))["dice"], th) for th in np.arange(0.2, 0.81, 0.05))
    return round(float(best[1]), 2), float(best[0])


def train_seg(cfg: SegTrainConfig, device: torch.device | None = None, progress: bool = True,
              on_error: Callable[[Path, str], None] | None = None) -> dict:
    """Train and save ``cfg.out`` (the best validation Dice, or mIoU for multi-class models; safetensors
    with the recipe). Returns the recipe."""
    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.train.loop import LoopOptions, TrainLoop, seed_everything
    from pixbatch.train.losses import SegLoss

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = seed_everything(cfg.seed, cfg.threads)
    binary = cfg.classes == 1
    loss_fn = SegLoss(cfg.loss, cfg.ignore_index)  # validates the loss names before any work
    if not binary and any(n in ("bce",) for n in loss_fn.names):
        raise ValueError("bce is for binary models (--classes 1); use ce for multi-class")
    pairs = pair_folders(cfg.images, cfg.masks)
    if cfg.val_images is not None:
        train_pairs, val_pairs = pairs, pair_folders(cfg.val_images, cfg.val_masks or cfg.masks)
    else:
        train_pairs, val_pairs = split(pairs, cfg.val_fraction, cfg.seed)
    train_data, val_data = load_pairs(train_pairs, binary, on_error), load_pairs(val_pairs, binary, on_error)
    if not binary:
        top = max(int(m[m != (cfg.ignore_index if cfg.ignore_index is not None else -1)].max()) for _, m in train_data)
        if top >= cfg.classes:
            raise ValueError(f"masks contain class {top} but --classes is {cfg.classes}")

    weights = None
    if cfg.class_weights is not None:
        if binary:
            raise ValueError("--class-weights is for multi-class models (--classes 2 or more)")
        weights = class_weights(cfg.class_weights, train_data, cfg.classes, cfg.ignore_index)
        loss_fn.class_weights = weights
    if cfg.class_names is not None and len(cfg.class_names) != cfg.classes:
        raise ValueError(f"--class-names lists {len(cfg.class_names)} names for {cfg.classes} classes")
    metric = "Dice" if binary else "mIoU"

    kwargs = {**cfg.model_kwargs, "num_classes": cfg.classes}
    net = create_model(cfg.arch, pretrained=False, **kwargs).module
    if cfg.encoder_weights is not None:
        from pixbatch.models.seg.resnet_unet import ResNetUNet, load_encoder_weights

        if not isinstance(net, ResNetUNet):
            raise ValueError("--encoder-weights is for resnet34_unet")
        load_encoder_weights(net, cfg.encoder_weights)
    net = net.to(device).train()
    loop = TrainLoop(net, LoopOptions(steps=cfg.steps, lr=cfg.lr, clip=5.0, amp=cfg.amp, val_every=cfg.val_every,
                                      save_every=cfg.save_every,
                                      save_minutes=cfg.save_minutes, resume=cfg.resume),
                     device, Path(str(cfg.out) + ".state"), rng, progress=progress,
                     curve_path=cfg.out.with_suffix(".curve.csv"))
    stage_len = cfg.steps / len(cfg.sizes)
    best = loop.extra.setdefault("best", {"dice": -1.0, "step": 0, "weights": None})  # kept across a resume

    def size_at(step: int) -> int:  # progressive resizing: equal parts of the steps per size
        return cfg.sizes[min(int((step - 1) / stage_len), len(cfg.sizes) - 1)]

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = size_at(step)
        x, y = sample(train_data, size, batch_size_for(cfg, size), rng)
        return x.to(device), y.to(device)

    def validate_step(step: int) -> tuple[str, dict[str, float]]:
        dice = validate(net, val_data, cfg.classes, device, cfg.ignore_index)
        if dice > best["dice"]:
            best.update(dice=dice, step=step, weights={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        return (f"size {size_at(step)} val {metric} {dice:.4f} (best {best['dice']:.4f} at {best['step']})",
                {f"val_{metric.lower()}": dice})

    loop.run(batch, loss_fn, validate_step if val_data else None)
    best_step = cfg.steps
    if best["weights"] is not None:
        net.load_state_dict(best["weights"])
        best_step = best["step"]
    threshold, val_dice_at_threshold = 0.5, None
    if cfg.tune_threshold and binary and val_data:  # chosen on the validation images, used by segment/eval
        threshold, val_dice_at_threshold = best_threshold(net, val_data, device, cfg.ignore_index)
    recipe = loop.recipe(
        cfg, train_images=len(train_data), val_images=[p.name for p in val_pairs], val_metric=metric,
        val_dice=round(best["dice"], 4) if val_data and binary else None,
        val_miou=round(best["dice"], 4) if val_data and not binary else None,
        class_weights_used=None if weights is None else [round(float(w), 4) for w in weights],
        best_step=best_step, threshold=threshold,
        val_dice_at_threshold=None if val_dice_at_threshold is None else round(val_dice_at_threshold, 4))
    save_checkpoint(net.eval(), cfg.out, name=cfg.arch, kwargs=kwargs, training=recipe)
    loop.finish()
    return recipe
