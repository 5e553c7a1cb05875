"""Fused 3x3 convolution + PixelShuffle (+ bias, activation, residual) as an implicit GEMM in Triton.

Shapes (all tensors channels-last in memory):
    x        [N, H, W, C_in]           input, any strides (NHWC-contiguous is fastest)
    w_packed [9 * C_in, C * r * r]     rows: tap-major (ky, kx), then input channel;
                                       columns: (i, j, c) order, i.e. the conv's output channels
                                       reordered once from PixelShuffle's (c, i, j)
    bias     [C * r * r]               in the same (i, j, c) order
    alpha    [C]                       PReLU slopes per output channel (after the shuffle)
    residual [N, H, W, C]              added to every pixel of the r x r block it maps to
                                       (a nearest-neighbour upsampled skip; r = 1: a plain residual)
    out      [N, H * r, W * r, C]      out[n, h*r+i, w*r+j, c] = act(conv(x)[n, (i*r+j)*C + c, h, w]) + res

GEMM view: M = N*H*W low-resolution pixels, N_gemm = C*r*r columns, K = 9*C_in walked tap by tap
over contiguous input channels. Accumulation is fp32; the epilogue stores each column straight to its
high-resolution position, so the C*r*r-channel intermediate never exists in memory.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

ACTIVATIONS = {"none": 0, "relu": 1, "prelu": 2, "leaky_relu": 3}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the autotune space on a GPU. Every entry is
# compiled ahead of time for sm_80 and sm_90a in CI and checked against those architectures' limits
# (pixbatch/kernels/aot.py, tests/kernels/test_aot.py).
AUTOTUNE_SPACE = [
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (128, 128, 64, 8, 3),
    (64, 64, 32, 4, 4), (128, 32, 32, 4, 4), (64, 32, 16, 2, 4), (256, 64, 32, 8, 3),
    (128, 256, 32, 8, 3), (64, 256, 32, 8, 3),
]


def _configs() -> list[triton.Config]:
    """Autotune space; the interpreter (CPU tests) gets one small config, as timing it means nothing."""
    if _interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
            for bm, bn, bk, warps, stages in AUTOTUNE_SPACE]


@triton.autotune(
    configs=_configs(),
    key=["M", "C_in", "N_cols", "R", "stride_xw", "stride_xc", "stride_ow", "stride_oc", "ACT", "HAS_RES"],
)
@triton.jit
def conv3x3_pixel_shuffle_kernel(
    # pointers
    x_ptr, w_ptr, bias_ptr, alpha_ptr, res_ptr, out_ptr,
    # sizes
    M, H, W, C_in, N_cols, C_out,
    # strides (elements)
    stride_xn, stride_xh, stride_xw, stride_xc,
    stride_wk, stride_wn,
    stride_rn, stride_rh, stride_rw, stride_rc,
    stride_on, stride_oh, stride_ow, stride_oc,
    slope,
    # constexpr
    R: tl.constexpr, ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)

    # Rows: low-resolution pixels (n, h, w). Indices are 32-bit (M < 2^31 pixels); element offsets
    # are 64-bit, so huge tensors cannot overflow them, without paying for 64-bit division.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < M
    hw = H * W
    n_idx = offs_m // hw
    h_idx = (offs_m % hw) // W
    w_idx = offs_m % W
    # Columns: (i, j, c) order.
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < N_cols
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    # Main loop: 9 taps, each a [BLOCK_M, C_in] x [C_in, BLOCK_N] product; zero padding by masking.
    for tap in range(9):
        hh = h_idx + (tap // 3 - 1)
        ww = w_idx + (tap % 3 - 1)
        pix_ok = row_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        x_row = x_ptr + n_idx.to(tl.int64) * stride_xn + hh.to(tl.int64) * stride_xh + ww.to(tl.int64) * stride_xw
        for k0 in range(0, C_in, BLOCK_K):
            k = k0 + offs_k
            k_ok = k < C_in
            a = tl.load(x_row[:, None] + k[None, :] * stride_xc, mask=pix_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_ptr + (tap * C_in + k)[:, None] * stride_wk + offs_n[None, :] * stride_wn,
                        mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            if UPCAST_DOT:
                acc += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.dot(a, b, input_precision=DOT_PRECISION)

    # Epilogue: bias, activation, residual, then the pixel-shuffled store.
    c_idx = offs_n % C_out
    ij = offs_n // C_out
    i_idx = ij // R
    j_idx = ij % R
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if ACT == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACT == 2:
        alpha = tl.load(alpha_ptr + c_idx, mask=col_ok, other=0.0).to(tl.float32)
        acc = tl.where(acc >= 0, acc, acc * alpha[None, :])
    elif ACT == 3:
        acc = tl.where(acc >= 0, acc, acc * slope)
    mask = row_ok[:, None] & col_ok[None, :]
    if HAS_RES:
        res_row = res_ptr + n_idx.to(tl.int64) * stride_rn + h_idx.to(tl.int64) * stride_rh + w_idx.to(tl.int64) * stride_rw
        acc += tl.load(res_row[:, None] + c_idx[None, :] * stride_rc, mask=mask, other=0.0).to(tl.float32)
    out_row = n_idx.to(tl.int64) * stride_on + (h_idx * R).to(tl.int64) * stride_oh + (w_idx * R).to(tl.int64) * stride_ow  # [BLOCK_M]
    out_col = i_idx * stride_oh + j_idx * stride_ow + c_idx * stride_oc  # [BLOCK_N]
    tl.store(out_ptr + out_row[:, None] + out_col[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


class UnsupportedCase(ValueError):
    """An input the kernel does not handle; the op layer falls back to the reference."""


def conv3x3_pixel_shuffle(
    x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None, r: int, *,
    act: str = "none", alpha: torch.Tensor | None = None, slope: float = 0.01,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the fused kernel. ``x`` is NCHW-shaped (ideally channels-last in memory); the result is
    NCHW-shaped and channels-last in memory, in x's dtype."""
    if x.dim() != 4 or w_packed.dim() != 2:
        raise UnsupportedCase("expects a 4-D input and a packed 2-D weight")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise UnsupportedCase(f"dtype {x.dtype} not supported")
    if not (x.is_cuda or _interpreting()):
        raise UnsupportedCase("the Triton kernel runs on CUDA devices (or under TRITON_INTERPRET=1)")
    n, c_in, h, w = x.shape
    if w_packed.shape[0] != 9 * c_in:
        raise UnsupportedCase(f"weight expects {w_packed.shape[0] // 9} input channels, input has {c_in}")
    n_cols = w_packed.shape[1]
    if n_cols % (r * r):
        raise UnsupportedCase(f"{n_cols} output channels are not divisible by r^2 = {r * r}")
    c_out = n_cols // (r * r)
    if act not in ACTIVATIONS:
        raise UnsupportedCase(f"activation {act!r} not supported")
    if act == "prelu" and (alpha is None or alpha.numel() not in (1, c_out)):
        raise UnsupportedCase("prelu needs one slope or one per output channel")
    if residual is not None and tuple(residual.shape) != (n, c_out, h, w):
        raise UnsupportedCase(f"residual must be {(n, c_out, h, w)}, got {tuple(residual.shape)}")

    w_packed = w_packed.to(x.dtype)
    out = torch.empty((n, c_out, h * r, w * r), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    if act == "prelu":
        alpha = alpha.to(device=x.device, dtype=torch.float32).expand(c_out).contiguous()
    dummy = out  # never read when the matching flag is off
    res = residual if residual is not None else dummy
    m = n * h * w
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n_cols, meta["BLOCK_N"]))  # noqa: E731
    conv3x3_pixel_shuffle_kernel[grid](
        x, w_packed, bias if bias is not None else dummy, alpha if alpha is not None else dummy, res, out,
        m, h, w, c_in, n_cols, c_out,
        x.stride(0), x.stride(2), x.stride(3), x.stride(1),
        w_packed.stride(0), w_packed.stride(1),
        res.stride(0), res.stride(2), res.stride(3), res.stride(1),
        out.stride(0), out.stride(2), out.stride(3), out.stride(1),
        float(slope),
        R=r, ACT=ACTIVATIONS[act], HAS_BIAS=bias is not None, HAS_RES=residual is not None,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        UPCAST_DOT=_interpreting() and x.dtype == torch.bfloat16,
    )
    return out
