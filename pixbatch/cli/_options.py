"""Option groups shared by the image commands."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from pixbatch.io.decode import DEFAULT_MAX_PIXELS
from pixbatch.io.video_encoding import CODECS, DEFAULT_CRF, VideoEncoding
from pixbatch.runtime.spec import (
    MAX_TILE,
    MIN_TILE,
    BackendChoice,
    ComputeSpec,
    KernelChoice,
    Precision,
    TaskDefaults,
)


def _check_suffix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from pixbatch.io.discover import check_suffix

    try:
        return check_suffix(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _need_src_and_dst(ctx: click.Context, param: click.Parameter, value: tuple[Path, ...]) -> tuple[Path, ...]:
    if not value:  # with one path Click takes it as DST and finds no SRC: say what is needed
        raise click.UsageError(f"give the inputs and the output folder: {ctx.command_path} SRC... DST "
                               f"(e.g. `{ctx.command_path} photos/ out/`)", ctx)
    return value


# Where a user gets a style net pixbatch reads (none ships): said by `stylize` and `pixbatch models`.
STYLE_NETS_HINT = ("ready-made ones are the pretrained models of PyTorch's fast_neural_style example (candy.pth, "
                   "mosaic.pth, rain_princess.pth, udnie.pth: run download_saved_models.py in "
                   "pytorch/examples/fast_neural_style), or train one with `pixbatch train style`")

PRECISIONS = Precision.words()  # --precision, in every command
BACKENDS = BackendChoice.words()  # --backend, in every command


class TileSize(click.ParamType):
    """--tile: 0 (automatic) or an edge of MIN_TILE..MAX_TILE px; anything else is a usage error."""

    name = "PX"

    def convert(self, value, param, ctx) -> int:
        try:
            n = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number of pixels", param, ctx)
        if n != 0 and not MIN_TILE <= n <= MAX_TILE:
            self.fail(f"{n} is not 0 (automatic) or a tile of {MIN_TILE} to {MAX_TILE} px", param, ctx)
        return n


TILE = TileSize()


class DeviceSpec(click.ParamType):
    """--device: auto, cpu, cuda or cuda:N, checked as it is parsed (before torch or a model loads); whether
    that GPU exists is the engine's start-up check."""

    name = "auto|cpu|cuda[:N]"

    def convert(self, value, param, ctx) -> str:
        if value is None or isinstance(value, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            return value
        self.fail(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N", param, ctx)


DEVICE = DeviceSpec()


class FiniteFloat(click.FloatRange):
    """Every float option of every command: NaN and infinity are usage errors (a NaN threshold or blend
    weight would silently make black outputs), then the range, if any, applies."""

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None  # not a number at all: FloatRange says so
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(value, param, ctx)


def _apply(options):
    def decorator(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorator


png_compression_option = click.option(
    "--png-compression", type=click.IntRange(0, 9), default=1, show_default=True,
    help="zlib level for PNG/TIFF: 1 encodes ~4x faster than 6 for ~15% larger files; 0 stores raw.")

format_options = _apply([
    click.option("-f", "--format", "fmt", type=click.Choice(["same", "png", "jpg", "webp", "tiff"]), default="same",
                 show_default=True, help="Output format; 'same' keeps PNG/JPEG/WebP/TIFF and writes others as PNG. A "
                      "video's output is then a folder of its frames in that format instead of a video."),
    click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality."),
    png_compression_option,
])

io_options = _apply([
    click.argument("src", nargs=-1, required=False, metavar="SRC...", type=click.Path(path_type=Path),
                   callback=_need_src_and_dst),
    click.argument("dst", nargs=1, type=click.Path(path_type=Path)),
    click.option("--glob", default=None, metavar="PATTERN",
                 help="Only files whose path (relative to the folder) or name matches, e.g. '*.png'."),
    click.option("--suffix", default="", show_default=True, callback=_check_suffix,
                 help="Appended to each output's file stem (no folder separators)."),
    click.option("--skip-existing/--overwrite", default=True, show_default=True,
                 help="Resume by skipping outputs that exist, or replace them."),
    click.option("--workers", type=click.IntRange(min=0), default=None,
                 help="Decoding processes (default: about half the cores, none where the model computes on a CPU of "
                      "two cores or fewer; 0 decodes in the main process; never more than the cores, the files, or "
                      "free memory at 1 GiB each)."),
    click.option("--writers", type=click.IntRange(min=1), default=None, help="Encoding threads (default: auto)."),
    click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS, show_default=True,
                 help="Refuse inputs above this many pixels (decompression bombs); 0 = no limit."),
])

precision_options = _apply([
    click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                 show_default=True, help="auto: bf16/fp16 on a GPU (bf16 on CPUs with native bf16) when the model "
                                         "supports it, else fp32. int8 (CPU, opt-in; pip install 'pixbatch[int8]'): "
                                         "quantized by NNCF, layers that int8 would damage kept in bf16/fp32 until "
                                         "held-out outputs are within 52 dB of fp32's (masks: Dice 0.99; style: 40 "
                                         "dB), refused beyond that; made once, then cached."),
    click.option("--calibrate-on-input", is_flag=True, default=False,
                 help="With --precision int8: calibrate on the job's first images instead of the set shipped with "
                      "pixbatch (for images unlike photos, or a segmentation model for other than retinal images)."),
    click.option("--compile/--no-compile", "compile_", default=None,
                 help="torch.compile the model (default: on a GPU for jobs of 32+ images)."),
    click.option("--channels-last/--no-channels-last", default=True, show_default=True,
                 help="Run convolutions in NHWC memory layout."),
    click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                 help="What computes on the CPU. auto: OpenVINO when it is installed (pip install "
                      "'pixbatch[openvino]'), the job has 64 MP of input or more, and it measures faster than "
                      "PyTorch for this model with the same outputs; else PyTorch; ONNX Runtime for a .onnx "
                      "model (onnxruntime: ONNX files only)."),
])



def window_options(defaults: TaskDefaults):
    """``--tile``, ``--overlap`` and ``--batch-size``: the same meaning in every command, the task's defaults
    (pixbatch/tasks/defaults.py)."""
    return _apply([
        click.option("-t", "--tile", type=TILE, default=defaults.tile, show_default=True,
                     help="Tile edge in input px: images are cut into tiles of at most this size, each run in a "
                          "window with --overlap px of context on every side (0 = from the memory budget: whole "
                          "images when they fit)."),
        click.option("--overlap", "--tile-overlap", "overlap", type=click.IntRange(min=0), default=defaults.overlap,
                     show_default=defaults.overlap_shown,
                     help="Context px on each side of a tile; neighbouring windows share twice this."),
        click.option("--blend/--crop", default=False, show_default=True,
                     help="Crop: keep each tile's own output (exact when --overlap covers the model's reach). "
                          "Blend: cross-fade neighbouring windows over half the overlap (softer seams when it "
                          "does not)."),
        click.option("--batch-size", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Model inputs per batch (0 = automatic, from the memory budget)."),
    ])


def compute_spec(app, precision: str, compile_: bool | None, channels_last: bool, backend: str,
                 calibrate_on_input: bool = False, kernels: str = KernelChoice.AUTO) -> ComputeSpec:
    """The compute half of a job spec, from ``precision_options`` (and ``--kernels``) and the global --device;
    a usage error for what int8 cannot be combined with."""
    if precision == Precision.INT8:
        if backend in (BackendChoice.TORCH, BackendChoice.ONNXRUNTIME):
            raise click.UsageError(f"--precision int8 runs on OpenVINO, not with --backend {backend} (leave --backend "
                                   "auto, or openvino)")
        if compile_:
            raise click.UsageError("--precision int8 runs on OpenVINO; --compile compiles PyTorch models")
    elif calibrate_on_input:
        raise click.UsageError("--calibrate-on-input calibrates --precision int8; add it, or leave the flag out")
    return ComputeSpec(device=app.device, precision=precision, compile=compile_, channels_last=channels_last,
                       backend=backend, kernels=kernels, calibrate_on_input=calibrate_on_input)


video_options = _apply([
    click.option("--codec", type=click.Choice(sorted(CODECS)), default=None,
                 help="Video outputs: the encoder (default: h264, vp9 for WebM inputs; segment's masks: lossless "
                      "ffv1). The input's container is kept when the codec fits it, else the output is .mkv."),
    click.option("--crf", type=click.IntRange(0, 63), default=None,
                 help="Video quality, lower is better (default, visually lossless: "
                      + ", ".join(f"{c} {q}" for c, q in DEFAULT_CRF.items()) + ")."),
    click.option("--bitrate", default=None, metavar="RATE", help="Video bit rate instead of --crf, e.g. 8M."),
    click.option("--preset", default=None,
                 help="Encoder preset (h264/h265: ultrafast..veryslow, default medium; av1: 0-13, default 8; "
                      "vp9: good|best|realtime)."),
    click.option("--pix-fmt", default=None, metavar="FORMAT",
                 help="Video pixel format (default: yuv420p, yuv420p10le for sources above 8 bits, 4:4:4 "
                      "where a size is odd)."),
    click.option("--untagged-matrix", type=click.Choice(["auto", "bt601", "bt709", "bt2020"]), default="auto",
                 show_default=True,
                 help="Videos whose stream has no colour tags: the YCbCr matrix to read them with (auto: BT.709 "
                      "from 720 lines up, else BT.601, as players assume). The output is tagged with it."),
    click.option("--start", "video_start", type=FiniteFloat(min=0), default=0.0, metavar="SECONDS",
                 help="Videos: begin at this time (a preview); frames, audio and subtitle packets and chapters "
                      "that start before it are left out, and the output's times start at 0."),
    click.option("--duration", "video_duration", type=FiniteFloat(min=0, min_open=True), default=None,
                 metavar="SECONDS", help="Videos: keep what starts within this many seconds after --start."),
    click.option("--segment-frames", type=click.IntRange(min=1), default=VideoEncoding.segment_frames,
                 show_default=True,
                 help="Video outputs are encoded in segments of this many frames, kept until the video is "
                      "whole: an interrupted run resumes after the last finished one. With --ray, a video of "
                      "at least two such lengths is split at keyframes, one part per worker."),
])


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not numbers separated by commas (e.g. 0.485,0.456,0.406)") from None
    if not all(math.isfinite(n) for n in numbers) or len(numbers) not in (1, 3):
        raise click.BadParameter(f"{value!r}: give 1 or 3 finite numbers")
    return numbers


onnx_options = _apply([
    click.option("--input-order", type=click.Choice(["rgb", "bgr"]), default=None,
                 help="ONNX models without pixbatch metadata: the channel order they take (default rgb)."),
    click.option("--value-range", type=FiniteFloat(min=0, min_open=True), default=None, metavar="MAX",
                 help="ONNX models without pixbatch metadata: the value of white they take and give (default 1; "
                      "255 for 0-255 models)."),
    click.option("--mean", default=None, callback=_floats, metavar="M[,M,M]",
                 help="ONNX models without pixbatch metadata: subtracted from the input (in --value-range units)."),
    click.option("--std", default=None, callback=_floats, metavar="S[,S,S]",
                 help="ONNX models without pixbatch metadata: the input is divided by it after --mean."),
])


def onnx_input(input_order: str | None, value_range: float | None, mean: list[float] | None,
               std: list[float] | None) -> dict | None:
    """What the ONNX options say (the file's own metadata wins), for ModelSpec.onnx."""
    if std is not None and mean is None:
        mean = [0.0] * len(std)
    given = {"input_order": input_order, "value_range": value_range, "mean": mean, "std": std}
    return {k: v for k, v in given.items() if v is not None} or None


def video_encoding(codec: str | None, crf: int | None, bitrate: str | None, preset: str | None,
                   pix_fmt: str | None, untagged_matrix: str, video_start: float, video_duration: float | None,
                   segment_frames: int, fmt: str = "same") -> VideoEncoding:
    """The video options as one VideoEncoding; ``fmt`` (--format) other than same: frames as images."""
    from pixbatch.io.discover import OUTPUT_SUFFIX

    if crf is not None and bitrate is not None:
        raise click.UsageError("give --crf or --bitrate, not both")
    frames = OUTPUT_SUFFIX.get(fmt, "")
    if frames and any(v is not None for v in (codec, crf, bitrate, preset, pix_fmt)):
        raise click.UsageError(f"--format {fmt} writes a video's frames as images: --codec, --crf, --bitrate, "
                               "--preset and --pix-fmt encode videos")
    return VideoEncoding(codec=codec, crf=crf, bitrate=bitrate, preset=preset, pix_fmt=pix_fmt,
                         segment_frames=segment_frames, untagged=untagged_matrix, start=video_start,
                         duration=video_duration, frames=frames)


kernels_option = click.option(
    "--kernels", type=click.Choice(KernelChoice.words()), default=KernelChoice.AUTO.value, show_default=True,
    help="Fused Triton conv+PixelShuffle kernels (GPU); auto uses them where they measure faster.")


def _set_ray(field: str):
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            ctx.obj.ray[field] = value
        return value

    return callback


ray_options = _apply([
    click.option("--ray", "ray_address", default=None, metavar="auto|local|ADDRESS", expose_value=False,
                  callback=_set_ray("address"),
                  help="Run on a Ray cluster (pip install \"pixbatch[ray]\"): auto = RAY_ADDRESS or the running "
                       "cluster, local = start one here, or its address. Same outputs; a huge image stays one "
                       "unit of work on one worker."),
    click.option("--ray-workers", type=click.IntRange(min=1), default=None, expose_value=False,
                 callback=_set_ray("workers"), help="Model workers (default: one per GPU, else per 2 CPUs)."),
    click.option("--ray-gpus-per-worker", type=FiniteFloat(min=0), default=None, expose_value=False,
                 callback=_set_ray("gpus_per_worker"),
                 help="GPUs each model worker takes (default: 1 where the cluster has GPUs, else 0: CPU workers)."),
])
