"""Segmentation evaluation: IoU, Dice/F1, accuracy, precision/recall, specificity and (binary) AUC-ROC,
per image and over all pixels together, optionally inside a region of interest (DRIVE's field of
view). Probabilities come from the same blended-tile predictor ``pixbatch segment`` uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixbatch.eval.metrics import auc_roc, confusion, multiclass_scores, scores_from_confusion
from pixbatch.io.pairs import load_mask, pair_folders
from pixbatch.runtime.prepare import Runner
from pixbatch.tasks.segment import DEFAULT_OVERLAP, DEFAULT_TILE, predict_logits


@dataclass
class SegResult:
    name: str
    scores: dict[str, float]


def predict_probabilities(runner: Runner, pixels: np.ndarray, tile: int = DEFAULT_TILE,
                          overlap: int = DEFAULT_OVERLAP) -> torch.Tensor:
    """(C, H, W) float32 probabilities (sigmoid for one channel, softmax otherwise) of an HWC image."""
    out = predict_logits(runner, pixels, tile, overlap).float().cpu()
    return torch.sigmoid(out) if out.shape[0] == 1 else torch.softmax(out, dim=0)


def evaluate_seg(runner: Runner, images: Path, masks: Path, roi: Path | None = None, *, threshold: float = 0.5,
                 ignore_index: int | None = None, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP,
                 on_error: Callable[[Path, str], None] | None = None) -> tuple[list[SegResult], dict]:
    """Per-image scores and the scores over all pixels of all images (``pooled``; AUC included). With
    ``on_error``, a pair that cannot be read or run is reported there (path, reason) and left out."""
    from pixbatch.io.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
    from pixbatch.runtime.prepare import ModelFailedError

    classes = runner.info.out_channels
    results, total = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    all_scores, all_targets, mc_pred, mc_true = [], [], [], []
    pairs = pair_folders(images, masks, roi)
    for pair in pairs:
        try:
            pixels, _ = decode_image(pair.image, max_pixels=DEFAULT_MAX_PIXELS)
            target = load_mask(pair.mask, binary=classes == 1).numpy()
            if target.shape != pixels.shape[:2]:
                raise ValueError(f"{pair.mask.name} is {target.shape[1]}x{target.shape[0]} but {pair.image.name} is "
                                 f"{pixels.shape[1]}x{pixels.shape[0]}")
            region = load_mask(pair.roi, binary=True).numpy().astype(bool) if pair.roi is not None else None
            if region is not None and region.shape != target.shape:
                raise ValueError(f"{pair.roi.name} is {region.shape[1]}x{region.shape[0]} but {pair.image.name} is "
                                 f"{pixels.shape[1]}x{pixels.shape[0]}")
            prob = predict_probabilities(runner, pixels, tile, overlap)
        except (DecodeError, ValueError, ModelFailedError) as exc:
            if on_error is None:
                raise
            on_error(pair.image, str(exc))
            continue
        if classes == 1:
            valid = region if ignore_index is None else (target != ignore_index) & (region if region is not None else True)
            p = prob[0].numpy()
            c = confusion(p > threshold, target == 1, valid)
            total = {k: total[k] + c[k] for k in total}
            s, t = (p, target) if valid is None else (p[valid], target[valid])
            scores = scores_from_confusion(c)
            scores["auc"] = auc_roc(s, t == 1)
            all_scores.append(s.ravel())
            all_targets.append((t == 1).ravel())
        else:
            pred = prob.argmax(0).numpy()
            t = np.where(region, target, ignore_index if ignore_index is not None else -1) if region is not None else target
            ign = ignore_index if region is None else (ignore_index if ignore_index is not None else -1)
            scores = multiclass_scores(pred, t, classes, ign)
            keep = t != ign if ign is not None else np.ones(t.shape, bool)
            mc_pred.append(pred[keep])
            mc_true.append(t[keep])
        results.append(SegResult(pair.name, scores))
    if not results:
        raise ValueError(f"none of the {len(pairs)} image/mask pairs could be evaluated")
    if classes == 1:
        pooled = scores_from_confusion(total)
        pooled["auc"] = auc_roc(np.concatenate(all_scores), np.concatenate(all_targets))
    else:
        pooled = multiclass_scores(np.concatenate(mc_pred), np.concatenate(mc_true), classes)
    return results, pooled
