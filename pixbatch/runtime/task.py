"""What a command says about its job (a Task); the engine does the rest."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from pixbatch.io.decode import ImageMeta
from pixbatch.io.encode import EncodeOptions
from pixbatch.runtime.batcher import WindowEngine
from pixbatch.runtime.canvas import Canvas
from pixbatch.runtime.prepare import Runner
from pixbatch.runtime.spec import TaskDefaults
from pixbatch.runtime.windows import Windowing


class Task:
    """What a command says about its job; the engine does the rest. Subclasses set ``name``,
    ``defaults`` (pixbatch/tasks/defaults.py) and ``main`` (the output whose file marks the job done,
    written last)."""

    name = "task"
    main = "image"
    defaults: ClassVar[TaskDefaults] = TaskDefaults(tile=0, overlap=None, overlap_shown="the receptive field",
                                                    mirror_borders=False)

    @classmethod
    def windowing(cls, tile: int | None = None, overlap: int | None = None, batch_size: int = 0, *,
                  blend: bool = False) -> Windowing:
        """This task's windows: ``--tile`` and ``--overlap`` as given, the task's defaults where None."""
        return cls.defaults.windowing(tile, overlap, batch_size, blend=blend)

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        """(h, w, C) uint8/uint16 rows -> (K, C_in, h, w) float32 model planes on the device."""
        raise NotImplementedError

    def post(self, y: torch.Tensor, meta: ImageMeta, rows: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        """Finished model output rows (K, C', n, W') -> output pixels {name: (n, W', c)} on the device.
        ``rows()`` reads the input rows they came from (for overlays)."""
        raise NotImplementedError

    def fp32(self, meta: ImageMeta) -> bool:
        """Whether this image is computed in fp32 whatever the runner's precision."""
        return False

    def tiled(self, canvas: Canvas, engine: WindowEngine) -> Callable[[], AbstractContextManager] | None:
        """Called before the windows of an image that needs several run: whole-image state they must
        share (see ``Canvas``); None when windows need nothing beyond their own pixels."""
        return None

    def input_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """The decoded image as the model should see it (e.g. resized); in-memory jobs only."""
        return pixels

    @property
    def streams(self) -> bool:
        """Whether tiled TIFF inputs may be read by region (False when ``input_pixels`` needs them whole)."""
        return True

    def outputs(self, dst: Path, streamed: bool) -> dict[str, Path]:
        """Every file a job writes, by output name (extras are known at planning time)."""
        return {self.main: dst}

    def video_outputs(self) -> set[str]:
        """The outputs that can be written as videos (runtime/video.py); a video job asking for others fails."""
        return {self.main}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output size of an input; when it differs from the model's (input x scale), the model's
        float output is resized (antialiased bicubic, streamed row by row) before ``post``."""
        s = self.runner.info.scale
        return height * s, width * s

    def encode(self, name: str, arr: np.ndarray, meta: ImageMeta, path: Path, opts: EncodeOptions) -> None:
        """Write one in-memory output atomically."""
        raise NotImplementedError

    def tiff(self, name: str, channels: int) -> dict:
        """tifffile arguments of a streamed output."""
        return {"photometric": "rgb" if channels in (3, 4) else "minisblack",
                "extrasamples": (2,) if channels in (2, 4) else None}

    def settings(self) -> dict:
        return {}
