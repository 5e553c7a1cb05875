"""``pixbatch stylize``: fast neural style transfer of files, folders and images too large for memory."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from pixbatch.cli._options import (
    STYLE_NETS_HINT,
    FiniteFloat,
    compute_spec,
    format_options,
    io_options,
    onnx_input,
    onnx_options,
    precision_options,
    ray_options,
    video_encoding,
    video_options,
    window_options,
)
from pixbatch.runtime.spec import ModelSpec, Precision
from pixbatch.tasks.defaults import STYLIZE


@click.command(short_help="Stylise images and folders of images with a feed-forward style net.")
@io_options
@format_options
@window_options(STYLIZE)
@precision_options
@ray_options
@video_options
@onnx_options
@click.option("--style", "-m", "--model", "style", default=None, metavar="PATH",
              help="A style net (required): a pixbatch .safetensors, a PyTorch fast_neural_style or MobileNetV2 "
                   "style .pth, or a folder of TensorFlow variables with manifest.json (Engstrom's nets); "
                   + STYLE_NETS_HINT + ".")
@click.option("--max-side", type=click.IntRange(min=16), default=None, metavar="PX",
              help="Shrink inputs whose longer side is larger to PX first (antialiased): the size of the "
                   "brush strokes is relative to the image, so this sets the style's scale; outputs have "
                   "the shrunk size.")
@click.option("--strength", type=FiniteFloat(0, 1), default=1.0, show_default=True,
              help="Blend with the input: 1 = the net's output, 0 = the input.")
@click.option("--preserve-color", is_flag=True,
              help="Keep the input's colours: the net's luminance with the input's chroma (YCbCr).")
@click.pass_obj
def stylize(app, src: tuple[Path, ...], dst: Path, glob, fmt, quality, png_compression, suffix, skip_existing,
            workers, writers, max_pixels, tile, overlap, blend, batch_size, precision, calibrate_on_input, compile_,
            channels_last, backend, style, max_side, strength, preserve_color, codec, crf, bitrate, preset,
            pix_fmt, untagged_matrix, video_start, video_duration, segment_frames, input_order, value_range,
            mean, std) -> None:
    """Stylise every image in SRC (files and/or folders, searched recursively) into DST.

    DST mirrors each folder's tree, with the same names, bit depth, alpha, ICC profile and EXIF.
    Images run whole when memory allows; larger ones (and every image with --tile) are cut into
    windows that share the whole image's instance-norm statistics, measured first window by window
    (one partial pass per norm layer), so tiles leave no seams or colour blotches. Tiled (Big)TIFF
    inputs are read region by region and written tile by tile (unless --max-side shrinks them).
    Existing outputs are skipped (resume); every output is written to a temporary file and renamed.

    \b
    Examples:
      pixbatch stylize photos/ out/ --style udnie.safetensors
      pixbatch stylize photo.jpg out/ --style candy.pth --max-side 1024 --strength 0.7 --preserve-color
      pixbatch stylize scan.tif out/ --style wave/ --tile 1024
    """
    if style is None:
        raise click.UsageError(f"Missing option '--style' (a style net; none ships with pixbatch): {STYLE_NETS_HINT}")

    # outputs too large for memory (as large as their inputs, unless --max-side) go to tiled BigTIFFs
    huge = app.huge_outputs(fmt, max_pixels, lambda: 1) if max_side is None else None
    video = video_encoding(codec, crf, bitrate, preset, pix_fmt, untagged_matrix, video_start, video_duration,
                           segment_frames, fmt)
    plan, dst_root = app.plan(src, dst, fmt=fmt, suffix=suffix, glob=glob, overwrite=not skip_existing,
                              suffix_of=huge, video=(False, video))
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.stylize import StylizeTask

    spec = JobSpec(
        model=ModelSpec(style, task="style", onnx=onnx_input(input_order, value_range, mean, std)),
        compute=compute_spec(app, precision, compile_, channels_last, backend, calibrate_on_input),
        windowing=StylizeTask.windowing(tile, overlap, batch_size, blend=blend), workers=workers, writers=writers,
        max_pixels=max_pixels,
        encode=EncodeOptions(quality=quality, png_compression=png_compression, overwrite=not skip_existing),
        video=video,
    )
    app.start_runner(plan, dst_root, spec)
    app.run(partial(StylizeTask, strength=strength, preserve_color=preserve_color, max_side=max_side,
                    fp32_for_16bit=spec.compute.precision is Precision.AUTO), plan, spec)
