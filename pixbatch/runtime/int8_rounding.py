"""Convolution weights rounded to int8's grid by their effect on the output, not each to its nearest level:
the weight half of int8's error, before NNCF quantizes the activations (runtime/int8_quantize.py).

Rounding each weight to the nearest level of its channel's grid is what post-training quantization does by
default, and for super-resolution it is most of the loss: rlfn_x4 with 7-bit weights (AVX2's overflow fix)
and float activations agreed with fp32's output at 41.0 dB. Here each convolution's weights are rounded one
input column at a time, and each column's rounding error is carried into the columns not yet rounded, in
proportion to how the calibration inputs correlate them (GPTQ: Frantar et al., 2022, "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", applied to a convolution as to the
matrix of its unfolded inputs): 46.4 dB for the same model and grid.

The grid is the one NNCF then gives the weights (symmetric, per output channel, ``grid_steps`` steps from zero
to the channel's largest magnitude), and each channel's largest weight keeps its value, so NNCF finds the
same grid and its own rounding of these weights changes nothing else.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DAMPING = 0.01  # added to the inputs' second-moment matrix's diagonal, as a share of its mean


def round_weights(source: nn.Module, calibration: list[np.ndarray], fix: str) -> nn.Module:
    """A copy of ``source`` with the weights of its ``nn.Conv2d`` modules rounded to the grid NNCF gives them
    under overflow fix ``fix`` (``grid_steps``), on the ``calibration`` inputs (NCHW float32); grouped
    convolutions are left as they are."""
    model = copy.deepcopy(source).eval().float()
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1}
    levels = {name: grid_steps(fix, i == 0) for i, name in enumerate(convs)}
    moments = {name: None for name in convs}

    def accumulate(name: str):
        def hook(module: nn.Conv2d, args) -> None:
            cols = F.unfold(args[0].float(), module.kernel_size, dilation=module.dilation, padding=module.padding,
                            stride=module.stride)
            cols = cols.transpose(0, 1).reshape(cols.shape[1], -1).double()
            moment = cols @ cols.T
            moments[name] = moment if moments[name] is None else moments[name] + moment
        return hook

    hooks = [m.register_forward_pre_hook(accumulate(name)) for name, m in convs.items()
             if m.padding_mode == "zeros" and isinstance(m.padding, tuple)]
    try:
        with torch.no_grad():
            for x in calibration:
                model(torch.from_numpy(x))
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for name, module in convs.items():
            if moments[name] is not None:
                w = module.weight
                w.copy_(rounded(w.reshape(w.shape[0], -1).double(), moments[name], levels[name]).reshape(w.shape))
    return model


def rounded(weights: torch.Tensor, moment: torch.Tensor, steps: float) -> torch.Tensor:
    """``weights`` (output channels x inputs) on the grid of ``steps`` per row (``grid_steps``), each column's
    error carried forward through the inverse of ``moment`` (inputs x inputs); float32. Each row's largest
    weight keeps its value, so that NNCF finds the same range: where that is half a step beyond the last
    level (7 bits), the error carried is the one NNCF's rounding of it will make."""
    w = weights.clone()
    d = w.shape[1]
    h = moment + DAMPING * moment.diagonal().mean().clamp_min(1e-12) * torch.eye(d, dtype=moment.dtype)
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    peak = w.abs().amax(dim=1)
    step = torch.where(peak > 0, peak / steps, torch.ones_like(peak))
    last = float(np.floor(steps))
    ends = w.abs().argmax(dim=1)
    out = torch.empty_like(w)
    for i in range(d):
        col = w[:, i]
        end = ends == i
        q = torch.where(end, torch.sign(weights[:, i]) * last * step,
                        torch.clamp(torch.round(col / step), -last, last) * step)
        out[:, i] = torch.where(end, weights[:, i], q)
        error = (col - q) / upper[i, i]
        w[:, i + 1 :] -= error[:, None] * upper[i, i + 1 :][None, :]
    return out.float()


def grid_steps(fix: str, first: bool) -> float:
    """Steps from zero to a channel's largest weight in NNCF's symmetric per-channel int8 grid: 127, or
    63.5 where its overflow fix halves the range (every layer with "enable", the first with
    "first_layer_only"; its levels are then the multiples of largest / 63.5 up to 63)."""
    return 63.5 if fix == "enable" or (fix == "first_layer_only" and first) else 127.0
