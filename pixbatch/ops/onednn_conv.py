"""Conv2d (+ activation) as one oneDNN primitive with pre-packed weights, for CPU inference.

Eager PyTorch runs a CPU convolution through oneDNN but re-lays-out its weight on every call and
runs the activation after it as a second pass over memory. ``OneDNNConv2d`` packs the weight once
per dtype (``mkldnn._reorder_convolution_weight``, what inductor's freezing does at compile time) and
calls ``mkldnn._convolution_pointwise`` with the activation as a post-op, so the output is written
once. Everything else (other devices and dtypes, NCHW inputs, autograd, bf16 on a CPU whose oneDNN has
no bf16) takes the module's plain conv + activation path, which computes the same function; a PyTorch
without oneDNN cannot build one (``pack_convolutions`` checks first).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# nn activation -> (oneDNN post-op name, its scalar arguments)
POST_OPS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.GELU: "gelu", nn.SiLU: "swish", nn.Sigmoid: "sigmoid"}


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


@functools.cache
def bf16_packable() -> bool:
    """oneDNN packs and runs bf16 convolutions on this CPU (it needs AVX512BW/VL/DQ or AVX-NE-CONVERT: an
    AVX2-only CPU has neither, and bf16 then takes the module's plain path)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def fusable_activation(module: nn.Module) -> bool:
    return type(module) in POST_OPS and not (isinstance(module, nn.GELU) and module.approximate != "none")


def is_packable_conv(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
            and module.weight.dtype == torch.float32)


class OneDNNConv2d(nn.Conv2d):
    """A ``Conv2d`` (the same parameters, so ``.weight`` and the state dict are unchanged) followed by
    an optional activation, built from the modules it replaces."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module | None = None) -> None:
        if not onednn_available():
            raise ValueError("this PyTorch has no oneDNN convolution with post-ops")
        if not is_packable_conv(conv) or (act is not None and not fusable_activation(act)):
            raise ValueError("needs a zero-padded fp32 Conv2d and, optionally, a ReLU/LeakyReLU/GELU/SiLU/Sigmoid")
        with torch.device("meta"):  # shapes only: the parameters are the given conv's own
            super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             conv.dilation, conv.groups, conv.bias is not None)
        self.weight, self.bias = conv.weight, conv.bias
        self.act = act if act is not None else nn.Identity()
        self.attr = "none" if act is None else POST_OPS[type(act)]
        self.scalars = [act.negative_slope] if isinstance(act, nn.LeakyReLU) else [None]
        self.algorithm = "none" if isinstance(act, nn.GELU) else None
        self._packed: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _weights(self, dtype: torch.dtype, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        packed = self._packed.get(dtype)
        if packed is None:
            w = torch.ops.mkldnn._reorder_convolution_weight(self.weight.detach().to(dtype), list(self.padding),
                                                              list(self.stride), list(self.dilation), self.groups,
                                                              list(x.shape))
            packed = (w, None if self.bias is None else self.bias.detach().to(dtype))
            self._packed[dtype] = packed
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if (x.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or torch.is_grad_enabled()
                or not x.is_contiguous(memory_format=torch.channels_last)
                or dtype == torch.bfloat16 and not bf16_packable()):
            return self.act(super().forward(x))
        w, b = self._weights(dtype, x)
        return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), w, b, list(self.padding), list(self.stride),
                                                       list(self.dilation), self.groups, self.attr, self.scalars,
                                                       self.algorithm)

    def _apply(self, fn, recurse=True):  # .to(device/dtype) invalidates the packed copies
        self._packed = {}
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, post-op={self.attr}"
