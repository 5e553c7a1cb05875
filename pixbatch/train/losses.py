"""Segmentation losses on logits: BCE, soft Dice, focal, cross-entropy, and their sums ("bce+dice").

Binary models have one logit channel and masks in {0, 1}; multi-class models have C channels and
integer masks, where ``ignore_index`` pixels count for nothing. A mask value of ``ignore_index`` in a
binary mask is ignored as well (e.g. outside a field of view)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("bce", "dice", "focal", "ce")


def _valid(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    return torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index


def bce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """Mean binary cross-entropy; logits (N, 1, H, W), target (N, H, W) in {0, 1}."""
    valid = _valid(target, ignore_index)
    t = torch.where(valid, target, 0).float()
    loss = F.binary_cross_entropy_with_logits(logits[:, 0].float(), t, reduction="none")
    return (loss * valid).sum() / valid.sum().clamp_min(1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               ignore_index: int | None = None) -> torch.Tensor:
    """Focal loss (Lin et al.): cross-entropy scaled by (1 - p_true)^gamma; binary or multi-class."""
    valid = _valid(target, ignore_index)
    t = torch.where(valid, target, 0).long()
    if logits.shape[1] == 1:
        z = logits[:, 0].float()
        logp_true = -F.binary_cross_entropy_with_logits(z, t.float(), reduction="none")
    else:
        logp_true = F.log_softmax(logits.float(), dim=1).gather(1, t.unsqueeze(1))[:, 0]
    loss = -((1 - logp_true.exp()) ** gamma) * logp_true
    return (loss * valid).sum() / valid.sum().clamp_min(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the batch (per class, then averaged over the classes present)."""
    valid = _valid(target, ignore_index).unsqueeze(1).float()
    t = torch.where(valid[:, 0].bool(), target, 0).long()
    if logits.shape[1] == 1:
        prob = torch.sigmoid(logits.float())
        onehot = t.unsqueeze(1).float()
    else:
        prob = F.softmax(logits.float(), dim=1)
        onehot = F.one_hot(t, logits.shape[1]).permute(0, 3, 1, 2).float()
    prob, onehot = prob * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - dice.mean()


def ce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy; ``weight`` per class (class balancing)."""
    if logits.shape[1] == 1:
        return bce_loss(logits, target, ignore_index)
    w = None if weight is None else weight.to(logits.device, torch.float32)
    return F.cross_entropy(logits.float(), target.long(), weight=w,
                           ignore_index=-100 if ignore_index is None else ignore_index)


class SegLoss(nn.Module):
    """A sum of named losses, e.g. ``SegLoss("bce+dice")``."""

    def __init__(self, spec: str, ignore_index: int | None = None, gamma: float = 2.0,
                 class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.names = [s.strip() for s in spec.lower().split("+") if s.strip()]
        unknown = [n for n in self.names if n not in LOSSES]
        if not self.names or unknown:
            raise ValueError(f"unknown loss {spec!r}; use {', '.join(LOSSES)} or sums like bce+dice")
        self.ignore_index, self.gamma = ignore_index, gamma
        self.class_weights = class_weights  # cross-entropy's per-class weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for name in self.names:
            if name == "bce":
                total = total + bce_loss(logits, target, self.ignore_index)
            elif name == "ce":
                total = total + ce_loss(logits, target, self.ignore_index, self.class_weights)
            elif name == "dice":
                total = total + dice_loss(logits, target, self.ignore_index)
            else:
                total = total + focal_loss(logits, target, self.gamma, self.ignore_index)
        return total
