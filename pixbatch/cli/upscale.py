"""``pixbatch upscale``: super-resolution of files and folders."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from pixbatch.cli._options import (
    FiniteFloat,
    compute_spec,
    format_options,
    io_options,
    kernels_option,
    onnx_input,
    onnx_options,
    precision_options,
    ray_options,
    video_encoding,
    video_options,
    window_options,
)
from pixbatch.runtime.spec import ModelSpec, Precision
from pixbatch.tasks.defaults import UPSCALE


@click.command(short_help="Upscale images and folders of images.")
@click.option("-s", "--scale", type=click.IntRange(min=1), default=None,
              help=f"Upscaling factor (default: the model's, or {UPSCALE.scale} with the built-in models).")
@click.option("-m", "--model", "model_name", default=None, metavar="NAME|PATH",
              help="A built-in model (see `pixbatch models`) or a checkpoint file (.safetensors/.pth). Default "
                   "for --scale: " + ", ".join(f"{name} (x{s})" for s, name in UPSCALE.models.items()) + ".")
@io_options
@format_options
@window_options(UPSCALE)
@precision_options
@ray_options
@video_options
@onnx_options
@kernels_option
@click.option("--outscale", type=FiniteFloat(min=0, min_open=True, max=64), default=None, metavar="FACTOR",
              help="Output size / input size when it should differ from the model's scale (e.g. 2 or 3 with an "
                   "x4 model): the model's output is resized with antialiased bicubic before rounding, on the "
                   "device, streamed row by row. Sizes are int(input x FACTOR), as in Real-ESRGAN.")
@click.option("--denoise", type=FiniteFloat(min=0, max=1), default=None, metavar="0..1",
              help="With real_x2/real_x4 (photos): how much noise and JPEG to clean, 0 keeps grain, 1 cleans "
                   "(default 0.5); blends two trained models' weights, so it costs nothing.")
@click.pass_obj
def upscale(app, src: tuple[Path, ...], dst: Path, glob, fmt, quality, png_compression, suffix, skip_existing,
            workers, writers, max_pixels, tile, overlap, blend, batch_size, precision, calibrate_on_input, compile_,
            channels_last, backend, kernels, scale, outscale, model_name, codec, crf, bitrate, preset,
            pix_fmt, untagged_matrix, video_start, video_duration, segment_frames, input_order, value_range,
            mean, std, denoise) -> None:
    """Upscale every image in SRC (files and/or folders, searched recursively) into DST.

    DST mirrors each folder's tree. Existing outputs are skipped, so an interrupted run resumes
    where it stopped; every output is written to a temporary file and renamed when complete.
    Tiled (Big)TIFF inputs with a TIFF output are read region by region and written tile by tile
    into a tiled BigTIFF, so memory stays bounded whatever their size.

    \b
    Examples:
      pixbatch upscale photos/ out/ --scale 4
      pixbatch upscale scan.tif out/ --scale 2 --tile 512
      pixbatch upscale in/ out/ --model realesr-animevideov3.pth
      pixbatch upscale in/ out/ --scale 4 --outscale 2
      pixbatch upscale phone_photos/ out/ --model real_x4 --denoise 0.7
    """

    if model_name is None and scale is not None and scale not in UPSCALE.models:
        raise click.BadParameter(f"the built-in models upscale by {', '.join(map(str, UPSCALE.models))}; "
                                 f"x{scale} needs --model PATH of such a model", param_hint="'-s' / '--scale'")
    model = ModelSpec(model_name, scale, task="sr", onnx=onnx_input(input_order, value_range, mean, std),
                      denoise=denoise)
    # outputs too large for memory go to tiled BigTIFFs: the output size needs the model's scale, read
    # (once, and only if there are inputs to plan) from the spec, the registry or the checkpoint
    huge = app.huge_outputs(fmt, max_pixels, lambda: outscale or app.model_scale(model))
    video = video_encoding(codec, crf, bitrate, preset, pix_fmt, untagged_matrix, video_start, video_duration,
                           segment_frames, fmt)
    plan, dst_root = app.plan(src, dst, fmt=fmt, suffix=suffix, glob=glob, overwrite=not skip_existing,
                              suffix_of=huge, video=(False, video))
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.upscale import UpscaleTask

    spec = JobSpec(
        model=model,
        compute=compute_spec(app, precision, compile_, channels_last, backend, calibrate_on_input, kernels),
        windowing=UpscaleTask.windowing(tile, overlap, batch_size, blend=blend), workers=workers, writers=writers,
        max_pixels=max_pixels,
        encode=EncodeOptions(quality=quality, png_compression=png_compression, overwrite=not skip_existing),
        video=video,
    )
    app.start_runner(plan, dst_root, spec)
    app.run(partial(UpscaleTask, fp32_for_16bit=spec.compute.precision is Precision.AUTO, outscale=outscale), plan,
            spec)
