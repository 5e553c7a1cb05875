"""Weights rounded to int8's grid by their effect on the output (runtime/int8_rounding.py): on NNCF's grid,
with each channel's largest weight kept, and closer in output than rounding each weight to its nearest level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixbatch.runtime.int8_rounding import grid_steps, round_weights, rounded


def correlated_inputs(d: int, n: int, seed: int = 0) -> torch.Tensor:
    """n samples of d inputs that correlate, as a convolution's unfolded neighbouring pixels do."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3 + torch.eye(d, dtype=torch.float64)
    return torch.randn(d, n, generator=g, dtype=torch.float64).T @ mix  # n x d


@pytest.mark.parametrize("steps", [127.0, 63.5])
def test_rounded_weights_lie_on_the_grid_and_beat_rounding_to_nearest_in_output(steps):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 36, generator=g, dtype=torch.float64)
    x = correlated_inputs(36, 2000)
    q = rounded(w, x.T @ x, steps).double()
    peak = w.abs().amax(dim=1, keepdim=True)
    step = peak / steps
    ends = w.abs().argmax(dim=1)
    rows = torch.arange(8)
    assert torch.equal(q[rows, ends], w[rows, ends].float().double())  # NNCF finds the same range
    k = q / step
    k[rows, ends] = 0
    assert torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= np.floor(steps)
    nearest = torch.clamp(torch.round(w / step), -np.floor(steps), np.floor(steps)) * step
    nearest[rows, ends] = w[rows, ends]
    err = lambda v: float(((x @ (v - w).T) ** 2).mean())  # noqa: E731
    assert err(q) < 0.7 * err(nearest)


def test_the_grid_follows_nncfs_overflow_fix():
    assert grid_steps("enable", first=False) == 63.5 and grid_steps("enable", first=True) == 63.5
    assert grid_steps("first_layer_only", first=True) == 63.5 and grid_steps("first_layer_only", first=False) == 127
    assert grid_steps("disable", first=True) == 127


def test_round_weights_rounds_a_copys_convolutions_and_nothing_else():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                        nn.Conv2d(8, 4, 1)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    calibration = [np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32) for i in range(3)]
    out = round_weights(net, calibration, "first_layer_only")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the source is untouched
    state = out.state_dict()
    for name, steps in (("0", 63.5), ("3", 127.0)):
        w = state[f"{name}.weight"].reshape(state[f"{name}.weight"].shape[0], -1)
        k = w / (w.abs().amax(dim=1, keepdim=True) / steps)
        k[torch.arange(w.shape[0]), w.abs().argmax(dim=1)] = 0
        assert torch.allclose(k, k.round(), atol=1e-3) and not torch.equal(state[f"{name}.weight"], before[f"{name}.weight"])
    assert torch.equal(state["2.weight"], before["2.weight"])  # grouped: left to NNCF
    assert all(torch.equal(state[f"{n}.bias"], before[f"{n}.bias"]) for n in ("0", "2", "3"))
