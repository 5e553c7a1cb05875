"""conv3x3 -> PixelShuffle (-> activation) (+ nearest-upsampled residual), fused.

``conv_pixel_shuffle_ref`` is the definition (PyTorch ops); ``conv_pixel_shuffle`` runs the Triton
kernel on CUDA when it supports the case and the reference otherwise (and everywhere when
``PIXBATCH_TRITON=0``). It is registered as the custom op ``pixbatch::conv_pixel_shuffle`` so that
torch.compile keeps it as one node of its graph instead of tracing into Triton.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = ("none", "relu", "prelu", "leaky_relu")


def conv_pixel_shuffle_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: int,
                           act: str = "none", alpha: torch.Tensor | None = None, slope: float = 0.01,
                           residual: torch.Tensor | None = None) -> torch.Tensor:
    """act(pixel_shuffle(conv2d(x, weight, bias, padding=1), r)) + nearest_upsample(residual, r)."""
    y = F.conv2d(x, weight, bias, padding=1)
    return _epilogue(F.pixel_shuffle(y, r) if r > 1 else y, r, act, alpha, slope, residual)


def _epilogue(y: torch.Tensor, r: int, act: str, alpha: torch.Tensor | None, slope: float,
              residual: torch.Tensor | None) -> torch.Tensor:
    """The activation, then the nearest-upsampled residual, on the shuffled output."""
    if act == "relu":
        y = F.relu(y)
    elif act == "prelu":
        y = F.prelu(y, alpha)
    elif act == "leaky_relu":
        y = F.leaky_relu(y, slope)
    if residual is not None:
        y = y + (F.interpolate(residual, scale_factor=r, mode="nearest") if r > 1 else residual)
    return y


def triton_enabled() -> bool:
    """Kernels are on unless PIXBATCH_TRITON=0, and need triton importable."""
    if os.environ.get("PIXBATCH_TRITON", "1") == "0":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreting() -> bool:
    """Triton kernels run in its CPU interpreter (how CI tests them)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _use_triton(x: torch.Tensor) -> bool:
    return (x.is_cuda or triton_interpreting()) and triton_enabled()


@torch.library.custom_op("pixbatch::conv_pixel_shuffle", mutates_args=())
def _conv_pixel_shuffle_op(x: torch.Tensor, weight: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None,
                           b_packed: torch.Tensor | None, r: int, act: str, alpha: torch.Tensor | None, slope: float,
                           residual: torch.Tensor | None) -> torch.Tensor:
    if _use_triton(x):
        from pixbatch.kernels.conv_pixel_shuffle import UnsupportedCase, conv3x3_pixel_shuffle

        try:
            return conv3x3_pixel_shuffle(x, w_packed, None if b_packed is None else b_packed.to(x.dtype), r,
                                         act=act, alpha=alpha, slope=slope, residual=residual)
        except UnsupportedCase:
            pass
    return _torch_path(x, weight, bias, r, act, alpha, slope, residual)


def _torch_path(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: int, act: str,
                alpha: torch.Tensor | None, slope: float, residual: torch.Tensor | None) -> torch.Tensor:
    """Without Triton: the channels-last CPU path where it applies, else the reference; weights in
    x's dtype, output channels-last."""
    weight, bias = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
    alpha = None if alpha is None else alpha.to(x.dtype)
    if x.device.type == "cpu" and r > 1 and x.is_contiguous(memory_format=torch.channels_last):
        return conv_pixel_shuffle_nhwc(x, weight, bias, r, act, alpha, slope, residual)
    y = conv_pixel_shuffle_ref(x, weight, bias, r, act, alpha, slope, residual)
    return y.contiguous(memory_format=torch.channels_last)


def conv_pixel_shuffle_nhwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: int,
                            act: str = "none", alpha: torch.Tensor | None = None, slope: float = 0.01,
                            residual: torch.Tensor | None = None) -> torch.Tensor:
    """The same result for channels-last inputs, without PixelShuffle's strided gather: the conv writes
    its output channels in (i, j, c) order instead of (c, i, j), so in NHWC memory each output pixel's
    C values are contiguous and the shuffle is one copy of contiguous runs of C (PyTorch's
    pixel_shuffle on channels-last tensors gathers element by element: a quarter of an x4 EDSR's CPU
    time). Output is NCHW-shaped, channels-last in memory."""
    c = weight.shape[0] // (r * r)
    y = F.conv2d(x, *_ijc_order(weight, bias, r), padding=1)  # channels-last in, channels-last out
    n, _, h, w = y.shape
    y = (y.permute(0, 2, 3, 1).reshape(n, h, w, r, r, c).permute(0, 1, 3, 2, 4, 5)
         .reshape(n, h * r, w * r, c).permute(0, 3, 1, 2))
    return _epilogue(y, r, act, alpha, slope, residual).contiguous(memory_format=torch.channels_last)


def conv_pixel_shuffle_blocks_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: int,
                                    act: str = "none", alpha: torch.Tensor | None = None, slope: float = 0.01,
                                    residual: torch.Tensor | None = None) -> torch.Tensor:
    """The same result in plain, traceable ops for graph compilers (the OpenVINO backend converts
    the traced model): the conv writes (i, j, c)-ordered channels and the shuffle is the blocks-first
    depth-to-space, which a compiler that keeps tensors channels-last runs as copies of contiguous runs
    of C (OpenVINO: the x4 EDSR's two shuffles 26 -> 11 ms at 256 px, the whole model 51 -> 42 ms)."""
    c = weight.shape[0] // (r * r)
    y = F.conv2d(x, *_ijc_order(weight, bias, r), padding=1)
    n, _, h, w = y.shape
    y = y.reshape(n, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * r, w * r)
    return _epilogue(y, r, act, alpha, slope, residual)


def _ijc_order(weight: torch.Tensor, bias: torch.Tensor | None, r: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conv's output channels reordered from PixelShuffle's (c, i, j) to (i, j, c)."""
    c_total, c_in = weight.shape[:2]
    c = c_total // (r * r)
    w_ijc = weight.reshape(c, r, r, c_in, *weight.shape[2:]).permute(1, 2, 0, 3, 4, 5).reshape(weight.shape)
    return w_ijc, None if bias is None else bias.reshape(c, r, r).permute(1, 2, 0).reshape(-1)


@_conv_pixel_shuffle_op.register_fake
def _(x, weight, w_packed, bias, b_packed, r, act, alpha, slope, residual):
    n, _, h, w = x.shape
    c = weight.shape[0] // (r * r)
    return x.new_empty((n, c, h * r, w * r)).contiguous(memory_format=torch.channels_last)


def conv_pixel_shuffle(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: int, act: str = "none",
                       alpha: torch.Tensor | None = None, slope: float = 0.01, residual: torch.Tensor | None = None,
                       *, packed: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> torch.Tensor:
    """Functional form; pass ``packed`` (from ``pack_weight``) to avoid repacking on every call."""
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {act!r}")
    if packed is None:
        packed = pack_weight(weight, bias, r)
    return _conv_pixel_shuffle_op(x, weight, packed[0], bias, packed[1], r, act, alpha, slope, residual)


def pack_weight(weight: torch.Tensor, bias: torch.Tensor | None, r: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reorder output channels from PixelShuffle's (c, i, j) to (i, j, c) and lay K out tap by tap."""
    c_out_total, c_in = weight.shape[:2]
    c = c_out_total // (r * r)
    packed = weight.reshape(c, r, r, c_in, 3, 3).permute(4, 5, 3, 1, 2, 0).reshape(9 * c_in, c_out_total)
    b = None if bias is None else bias.reshape(c, r, r).permute(1, 2, 0).reshape(-1)
    return packed.contiguous(), None if b is None else b.contiguous()


class ConvPixelShuffle(nn.Module):
    """A Conv2d(3x3, padding 1) followed by PixelShuffle(r), an optional activation and an optional
    nearest-upsampled residual, computed by one kernel. Built from the modules it replaces."""

    def __init__(self, conv: nn.Conv2d, r: int, act: str = "none", alpha: torch.Tensor | None = None,
                 slope: float = 0.01, residual: bool = False, cpu_path: bool = False) -> None:
        super().__init__()
        self.cpu_path = cpu_path  # CPU tensors take conv_pixel_shuffle_nhwc, never Triton's interpreter
        if not is_fusable_conv(conv):
            raise ValueError("only 3x3 convolutions with stride 1, padding 1, no dilation and no groups fuse")
        self.r, self.act, self.slope, self.residual = r, act, float(slope), residual
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.alpha = None if alpha is None else nn.Parameter(alpha.detach().clone(), requires_grad=False)
        w_packed, b_packed = pack_weight(self.weight.data, None if self.bias is None else self.bias.data, r)
        self.register_buffer("w_packed", w_packed, persistent=False)
        self.register_buffer("b_packed", b_packed, persistent=False)
        self._packed_as: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _packed(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The packed weights in the compute dtype, converted once rather than on every call."""
        if dtype == self.w_packed.dtype:
            return self.w_packed, self.b_packed
        cached = self._packed_as.get(dtype)
        if cached is None or cached[0].device != self.w_packed.device:
            cached = (self.w_packed.to(dtype), None if self.b_packed is None else self.b_packed.to(dtype))
            self._packed_as[dtype] = cached
        return cached

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if torch.jit.is_tracing():  # a graph compiler's trace: plain ops it can convert
            return conv_pixel_shuffle_blocks_first(x, self.weight, self.bias, self.r, self.act, self.alpha,
                                                   self.slope, residual)
        dtype = _autocast_dtype(x)
        if dtype is not None:
            x = x.to(dtype)
            residual = None if residual is None else residual.to(dtype)
        if self.cpu_path and x.device.type == "cpu":
            return _torch_path(x, self.weight, self.bias, self.r, self.act, self.alpha, self.slope, residual)
        w_packed, b_packed = self._packed(x.dtype)
        return _conv_pixel_shuffle_op(x, self.weight, w_packed, self.bias, b_packed, self.r, self.act,
                                      self.alpha, self.slope, residual)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0] // self.r ** 2}, r={self.r}, act={self.act}"


def is_fusable_conv(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would give a convolution here (custom ops are not autocast-aware)."""
    device = x.device.type
    try:
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
    except TypeError:  # older torch: no per-device form
        if device == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None
