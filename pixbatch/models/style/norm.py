"""Instance normalisation whose statistics can come from outside the tensor it normalises.

Instance norm makes every output pixel depend on statistics of the whole input: a window of a huge
image normalised with its own statistics comes out in another colour than the same pixels of the
whole image. Each ``InstanceNorm`` here can hold fixed per-channel statistics (the whole image's,
measured window by window beforehand), and can hand its input to a probe that stops the forward pass
(how those statistics are measured, one layer after the other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a probe once it has seen the activation it wanted: the rest of the net is not run."""


class InstanceNorm(nn.Module):
    """Affine instance normalisation (biased variance, as PyTorch and TensorFlow compute it). The
    statistics are computed in fp32 whatever the autocast dtype."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None  # fixed (mean, var), each (C,)
        self.probe: Callable[[torch.Tensor], None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.probe is not None:
            self.probe(x)
        if self.stats is None:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
        else:
            mean, var = (s.to(x.device, torch.float32).view(1, -1, 1, 1) for s in self.stats)
        scale = self.weight.float().view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        shift = self.bias.float().view(1, -1, 1, 1) - mean * scale
        return (x * scale.to(x.dtype) + shift.to(x.dtype)) if x.dtype != torch.float32 else torch.addcmul(shift, x, scale)


def norm_layers(module: nn.Module) -> list[InstanceNorm]:
    """The instance-norm layers of a model in the order the forward pass meets them."""
    return [m for m in module.modules() if isinstance(m, InstanceNorm)]


@contextmanager
def fixed_stats(module: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Run ``module`` with the given statistics in its first ``len(stats)`` instance-norm layers."""
    layers = norm_layers(module)
    try:
        for layer, s in zip(layers, stats):
            layer.stats = s
        yield
    finally:
        for layer in layers:
            layer.stats = None


def drop_running_stats(state: dict) -> None:
    """Remove the running statistics that older PyTorch saved for instance norm (it never uses them)."""
    for key in [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]:
        del state[key]
