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


def test_the_moving_average_warms_up_then_keeps_its_decay():
    from torch.optim.swa_utils import AveragedModel

    from pixbatch.train.loop import ema_update

    net = torch.nn.Linear(1, 1, bias=False)
    ema = AveragedModel(net, multi_avg_fn=ema_update(0.9))
    seen = []
    for value in (1.0, 2.0, 3.0, 3.0):
        net.weight.data.fill_(value)
        before = ema.module.weight.item()
        ema.update_parameters(net)
        seen.append((before, ema.module.weight.item()))
    assert seen[0][1] == 1.0  # the first update copies
    d1 = 2 / 11  # after one update: (1 + n) / (10 + n), below 0.9
    assert seen[1][1] == pytest.approx(d1 * 1.0 + (1 - d1) * 2.0)
    d2 = 3 / 12
    assert seen[2][1] == pytest.approx(d2 * seen[1][1] + (1 - d2) * 3.0)
    assert min(0.9, 100 / 109) == 0.9  # later: the decay itself


def test_the_state_is_written_by_minutes_when_asked(tmp_path):
    import random

    from pixbatch.train.loop import LoopOptions, TrainLoop

    net = torch.nn.Linear(2, 2)
    state = tmp_path / "m.state"
    loop = TrainLoop(net, LoopOptions(steps=5, lr=1e-2, save_every=None, save_minutes=1e-9, amp=False),
                     torch.device("cpu"), state, random.Random(0), progress=False)
    written = []
    loop.save_state = lambda step: written.append(step)
    loop.run(lambda step: (torch.ones(1, 2), torch.zeros(1, 2)), torch.nn.functional.l1_loss)
    assert written == [1, 2, 3, 4]  # every step, as each took longer than 1e-9 minutes; not the last
    loop = TrainLoop(net, LoopOptions(steps=5, lr=1e-2, save_every=None, save_minutes=60, amp=False),
                     torch.device("cpu"), state, random.Random(0), progress=False)
    loop.save_state = lambda step: written.append(step)
    loop.run(lambda step: (torch.ones(1, 2), torch.zeros(1, 2)), torch.nn.functional.l1_loss)
    assert written == [1, 2, 3, 4]  # an hour had not passed
