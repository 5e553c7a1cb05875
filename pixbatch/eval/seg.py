"""Segmentation evaluation: IoU, Dice/F1, accuracy, precision/recall, specificity and (binary) AUC-ROC,
per image and over all pixels together, optionally inside a region of interest (DRIVE's field of
view). Probabilities come from the same blended-tile predictor ``pixbatch segment`` uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixbatch.eval.metrics import auc_roc, class_scores, confusion, confusion_matrix, scores_from_confusion
from pixbatch.io.pairs import load_mask, pair_folders
from pixbatch.runtime.prepare import Runner
from pixbatch.tasks.segment import predict_logits, without_void


@dataclass
class SegResult:
    name: str
    scores: dict[str, float]


def predict_probabilities(runner: Runner, pixels: np.ndarray, tile: int | None = None,
                          overlap: int | None = None) -> torch.Tensor:
    """(C, H, W) float32 probabilities (sigmoid for one channel, softmax otherwise) of an HWC image."""
    out = predict_logits(runner, pixels, tile, overlap).float().cpu()
    return torch.sigmoid(out) if out.shape[0] == 1 else torch.softmax(out, dim=0)


def evaluate_seg(runner: Runner, images: Path, masks: Path, roi: Path | None = None, *, threshold: float = 0.5,
                 ignore_index: int | None = None, tile: int | None = None,
                 overlap: int | None = None,
                 on_error: Callable[[Path, str], None] | None = None) -> tuple[list[SegResult], dict]:
    """Per-image scores and the scores over all pixels of all images (``pooled``; AUC included). With
    ``on_error``, a pair that cannot be read or run is reported there (path, reason) and left out."""
    from pixbatch.io.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
    from pixbatch.runtime.prepare import ModelFailedError

    classes = runner.info.out_channels
    results, total = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    all_scores, all_targets = [], []
    cm_total = np.zeros((classes, classes), np.int64)
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
            pred = predicted_classes(prob, ignore_index).numpy()
            t = np.where(region, target, -1) if region is not None else target  # -1: outside the region
            cm = confusion_matrix(pred, t, classes, ignore_index)
            cm_total += cm
            per_class = class_scores(cm, ignore_index)
            scores = {"miou": per_class["miou"], "mean_accuracy": per_class["mean_accuracy"],
                      "accuracy": per_class["global_accuracy"]}
        results.append(SegResult(pair.name, scores))
    if not results:
        raise ValueError(f"none of the {len(pairs)} image/mask pairs could be evaluated")
    if classes == 1:
        pooled = scores_from_confusion(total)
        pooled["auc"] = auc_roc(np.concatenate(all_scores), np.concatenate(all_targets))
    else:
        pooled = class_scores(cm_total, ignore_index)
        pooled["accuracy"] = pooled["global_accuracy"]
        pooled["confusion_matrix"] = cm_total.tolist()
    return results, pooled


def predicted_classes(prob: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
    """(C, H, W) probabilities -> (H, W) class indices; the ignore (void) label is never predicted."""
    return without_void(prob, ignore_index).argmax(0)


def confusion_png(cm: np.ndarray, names: list[str], cell: int = 36) -> bytes:
    """A confusion-matrix picture: rows = true class, columns = predicted, each row normalised to its
    pixels (white 0 to dark blue 1), the row's percentages written in the cells."""
    import io

    from PIL import Image, ImageDraw

    from pixbatch.io.encode import mark_kwargs

    n = len(cm)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    label = max(60, 7 * max((len(x) for x in names), default=4))
    size = (label + n * cell + 10, label + n * cell + 10)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    for i in range(n):
        draw.text((4, label + i * cell + cell // 3), names[i][:label // 7], fill="black")
        draw.text((label + i * cell + 2, label - 14 - (i % 2) * 12), names[i][:cell // 6], fill="black")
        for j in range(n):
            v = float(rows[i, j])
            color = tuple(int(255 - v * (255 - c)) for c in (20, 60, 140))
            x0, y0 = label + j * cell, label + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline=(200, 200, 200))
            if cm[i].sum():
                draw.text((x0 + 4, y0 + cell // 3), f"{100 * v:.0f}", fill="white" if v > 0.5 else "black")
    draw.text((4, 4), "rows: truth; columns: predicted", fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG", **mark_kwargs("png"))
    return buf.getvalue()
