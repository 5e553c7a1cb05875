"""The training loop's one-cycle schedule works for every step count (10 steps once divided by zero)."""

import math

import pytest
import torch

from pixbatch.train.loop import one_cycle


@pytest.mark.parametrize("steps", range(1, 65))
def test_one_cycle_schedule_runs_every_step_count(steps):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = one_cycle(opt, 1e-3, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert all(math.isfinite(lr) and lr > 0 for lr in lrs), lrs
    assert lrs[-1] == min(lrs)  # annealed to the end
    if steps >= 3:  # warms up to the peak, after at least one step and within the first tenth or so
        peak = lrs.index(max(lrs))
        assert max(lrs) == pytest.approx(1e-3) and 1 <= peak <= max(2, round(0.1 * steps))
