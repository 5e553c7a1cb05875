"""Whole-image instance-norm statistics of an image cut into windows, measured window by window.

A net with instance norm normalises each layer by the statistics of the whole input, so windows of a
huge image normalised with their own statistics disagree in colour and contrast. Here the statistics
of every instance-norm layer are measured over the image's whole frame (the pixels a whole-image run
sees, its bottom/right padding included), one layer after the other: for layer l, every window runs
up to that layer with the statistics already measured for layers before it, and the activations of
its core add to exact running sums (float64). The windows then run with all statistics fixed, and the
stitched output equals the whole-image output (up to float rounding). The price: one partial pass per
layer before the real one."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from pixbatch.models.style.norm import StopForward, fixed_stats, norm_layers
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas, read_band
from pixbatch.runtime.prepare import Runner
from pixbatch.runtime.windows import Axis

Stats = list[tuple[torch.Tensor, torch.Tensor]]


def core_span(axis: Axis, i: int, stride: int) -> tuple[int, int]:
    """Activation positions (at ``stride`` input px each) that window i contributes, relative to its
    start: its core, rounded up at both cuts; the last window also covers the frame's padded tail."""
    lo = 0 if i == 0 else -(-axis.cuts[i] // stride)
    hi = axis.frame // stride if i == len(axis) - 1 else -(-axis.cuts[i + 1] // stride)
    start = axis.starts[i] // stride
    return lo - start, hi - start


def measure_norm_stats(runner: Runner, canvas: Canvas) -> Stats:
    """(mean, var) per instance-norm layer over the canvas's whole frame, computed window by window."""
    module = runner.module
    ys, xs = canvas.plan.ys, canvas.plan.xs
    if ys.border or xs.border:
        raise ValueError("whole-image statistics need windows without mirrored borders")
    run = runner.run_fp32 if canvas.fp32 else runner.run_eager
    stats: Stats = []
    seen: list[torch.Tensor] = []

    def probe(a: torch.Tensor) -> None:
        seen.append(a)
        raise StopForward

    for layer in norm_layers(module):
        total = sq = None
        count = 0
        layer.probe = probe
        try:
            with fixed_stats(module, stats):
                for i in range(len(ys)):
                    planes = read_band(canvas, i)
                    for j in range(len(xs)):
                        try:
                            run(planes[..., xs.starts[j]:xs.starts[j] + xs.window])
                        except StopForward:
                            pass
                        a = seen.pop()
                        stride = ys.window // a.shape[-2]
                        (r0, r1), (c0, c1) = core_span(ys, i, stride), core_span(xs, j, stride)
                        part = a[..., r0:r1, c0:c1].double()
                        s1, s2 = part.sum(dim=(0, 2, 3)), part.square().sum(dim=(0, 2, 3))
                        total, sq = (s1, s2) if total is None else (total + s1, sq + s2)
                        count += part.shape[0] * part.shape[2] * part.shape[3]
        finally:
            layer.probe = None
        mean = total / count
        var = (sq / count - mean.square()).clamp_min(0)
        stats.append((mean.float(), var.float()))
    return stats


def whole_image_norm(runner: Runner) -> Callable[[Canvas, WindowEngine], Callable[[], AbstractContextManager]]:
    """A ``Canvas.prepare`` hook: measure the statistics, then run every window with them fixed."""

    def prepare(canvas: Canvas, engine: WindowEngine) -> Callable[[], AbstractContextManager]:
        stats = measure_norm_stats(runner, canvas)
        if not all(math.isfinite(float(m.sum())) and math.isfinite(float(v.sum())) for m, v in stats):
            from pixbatch.runtime.prepare import ModelFailedError

            raise ModelFailedError("instance-norm statistics of the image are NaN or Inf (a damaged model?)")
        return lambda: fixed_stats(runner.module, stats)

    return prepare
