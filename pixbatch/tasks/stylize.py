"""Style transfer as a task: colour planes in, the stylised image out at the input's size and bit
depth, optionally blended with the input (``strength``) or keeping the input's colours (luminance
from the net, chroma from the input); alpha passes through. Images that need several windows run
with whole-image instance-norm statistics, so tiled output equals whole-image output."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pixbatch.io.decode import MODES_BY_CHANNELS, ImageMeta
from pixbatch.io.encode import EncodeOptions, write_image
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.normstats import whole_image_norm
from pixbatch.runtime.prepare import Runner
from pixbatch.runtime.sources import available_memory
from pixbatch.runtime.task import Task
from pixbatch.runtime.windows import Windowing
from pixbatch.tasks.defaults import STYLIZE
from pixbatch.tasks.planes import model_planes

WHOLE_PIXELS = 4096 * 4096  # on the CPU, images up to this size run whole (one pass, no statistics pass)
BYTES_PER_PIXEL = 600  # peak memory of a whole-image run per input pixel (fp32; bf16 needs about half)
# BT.601 full-range RGB <-> YCbCr (JPEG's): the luminance-chroma split --preserve-color uses
LUMA = (0.299, 0.587, 0.114)


def resize_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """An HWC uint8/uint16 image resized with antialiased bicubic, rounded to its own depth."""
    maxv = 255.0 if pixels.dtype == np.uint8 else 65535.0
    x = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1).unsqueeze(0)
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    y = y[0].permute(1, 2, 0).clamp_(0, maxv).round_()
    return y.numpy().astype(pixels.dtype)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(3, h, w) RGB -> (1, h, w) luminance."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x * w).sum(0, keepdim=True)


def keep_colors(styled: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The styled image's luminance with the source's chroma (YCbCr): RGB = source + (Y' - Y)."""
    return source + (luma(styled) - luma(source))


class StylizeTask(Task):
    name = "stylize"
    main = "image"
    defaults = STYLIZE

    @classmethod
    def windowing(cls, tile: int | None = None, overlap: int | None = None, batch_size: int = 0, *,
                  blend: bool = False) -> Windowing:
        """Whole images whenever memory allows (instance norm then sees the image as the net was trained
        to); else windows with the receptive field as context and whole-image statistics."""
        memory = available_memory()
        whole = WHOLE_PIXELS if memory is None else max(512 * 512, min(WHOLE_PIXELS, memory // (2 * BYTES_PER_PIXEL)))
        return cls.defaults.windowing(tile, overlap, batch_size, blend=blend, whole_pixels=whole)

    def __init__(self, runner: Runner, *, strength: float = 1.0, preserve_color: bool = False,
                 max_side: int | None = None, fp32_for_16bit: bool = True) -> None:
        super().__init__(runner)
        self.strength, self.preserve_color, self.max_side = strength, preserve_color, max_side
        self.fp32_for_16bit = fp32_for_16bit
        self._prepare = whole_image_norm(runner)

    @property
    def streams(self) -> bool:
        return self.max_side is None  # resizing needs the whole image

    def input_pixels(self, pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        if self.max_side is None or max(h, w) <= self.max_side:
            return pixels
        f = self.max_side / max(h, w)
        return resize_pixels(pixels, max(1, round(h * f)), max(1, round(w * f)))

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        return model_planes(pixels, self.runner.device, 3)

    def fp32(self, meta: ImageMeta) -> bool:
        return self.fp32_for_16bit and meta.bits == 16

    def tiled(self, canvas: Canvas, engine: WindowEngine) -> Callable[[], AbstractContextManager]:
        return self._prepare(canvas, engine)

    def post(self, y: torch.Tensor, meta: ImageMeta, rows: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        pixels = rows()
        src = model_planes(pixels, self.runner.device, 3)[0]
        out = y[0].float()
        gray = meta.mode in ("L", "LA")
        if self.preserve_color:
            out = luma(out) if gray else keep_colors(out, src)
            src = luma(src) if gray else src
        if self.strength < 1.0:
            out = src + self.strength * (out - src)
        maxv = 255.0 if meta.bits == 8 else 65535.0
        if meta.has_alpha:
            a = torch.from_numpy(np.ascontiguousarray(pixels[:, :, -1:])).to(out.device).permute(2, 0, 1).float()
            out = torch.cat([out.clamp(0, 1).mul_(maxv).round_(), a])
        else:
            out = out.clamp(0, 1).mul_(maxv).round_()
        return {"image": out.permute(1, 2, 0).to(torch.uint8 if meta.bits == 8 else torch.int32)}

    def encode(self, name: str, arr: np.ndarray, meta: ImageMeta, path: Path, opts: EncodeOptions) -> None:
        write_image(arr, replace(meta, mode=MODES_BY_CHANNELS[arr.shape[2]]), path, opts)

    def settings(self) -> dict:
        return {"strength": self.strength, "preserve_color": self.preserve_color, "max_side": self.max_side}


def stylize_tensor(runner: Runner, x: torch.Tensor, *, tile: int | None = None, overlap: int | None = None,
                   whole_image_stats: bool = True) -> torch.Tensor:
    """Stylise float images (N, 3, H, W) in [0, 1] through the engine, unclamped float out: what tests
    and benchmarks compare. ``whole_image_stats=False`` gives each window its own statistics (the
    naive tiling, for comparison)."""
    from pixbatch.runtime.batcher import run_planes

    windowing = StylizeTask.windowing(tile, overlap)
    return run_planes(runner, x, windowing, prepare=whole_image_norm(runner) if whole_image_stats else None)
