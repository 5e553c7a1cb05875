"""Image-quality metrics as the super-resolution literature computes them (BasicSR conventions).

PSNR and SSIM on the Y channel of ITU-R BT.601 YCbCr (MATLAB ``rgb2ycbcr``), on images rounded to
8 bits, with ``shave`` pixels removed at every border; SSIM with an 11x11 Gaussian window (sigma 1.5)
over the valid region.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.nn import functional as F

# shared with the engine's accuracy probe and int8's loss measurement
from pixbatch.ops.psnr import psnr, rgb_to_y, shave_border  # noqa: F401  (rgb_to_y: this module's API)


@functools.cache
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    return torch.from_numpy(np.outer(g, g))[None, None]


def ssim(a: np.ndarray, b: np.ndarray, shave: int = 0, max_val: float = 255.0) -> float:
    """Mean SSIM of two single-channel images (Wang et al. 2004), valid-region filtering."""
    x = torch.from_numpy(shave_border(a, shave).astype(np.float64))[None, None]
    y = torch.from_numpy(shave_border(b, shave).astype(np.float64))[None, None]
    w = _gaussian_window()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def sr_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """Y-PSNR, Y-SSIM and RGB PSNR of an 8-bit RGB result, ``scale`` pixels shaved."""
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    return {"psnr_y": psnr(ys, yh, scale), "ssim_y": ssim(ys, yh, scale), "psnr_rgb": psnr(sr, hr, scale)}


# -- segmentation -----------------------------------------------------------------------------------

def confusion(pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None = None) -> dict[str, int]:
    """Pixel counts of a binary prediction against a binary target, inside ``roi`` when given."""
    pred, target = pred.astype(bool), target.astype(bool)
    if roi is not None:
        pred, target = pred[roi], target[roi]
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def scores_from_confusion(c: dict[str, int]) -> dict[str, float]:
    """IoU, Dice (= F1), pixel accuracy, precision and recall (sensitivity), specificity.
    Empty prediction and empty target count as a perfect match (IoU = Dice = 1)."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]

    def ratio(a: int, b: int, empty: float) -> float:
        return a / b if b else empty

    return {
        "iou": ratio(tp, tp + fp + fn, 1.0),
        "dice": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
        "accuracy": ratio(tp + tn, tp + fp + fn + tn, 1.0),
        "precision": ratio(tp, tp + fp, 1.0 if not fn else 0.0),
        "recall": ratio(tp, tp + fn, 1.0),
        "specificity": ratio(tn, tn + fp, 1.0),
    }


def auc_roc(scores: np.ndarray, target: np.ndarray) -> float:
    """Area under the ROC curve, exact (Mann-Whitney U with average ranks for tied scores).
    NaN when only one class is present."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    target = np.asarray(target).ravel().astype(bool)
    n_pos = int(target.sum())
    n_neg = target.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    # average rank (1-based) of each group of equal scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.repeat(avg, ends - starts)
    rank_sum = ranks[target[order]].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def multiclass_scores(pred: np.ndarray, target: np.ndarray, num_classes: int,
                      ignore_index: int | None = None) -> dict[str, float]:
    """Mean IoU / Dice over the classes present in prediction or target, and pixel accuracy."""
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    p, t = pred[valid], target[valid]
    ious, dices = [], []
    for c in range(num_classes):
        pc, tc = p == c, t == c
        union = np.count_nonzero(pc | tc)
        if union == 0:
            continue
        inter = np.count_nonzero(pc & tc)
        ious.append(inter / union)
        dices.append(2 * inter / (np.count_nonzero(pc) + np.count_nonzero(tc)))
    acc = float(np.mean(p == t)) if p.size else 1.0
    return {"iou": float(np.mean(ious)) if ious else 1.0, "dice": float(np.mean(dices)) if dices else 1.0,
            "accuracy": acc}


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray:
    """Exact pixel counts (num_classes, num_classes), int64: row = true class, column = predicted class.
    Pixels labelled ``ignore_index`` (or with a label outside 0..num_classes-1) count for nothing."""
    t, p = np.asarray(target).ravel(), np.asarray(pred).ravel()
    valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        valid &= t != ignore_index
    idx = t[valid].astype(np.int64) * num_classes + p[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_scores(cm: np.ndarray, ignore_index: int | None = None) -> dict:
    """Per-class IoU, precision and recall from a confusion matrix, and their class means (the
    SegNet / Cityscapes protocol): a class with no ground-truth pixels, and the ignore label, have no IoU
    or recall (NaN, left out of the means, never counted as 0); precision is NaN where nothing was
    predicted as that class. mIoU, class-mean accuracy (mean recall) and global accuracy."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(np.float64)
    truth, predicted = cm.sum(1).astype(np.float64), cm.sum(0).astype(np.float64)
    present = truth > 0
    if ignore_index is not None and 0 <= ignore_index < len(cm):
        present[ignore_index] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / (truth + predicted - tp), np.nan)
        recall = np.where(present, tp / truth, np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "mean_accuracy": float(np.nanmean(recall)) if present.any() else float("nan"),
        "global_accuracy": float(tp.sum() / total) if total else float("nan"),
        "iou": iou.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
        "pixels": truth.astype(np.int64).tolist(),
    }


def median_frequency_weights(counts: np.ndarray, images_with: np.ndarray) -> np.ndarray:
    """SegNet's class balancing (Eigen & Fergus): freq(c) = pixels of c / pixels of the images where c
    appears; weight(c) = median(freq) / freq(c). Classes never seen get weight 0."""
    counts, images_with = np.asarray(counts, np.float64), np.asarray(images_with, np.float64)
    seen = counts > 0
    freq = np.zeros_like(counts)
    freq[seen] = counts[seen] / images_with[seen]
    weights = np.zeros_like(counts)
    weights[seen] = np.median(freq[seen]) / freq[seen]
    return weights
