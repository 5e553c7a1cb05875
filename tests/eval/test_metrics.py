import numpy as np
import pytest

from pixbatch.eval.metrics import psnr, rgb_to_y, sr_metrics, ssim


def test_psnr_of_a_constant_error():
    a = np.full((8, 8), 100.0)
    assert psnr(a, a + 5) == pytest.approx(10 * np.log10(255**2 / 25))
    assert psnr(a, a) == float("inf")


def test_shave_ignores_the_border():
    a = np.zeros((10, 10))
    b = a.copy()
    b[0, :] = 255  # only the border differs
    assert psnr(a, b, shave=1) == float("inf")


def test_y_channel_of_bt601():
    assert rgb_to_y(np.array([[[0, 0, 0]]]))[0, 0] == pytest.approx(16)
    assert rgb_to_y(np.array([[[255, 255, 255]]]))[0, 0] == pytest.approx(235)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: only luminance remains
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected)
    noise = np.random.default_rng(0).uniform(0, 255, (32, 32))
    assert ssim(noise, noise) == pytest.approx(1.0)
    assert ssim(noise, 255 - noise) < 0


def test_sr_metrics_keys():
    hr = np.random.default_rng(1).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    m = sr_metrics(hr, hr, 4)
    assert set(m) == {"psnr_y", "ssim_y", "psnr_rgb"} and m["ssim_y"] == pytest.approx(1.0)


# -- segmentation -----------------------------------------------------------------------------------

def test_confusion_and_scores_by_hand():
    from pixbatch.eval.metrics import confusion, scores_from_confusion

    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    target = np.array([[1, 0, 1, 0], [1, 0, 0, 0]])
    c = confusion(pred, target)
    assert c == {"tp": 2, "fp": 1, "fn": 1, "tn": 4}
    s = scores_from_confusion(c)
    assert s["iou"] == pytest.approx(2 / 4) and s["dice"] == pytest.approx(4 / 6)
    assert s["accuracy"] == pytest.approx(6 / 8) and s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3) and s["specificity"] == pytest.approx(4 / 5)
    roi = np.array([[1, 0, 1, 1], [0, 0, 0, 0]], bool)
    assert confusion(pred, target, roi) == {"tp": 1, "fp": 0, "fn": 1, "tn": 1}


def test_empty_prediction_of_empty_target_is_perfect():
    from pixbatch.eval.metrics import confusion, scores_from_confusion

    s = scores_from_confusion(confusion(np.zeros((3, 3)), np.zeros((3, 3))))
    assert s["iou"] == 1.0 and s["dice"] == 1.0


def test_auc_matches_pair_counting_with_ties():
    from pixbatch.eval.metrics import auc_roc

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200) / 5.0  # many ties
    target = rng.random(200) < 0.3
    pos, neg = scores[target], scores[~target]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert auc_roc(scores, target) == pytest.approx(brute, abs=1e-12)
    assert auc_roc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(auc_roc(np.array([0.1, 0.9]), np.array([1, 1])))


def test_multiclass_scores_by_hand():
    from pixbatch.eval.metrics import multiclass_scores

    pred = np.array([0, 0, 1, 2, 2])
    target = np.array([0, 1, 1, 2, 9])
    s = multiclass_scores(pred, target, 3, ignore_index=9)
    # class 0: inter 1, union 2; class 1: inter 1, union 2; class 2: inter 1, union 1
    assert s["iou"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert s["dice"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert s["accuracy"] == pytest.approx(3 / 4)
