"""The images an int8 model is calibrated and judged on (runtime/int8.py), as a task's model planes.

By default the set shipped in pixbatch/calibration (its README says what each file is, and its licence):
photos for super-resolution and style models, retinal fundus crops for segmentation models. With
``--calibrate-on-input``, the job's own first images instead (a centre crop of at most ``CROP`` px each).
Every ``HELD_OUT_EVERY``-th image (the last of fewer) is held out to measure the loss; the rest calibrate.
Every model sees the crops as they are: a photo is what an upscaler is given.

Super-resolution and style models also calibrate on ``GRAPHICS`` drawings made here (``drawing``): flat
saturated colours with hard edges, which no shipped photo has and which drive activations beyond the
photos' ranges. rlfn_x4 on Set5 (an AVX2-only EPYC): without them, butterfly's output agreed with fp32's at
43.3 dB and Set5 lost 0.068 dB; with them, 44.4 dB and 0.035 dB, with 16 of 39 convolutions left in f32
instead of 13, cheap ones: 1.42x f32 OpenVINO at 256 px against 1.41x, timed in alternation. They calibrate
only: the held-out photos still decide the loss.

A style net's int8 error grows with the image's size (its instance norms scale up what int8 adds where a
larger image is smoother): udnie, quantized and judged at 256 px, agreed with the float output at 41.5 dB
on the held-out crops but at 36.9 dB on the content photo at 1080 px. So style models calibrate on the
photos also enlarged ``STYLE_ENLARGE`` times (MATLAB's bicubic, 1024 px), and the held-out photos are judged
enlarged only: udnie then 42.0 dB held out, 46.9 dB on that photo, with 4 of 14 convolutions in f32.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pixbatch.io.decode import decode_rgb8
from pixbatch.models import LoadedModel, ModelInfo
from pixbatch.ops.imresize import imresize_uint8
from pixbatch.runtime.backends import openvino_precision
from pixbatch.runtime.int8 import int8_model
from pixbatch.runtime.int8_quantize import Int8Data, Int8Model
from pixbatch.tasks.planes import model_planes

SHIPPED = Path(__file__).resolve().parent.parent / "calibration"
SETS = {"sr": "photos", "style": "photos", "seg": "fundus"}
HELD_OUT_EVERY = 4
CROP = 256
MAX_INPUTS = 12  # --calibrate-on-input reads at most this many of the job's images
GRAPHICS = 3  # drawings beside the shipped photos, super-resolution and style only (module docstring)
STYLE_ENLARGE = 4  # style: the photos calibrate also, and are judged only, this many times larger (docstring)


def int8_for(loaded: LoadedModel, calibrate_on: tuple[str, ...], dtype: torch.dtype, *,
             log=lambda message: None, **recipe) -> Int8Model:
    """The int8 model of ``loaded`` (runtime/int8.py), calibrated on the images ``calibrate_on`` names, else on
    the shipped set; its floating-point layers in ``dtype`` (bf16 or fp32); ``recipe``: int8_model's
    ``recipe`` and ``bound``. ValueError (Int8Refused among them) when it cannot be made or measures beyond
    its bound."""
    data = calibration_data(loaded.info, [Path(p) for p in calibrate_on] or None)
    source = loaded.module.eval().float().cpu()
    return int8_model(source, loaded.info, data, openvino_precision(dtype), log=log, **recipe)


def shipped_images(task: str) -> list[Path]:
    return sorted((SHIPPED / SETS[task]).glob("*.jpg"))


def calibration_data(info: ModelInfo, inputs: list[Path] | None = None) -> Int8Data:
    """The calibration and held-out samples for ``info``'s model: from ``inputs`` (the job's images) when
    given, else from the shipped set. ValueError when fewer than two images can be read."""
    paths = inputs[:MAX_INPUTS] if inputs else shipped_images(info.task)
    crops = []
    for path in paths:
        try:
            crops.append(centre_crop(decode_rgb8(path), CROP))
        except Exception:  # an input the job will report itself: calibrate on the others
            continue
    if len(crops) < 2:
        raise ValueError("--calibrate-on-input needs at least two readable images among the job's first "
                         f"{MAX_INPUTS}" if inputs else f"the calibration set in {SHIPPED} is missing")
    drawn = [drawing(seed, CROP) for seed in range(GRAPHICS)] if not inputs and info.task != "seg" else []
    m = info.size_multiple
    crops, drawn = ([c[: c.shape[0] // m * m, : c.shape[1] // m * m] for c in group] for group in (crops, drawn))
    held_out = {i for i in range(len(crops)) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1} or {len(crops) - 1}
    where = f"{len(crops)} of your images" if inputs else f"the {SETS[info.task]} shipped with pixbatch"
    where += f" ({len(crops) - len(held_out)} calibrate, {len(held_out)} held out)"
    if drawn:
        where += f" and {len(drawn)} drawings (calibrate)"
    judged = [c for i, c in enumerate(crops) if i in held_out]
    calibration = [c for i, c in enumerate(crops) if i not in held_out]
    if info.task == "style":
        calibration += [imresize_uint8(c, STYLE_ENLARGE) for c in calibration]
        judged = [imresize_uint8(c, STYLE_ENLARGE) for c in judged]
        where += f", judged at {STYLE_ENLARGE}x their size"
    return Int8Data([planes(c, info) for c in calibration + drawn], [planes(c, info) for c in judged], where,
                    from_input=bool(inputs))


def drawing(seed: int, size: int, shapes: int = 60, supersample: int = 4) -> np.ndarray:
    """A (size, size, 3) uint8 drawing, the same for a seed on every run: ``shapes`` ellipses, rectangles,
    polygons and lines in saturated colours, black and white on a plain ground, drawn ``supersample`` times
    larger and reduced with Pillow's bicubic filter, as a downscaled logo or illustration reaches an upscaler."""
    rng = np.random.default_rng(seed)
    big = size * supersample

    def colour() -> tuple[int, int, int]:
        r = rng.random()
        if r < 0.25:
            return (0, 0, 0) if r < 0.15 else (255, 255, 255)
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0))
        return tuple(round(c * 255) for c in rgb)

    img = Image.new("RGB", (big, big), colour())
    draw = ImageDraw.Draw(img)
    for _ in range(shapes):
        kind = rng.integers(4)
        x, y = (int(v) for v in rng.integers(0, big, 2))
        w, h = (int(v) for v in rng.integers(big // 40, big // 4, 2))
        if kind == 0:
            draw.ellipse([x, y, x + w, y + h], fill=colour())
        elif kind == 1:
            draw.rectangle([x, y, x + w, y + h], fill=colour())
        elif kind == 2:
            corners = [(x + int(dx), y + int(dy)) for dx, dy in rng.integers(-big // 6, big // 6, (rng.integers(3, 7), 2))]
            draw.polygon(corners, fill=colour())
        else:
            dx, dy = (int(v) for v in rng.integers(-big // 3, big // 3, 2))
            draw.line([x, y, x + dx, y + dy], fill=colour(), width=int(rng.integers(2, 16)))
    return np.array(img.resize((size, size), Image.BICUBIC))


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def planes(img: np.ndarray, info: ModelInfo) -> np.ndarray:
    """(h, w, 3) uint8 -> the model's (1, C, h, w) float32 input, as the task feeds it."""
    return model_planes(img, torch.device("cpu"), info.in_channels).numpy()
