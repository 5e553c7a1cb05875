"""Super-resolution as a task: colour (premultiplied by alpha) and alpha in, pixels at the input's
bit depth out; windows core-cropped, so tiled output equals whole-image output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pixbatch.io.decode import ImageMeta
from pixbatch.io.encode import EncodeOptions, write_image
from pixbatch.runtime.prepare import Runner
from pixbatch.runtime.task import Task
from pixbatch.tasks.defaults import UPSCALE


def planes_from_pixels(pixels: torch.Tensor, bits: int) -> torch.Tensor:
    """HWC uint8/uint16 -> (K, 3, H, W) float32 model input. Alpha images give two planes: colour
    premultiplied by alpha (so transparent pixels cannot bleed dark fringes into edges) and alpha."""
    x = pixels.permute(2, 0, 1).float().div_(255.0 if bits == 8 else 65535.0)  # full precision for 16-bit
    c = x.shape[0]
    color, alpha = (x[:-1], x[-1:]) if c in (2, 4) else (x, None)
    color = color.expand(3, -1, -1) if color.shape[0] == 1 else color
    if alpha is None:
        return color.unsqueeze(0).contiguous()
    return torch.stack([color * alpha, alpha.expand(3, -1, -1)])


def pixels_from_planes(y: torch.Tensor, mode: str, bits: int) -> torch.Tensor:
    """(K, 3, h, w) model output -> (h, w, C) rounded to the output bit depth, on the device."""
    color = y[0]
    alpha = y[1].mean(0, keepdim=True).clamp_(0, 1) if y.shape[0] == 2 else None
    if alpha is not None:
        # Un-premultiply; fully transparent pixels have no colour to recover and become black.
        color = torch.where(alpha > 1e-4, color / alpha.clamp_min(1e-4), torch.zeros_like(color))
    if mode in ("L", "LA"):
        color = color.mean(0, keepdim=True)
    out = color if alpha is None else torch.cat([color, alpha])
    maxv = 255.0 if bits == 8 else 65535.0
    q = out.clamp_(0, 1).mul_(maxv).round_()
    # 16-bit values travel as int32 (uint16 has only limited CUDA support); the host stores them as uint16.
    return q.permute(1, 2, 0).to(torch.uint8 if bits == 8 else torch.int32)


class UpscaleTask(Task):
    name = "upscale"
    main = "image"
    defaults = UPSCALE

    def __init__(self, runner: Runner, *, fp32_for_16bit: bool = True, outscale: float | None = None) -> None:
        super().__init__(runner)
        self.fp32_for_16bit = fp32_for_16bit  # 16-bit inputs are computed in fp32 unless a precision was forced
        self.outscale = outscale  # output size / input size when it is not the model's scale

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.outscale is None:
            return super().output_size(height, width)
        # int(size x factor), as Real-ESRGAN sizes its --outscale outputs (the epsilon absorbs 2.9999...)
        h, w = int(height * self.outscale + 1e-9), int(width * self.outscale + 1e-9)
        if h < 1 or w < 1:
            raise ValueError(f"--outscale {self.outscale:g} makes its {width}x{height} px less than one pixel")
        return h, w

    def settings(self) -> dict:
        return {"outscale": self.outscale} if self.outscale is not None else {}

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        bits = 8 if pixels.dtype == np.uint8 else 16
        t = torch.from_numpy(pixels.astype(np.int32) if bits == 16 else np.ascontiguousarray(pixels))
        return planes_from_pixels(t.to(self.runner.device, non_blocking=True), bits)

    def fp32(self, meta: ImageMeta) -> bool:
        return self.fp32_for_16bit and meta.bits == 16

    def post(self, y: torch.Tensor, meta: ImageMeta, rows: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        return {"image": pixels_from_planes(y, meta.mode, meta.bits)}

    def encode(self, name: str, arr: np.ndarray, meta: ImageMeta, path: Path, opts: EncodeOptions) -> None:
        write_image(arr, meta, path, opts)


def upscale_tensor(runner: Runner, x: torch.Tensor, *, tile: int | None = None, overlap: int | None = None,
                   batch_size: int = 0, report=None) -> torch.Tensor:
    """Upscale float images (N, 3, H, W) in [0, 1] through the engine; float (N, 3, H*s, W*s) out.
    What tests, evaluation and benchmarks compare: a job's windows and batching, without rounding."""
    from pixbatch.runtime.batcher import run_planes

    return run_planes(runner, x, UpscaleTask.windowing(tile, overlap, batch_size), report=report)
