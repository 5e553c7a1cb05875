"""Train a segmentation model on a folder of images and a folder of masks (paired by file stem).

Random crops with joint augmentation; BCE / soft Dice / focal / cross-entropy and their sums; Adam
with a one-cycle schedule; AMP; progressive resizing (``sizes=(256, 512)`` trains the first half of
the steps on 256 px crops, the second on 512 px, at equal pixels per batch); the checkpoint with the
best validation Dice is kept. CLI: ``pixbatch train seg``.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from dataclasses import asdict, dataclass, field
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
    encoder_weights: Path | None = None  # resnet34_unet: local ImageNet weights
    tune_threshold: bool = False  # binary: store the validation-best threshold instead of 0.5
    amp: bool | None = None
    seed: int = 0
    threads: int = 0
    command: str = field(default="", repr=False)


def load_pairs(pairs: list[Pair], binary: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = []
    for p in pairs:
        image, mask = load_image(p.image), load_mask(p.mask, binary)
        if image.shape[-2:] != mask.shape:
            raise ValueError(f"{p.mask.name} is {mask.shape[1]}x{mask.shape[0]} but {p.image.name} is "
                             f"{image.shape[2]}x{image.shape[1]}")
        data.append((image, mask))
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
    """Dice over all validation pixels (binary at p = 0.5; multi-class: mean over classes)."""
    from pixbatch.eval.metrics import confusion, multiclass_scores, scores_from_confusion

    net.eval()
    total = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    dices = []
    for image, mask in data:
        logits = net(image[None].to(device)).float()[0].cpu()
        target = mask.numpy()
        if classes == 1:
            valid = None if ignore_index is None else target != ignore_index
            c = confusion((logits[0] > 0).numpy(), target == 1, valid)
            total = {k: total[k] + c[k] for k in total}
        else:
            dices.append(multiclass_scores(logits.argmax(0).numpy(), target, classes, ignore_index)["dice"])
    net.train()
    return scores_from_confusion(total)["dice"] if classes == 1 else float(np.mean(dices))


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


def train_seg(cfg: SegTrainConfig, device: torch.device | None = None, progress: bool = True) -> dict:
    """Train and save ``cfg.out`` (the best validation Dice; safetensors with the recipe). Returns the recipe."""
    from tqdm import tqdm

    from pixbatch.models import create_model
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.runtime.device import training_amp_dtype
    from pixbatch.train.losses import SegLoss

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    binary = cfg.classes == 1
    loss_fn = SegLoss(cfg.loss, cfg.ignore_index)  # validates the loss names before any work
    if not binary and any(n in ("bce",) for n in loss_fn.names):
        raise ValueError("bce is for binary models (--classes 1); use ce for multi-class")
    pairs = pair_folders(cfg.images, cfg.masks)
    if cfg.val_images is not None:
        train_pairs, val_pairs = pairs, pair_folders(cfg.val_images, cfg.val_masks or cfg.masks)
    else:
        train_pairs, val_pairs = split(pairs, cfg.val_fraction, cfg.seed)
    train_data, val_data = load_pairs(train_pairs, binary), load_pairs(val_pairs, binary)
    if not binary:
        top = max(int(m[m != (cfg.ignore_index if cfg.ignore_index is not None else -1)].max()) for _, m in train_data)
        if top >= cfg.classes:
            raise ValueError(f"masks contain class {top} but --classes is {cfg.classes}")

    kwargs = {**cfg.model_kwargs, "num_classes": cfg.classes}
    net = create_model(cfg.arch, pretrained=False, **kwargs).module
    if cfg.encoder_weights is not None:
        from pixbatch.models.seg.resnet_unet import ResNetUNet, load_encoder_weights

        if not isinstance(net, ResNetUNet):
            raise ValueError("--encoder-weights is for resnet34_unet")
        load_encoder_weights(net, cfg.encoder_weights)
    net = net.to(device).train()
    amp = training_amp_dtype(cfg.amp, device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    stage_len = cfg.steps / len(cfg.sizes)

    t0 = time.perf_counter()
    best, best_step, best_state, val = -1.0, 0, None, float("nan")
    bar = tqdm(range(1, cfg.steps + 1), total=cfg.steps, disable=not progress, file=sys.stderr,
               dynamic_ncols=True, unit="step")
    for step in bar:
        size = cfg.sizes[min(int((step - 1) / stage_len), len(cfg.sizes) - 1)]
        x, y = sample(train_data, size, batch_size_for(cfg, size), rng)
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        if val_data and (step % cfg.val_every == 0 or step == cfg.steps):
            val = validate(net, val_data, cfg.classes, device, cfg.ignore_index)
            if val > best:
                best, best_step = val, step
                best_state = copy.deepcopy(net.state_dict())
            bar.set_postfix_str(f"loss {loss.item():.4f} val Dice {val:.4f} (best {best:.4f})")
            if not progress:
                print(f"step {step}/{cfg.steps} size {size} loss {loss.item():.4f} val Dice {val:.4f} "
                      f"(best {best:.4f} at {best_step}) {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        elif step % 10 == 0:
            bar.set_postfix_str(f"loss {loss.item():.4f} val Dice {val:.4f}", refresh=False)
    bar.close()
    if best_state is not None:
        net.load_state_dict(best_state)
    else:
        best_step = cfg.steps
    threshold, val_dice_at_threshold = 0.5, None
    if cfg.tune_threshold and binary and val_data:  # chosen on the validation images, used by segment/eval
        threshold, val_dice_at_threshold = best_threshold(net, val_data, device, cfg.ignore_index)
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("out", "command")}
    recipe.update(command=cfg.command, seconds=round(time.perf_counter() - t0), device=str(device),
                  amp=str(amp).removeprefix("torch.") if amp else "off", train_images=len(train_data),
                  val_images=[p.name for p in val_pairs], val_dice=round(best, 4) if val_data else None,
                  best_step=best_step, threshold=threshold,
                  val_dice_at_threshold=None if val_dice_at_threshold is None else round(val_dice_at_threshold, 4))
    save_checkpoint(net.eval(), cfg.out, name=cfg.arch, kwargs=kwargs, training=recipe)
    return recipe
