import math

import pytest
import torch

from pixbatch.train.losses import SegLoss, bce_loss, ce_loss, dice_loss, focal_loss


def _bin(logits, target):
    return torch.tensor(logits, dtype=torch.float32).view(1, 1, 1, -1), torch.tensor(target).view(1, 1, -1)


def test_bce_by_hand():
    logits, target = _bin([0.0, 2.0, -1.0], [1, 0, 0])
    # -log(sigmoid(0)), -log(1 - sigmoid(2)), -log(1 - sigmoid(-1))
    expected = (math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e ** -1)) / 3
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_ignores_pixels():
    logits, target = _bin([0.0, 2.0, -1.0], [1, 255, 0])
    expected = (math.log(2) + math.log(1 + math.e ** -1)) / 2
    assert bce_loss(logits, target, ignore_index=255).item() == pytest.approx(expected, rel=1e-6)


def test_focal_by_hand():
    logits, target = _bin([0.0, 2.0], [1, 1])
    p = [0.5, 1 / (1 + math.e ** -2)]
    expected = sum(-((1 - q) ** 2) * math.log(q) for q in p) / 2
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # gamma = 0 is plain BCE
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(bce_loss(logits, target).item(), rel=1e-6)


def test_focal_multiclass_gamma0_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    assert focal_loss(logits, target, gamma=0).item() == pytest.approx(ce_loss(logits, target).item(), rel=1e-6)


def test_soft_dice_by_hand():
    # probabilities 0.5, 0.5, sigmoid(-inf) ~ 0 against target 1, 0, 0
    logits, target = _bin([0.0, 0.0, -100.0], [1, 0, 0])
    inter, denom = 0.5, 1.0 + 1.0
    expected = 1 - (2 * inter + 1) / (denom + 1)
    assert dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    perfect, _ = _bin([100.0, -100.0, -100.0], [1, 0, 0])
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)


def test_multiclass_dice_and_ce_ignore_index():
    logits = torch.tensor([[10.0, -10.0], [-10.0, 10.0], [0.0, 0.0]]).reshape(1, 3, 1, 2)  # predicts 0, 1
    target = torch.tensor([[[0, 1]]])
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-4)
    wrong = torch.tensor([[[1, 9]]])  # second pixel ignored
    loss = ce_loss(logits, wrong, ignore_index=9).item()
    assert loss == pytest.approx(20.0, abs=1e-3)  # -log softmax of class 1 at pixel 0: 10 - (-10)


def test_sums_and_unknown_names():
    logits, target = _bin([0.5, -0.5], [1, 0])
    combo = SegLoss("bce+dice")(logits, target).item()
    assert combo == pytest.approx(bce_loss(logits, target).item() + dice_loss(logits, target).item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown loss .bce\+lovasz."):
        SegLoss("bce+lovasz")
