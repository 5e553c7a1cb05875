"""Multi-class metrics against a confusion matrix counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pixbatch.eval.metrics import class_scores, confusion_matrix, median_frequency_weights


def test_confusion_matrix_and_scores_by_hand():
    # classes 0, 1, 2, 3; 9 is the ignore label; class 2 never appears in the ground truth (but is
    # predicted once), class 3 appears and is never predicted right
    target = np.array([[0, 0, 1, 1, 9],
                       [0, 1, 1, 3, 9],
                       [3, 3, 0, 1, 9]])
    pred = np.array([[0, 1, 1, 1, 2],
                     [0, 1, 2, 0, 0],
                     [1, 3, 0, 1, 1]])
    cm = confusion_matrix(pred, target, 4, ignore_index=9)
    # rows = truth, columns = prediction; the ignore column pixels (x = 4) count for nothing
    expected = np.array([[3, 1, 0, 0],   # truth 0 at (0,0) (0,1) (1,0) (2,2): pred 0, 1, 0, 0
                         [0, 4, 1, 0],   # truth 1 at (0,2) (0,3) (1,1) (1,2) (2,3): 1, 1, 1, 2, 1
                         [0, 0, 0, 0],
                         [1, 1, 0, 1]])  # truth 3 at (1,3) (2,0) (2,1): 0, 1, 3
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64 and cm.sum() == 12
    s = class_scores(cm)
    iou = [3 / (4 + 4 - 3), 4 / (5 + 6 - 4), math.nan, 1 / (3 + 1 - 1)]
    np.testing.assert_allclose(s["iou"], iou)
    assert math.isnan(s["iou"][2])  # absent from the ground truth: no IoU, not 0
    assert s["miou"] == pytest.approx(np.mean([iou[0], iou[1], iou[3]]))
    assert s["mean_accuracy"] == pytest.approx(np.mean([3 / 4, 4 / 5, 1 / 3]))
    assert s["global_accuracy"] == pytest.approx(8 / 12)
    np.testing.assert_allclose(s["precision"], [3 / 4, 4 / 6, 0.0, 1.0])
    assert s["pixels"] == [4, 5, 0, 3]


def test_the_ignore_label_inside_the_class_range_is_left_out_of_the_means():
    target = np.array([0, 0, 1, 2, 2])
    pred = np.array([0, 1, 1, 2, 0])
    cm = confusion_matrix(pred, target, 3, ignore_index=2)
    assert cm[2].sum() == 0 and cm.sum() == 3
    s = class_scores(cm, ignore_index=2)
    assert math.isnan(s["iou"][2]) and s["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_median_frequency_weights():
    # class 0: 600 px over 3 images (200 px each), class 1: 100 px over 1 image, class 2: never
    w = median_frequency_weights(np.array([600, 100, 0]), np.array([3, 1, 0]))
    np.testing.assert_allclose(w, [150 / 200, 150 / 100, 0.0])
