"""Segmentation as a task: logits of overlapping windows (mirror-padded at the true borders), cropped
or blended, then a mask (0/255, or class indices with a palette), and optionally probabilities and a
colour overlay. The mask is written last: its presence marks the image done (resume skips it)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pixbatch.io.atomic import write_bytes
from pixbatch.io.decode import ImageMeta
from pixbatch.io.encode import TIFF_MARK, EncodeOptions, mark_kwargs, write_image
from pixbatch.runtime.prepare import Runner
from pixbatch.runtime.task import Task
from pixbatch.tasks.defaults import SEGMENT
from pixbatch.tasks.planes import model_planes, rgb8

BINARY_COLOR = (255, 0, 0)


def palette(n: int = 256) -> np.ndarray:
    """Distinct colours for class indices (0 = black): bits of the index spread over R, G and B."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def without_void(scores: torch.Tensor, ignore: int | None) -> torch.Tensor:
    """(C, H, W) logits or probabilities with the void class (the ignore label, when it is one of the
    C classes) made impossible: what it is trained to mean is "no class", so it is never predicted."""
    if ignore is None or not 0 <= ignore < scores.shape[0]:
        return scores
    scores = scores.clone()
    scores[ignore] = float("-inf")
    return scores


class SegmentTask(Task):
    name = "segment"
    main = "mask"
    defaults = SEGMENT

    def __init__(self, runner: Runner, *, threshold: float | None = None, probabilities: str | None = None,
                 overlay: bool = False, overlay_alpha: float = 0.5, ignore_index: int | None = None) -> None:
        super().__init__(runner)
        self.classes = runner.info.out_channels
        training = runner.info.training or {}
        self.threshold = threshold if threshold is not None else float(training.get("threshold", 0.5))
        names = training.get("class_names")
        self.class_names = names if isinstance(names, list) and len(names) == self.classes else None
        # the void label of a multi-class model is never predicted: given, else the one it was trained with
        ignore = ignore_index if ignore_index is not None else training.get("ignore_index")
        self.ignore = ignore if isinstance(ignore, int) and 0 <= ignore < self.classes > 1 else None
        self.probabilities = probabilities  # None, "8bit" or "float"
        self.overlay, self.overlay_alpha = overlay, overlay_alpha
        self.colors = torch.from_numpy(palette()).to(runner.device)
        if self.classes == 1:
            self.colors[1] = torch.tensor(BINARY_COLOR)

    def model_input(self, pixels: np.ndarray) -> torch.Tensor:
        return model_planes(pixels, self.runner.device, self.runner.info.in_channels)

    def post(self, y: torch.Tensor, meta: ImageMeta, rows: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
        logits = y[0]
        out = {}
        if self.classes == 1:
            prob = torch.sigmoid(logits)
            cls = (prob[0] > self.threshold).to(torch.uint8)
            out["mask"] = (cls * 255).unsqueeze(-1)
        else:
            prob = torch.softmax(without_void(logits, self.ignore), dim=0)
            cls = prob.argmax(0).to(torch.uint8)
            out["mask"] = cls.unsqueeze(-1)
        if self.probabilities == "8bit":
            out["prob"] = prob.mul(255).round_().to(torch.uint8).permute(1, 2, 0)
        elif self.probabilities == "float":
            out["prob"] = prob.permute(1, 2, 0).contiguous()
        if self.overlay:
            rgb = rgb8(rows(), self.runner.device)
            color = self.colors[cls.long()].float()
            a = (cls > 0).unsqueeze(-1).float() * self.overlay_alpha
            out["overlay"] = (rgb * (1 - a) + color * a).round_().to(torch.uint8)
        return out

    def outputs(self, dst: Path, streamed: bool) -> dict[str, Path]:
        paths = {"mask": dst}
        if self.probabilities:
            paths["prob"] = dst.with_name(f"{dst.stem}_prob.tif")
        if self.overlay:
            paths["overlay"] = dst.with_name(f"{dst.stem}_overlay{'.tif' if streamed else '.png'}")
        return paths

    def video_outputs(self) -> set[str]:
        return {"mask", "overlay"}  # probabilities (float or one plane per class) are for images only

    def encode(self, name: str, arr: np.ndarray, meta: ImageMeta, path: Path, opts: EncodeOptions) -> None:
        if name == "overlay":
            write_image(arr, ImageMeta("RGB", 8, "PNG", meta.icc), path, opts)
        elif name == "prob":
            import tifffile

            buf = io.BytesIO()
            tifffile.imwrite(buf, arr[:, :, 0] if arr.shape[2] == 1 else arr, photometric="minisblack",
                             compression="zlib" if opts.png_compression else None, **TIFF_MARK)
            write_bytes(buf.getbuffer(), path, overwrite=opts.overwrite)
        elif self.classes == 1:
            write_image(arr, ImageMeta("L", 8, "PNG"), path, opts)
        else:
            from PIL import Image

            im = Image.fromarray(arr[:, :, 0], "P")
            im.putpalette(palette().tobytes())
            kwargs = mark_kwargs("png")
            if self.class_names is not None:  # index -> name, for viewers and for `pixbatch eval seg`
                kwargs["pnginfo"].add_text("classes", json.dumps(self.class_names))
            buf = io.BytesIO()
            im.save(buf, format="PNG", compress_level=opts.png_compression, **kwargs)
            write_bytes(buf.getbuffer(), path, overwrite=opts.overwrite)

    def tiff(self, name: str, channels: int) -> dict:
        return {"photometric": "rgb" if name == "overlay" else "minisblack"}

    def settings(self) -> dict:
        return {"classes": self.classes, "threshold": self.threshold if self.classes == 1 else None,
                "class_names": self.class_names, "ignore_index": self.ignore}


def predict_logits(runner: Runner, pixels: np.ndarray, tile: int | None = None, overlap: int | None = None,
                   *, blend: bool = False) -> torch.Tensor:
    """(C, H, W) float32 logits of an HWC image, exactly as ``pixbatch segment`` computes them."""
    from pixbatch.runtime.batcher import run_planes

    x = model_planes(pixels, runner.device, runner.info.in_channels)
    return run_planes(runner, x, SegmentTask.windowing(tile, overlap, blend=blend))[0]
