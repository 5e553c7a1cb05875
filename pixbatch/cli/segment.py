"""``pixbatch segment``: semantic segmentation of files, folders and images too large for memory."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from pixbatch.cli._options import (
    FiniteFloat,
    compute_spec,
    io_options,
    onnx_input,
    onnx_options,
    png_compression_option,
    precision_options,
    ray_options,
    video_encoding,
    video_options,
    window_options,
)
from pixbatch.runtime.spec import ModelSpec
from pixbatch.tasks.defaults import SEGMENT


@click.command(short_help="Segment images and folders of images (masks, probabilities, overlays).")
@io_options
@png_compression_option
@window_options(SEGMENT)
@precision_options
@ray_options
@video_options
@onnx_options
@click.option("-m", "--model", "model_name", default=SEGMENT.model_for(None), show_default=True, metavar="NAME|PATH",
              help="A built-in segmentation model or a checkpoint written by `pixbatch train seg`.")
@click.option("--threshold", type=FiniteFloat(0, 1), default=None,
              help="Probability above which a pixel is foreground (binary models; default: the model's, else 0.5).")
@click.option("--probabilities", is_flag=True, help="Also write NAME_prob.tif with the probability map(s).")
@click.option("--prob-format", type=click.Choice(["8bit", "float"]), default="8bit", show_default=True,
              help="Probability TIFF samples: 8-bit (p x 255, rounded) or 32-bit float.")
@click.option("--ignore-index", type=int, default=None,
              help="Multi-class models: the void label, never predicted (default: the one the model was trained "
                   "with, if any).")
@click.option("--overlay", is_flag=True, help="Also write NAME_overlay.png: the classes in colour over the input.")
@click.option("--overlay-alpha", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Opacity of the class colours over the input in NAME_overlay.png.")
@click.option("-f", "--format", "fmt", type=click.Choice(["same", "png"]), default="same", show_default=True,
              help="Videos: same writes the mask as a lossless FFV1 video; png, a folder of its frames' masks as "
                   "PNGs. Images get PNG masks either way.")
@click.pass_obj
def segment(app, src: tuple[Path, ...], dst: Path, glob, suffix, skip_existing, workers, writers, max_pixels,
            png_compression, tile, overlap, blend, batch_size, precision, calibrate_on_input, compile_, channels_last, backend,
            model_name, threshold, probabilities, prob_format, ignore_index, overlay, overlay_alpha, codec,
            crf, bitrate, preset, pix_fmt, untagged_matrix, video_start, video_duration, segment_frames,
            input_order, value_range, mean, std, fmt) -> None:
    """Segment every image in SRC (files and/or folders, searched recursively) into DST.

    Each input gets a mask PNG: 0/255 for binary models, class indices with a palette for multi-class
    models. Large images are cut into tiles whose windows overlap (mirror-padded at the image borders);
    each tile keeps its own logits (--crop, exact when --overlap covers the model's reach) or neighbours
    are cross-faded (--blend), so tiling leaves no seams. Tiled (Big)TIFF inputs are read region by
    region and their outputs written tile by tile as tiled BigTIFFs (NAME.tif), so memory stays bounded.
    Existing outputs are skipped (resume); every output is written to a temporary file and renamed when
    complete.

    \b
    Examples:
      pixbatch segment fundus/ masks/
      pixbatch segment slide.tif out/ --model my_unet.safetensors --tile 1024 --overlap 64
      pixbatch segment in/ out/ --probabilities --overlay
    """
    from pixbatch.io.regions import is_tiled_tiff

    video = video_encoding(codec, crf, bitrate, preset, pix_fmt, untagged_matrix, video_start, video_duration,
                           segment_frames, fmt)
    plan, dst_root = app.plan(src, dst, one_output=False, suffix=suffix, glob=glob, overwrite=not skip_existing,
                              suffix_of=lambda p: ".tif" if is_tiled_tiff(p) else ".png", video=(True, video))
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.spec import JobSpec
    from pixbatch.tasks.segment import SegmentTask

    spec = JobSpec(
        model=ModelSpec(model_name, task="seg", onnx=onnx_input(input_order, value_range, mean, std)),
        compute=compute_spec(app, precision, compile_, channels_last, backend, calibrate_on_input),
        windowing=SegmentTask.windowing(tile, overlap, batch_size, blend=blend), workers=workers, writers=writers,
        max_pixels=max_pixels, encode=EncodeOptions(png_compression=png_compression, overwrite=not skip_existing),
        video=video,
    )
    app.start_runner(plan, dst_root, spec)
    app.run(partial(SegmentTask, threshold=threshold, probabilities=prob_format if probabilities else None,
                    overlay=overlay, overlay_alpha=overlay_alpha, ignore_index=ignore_index), plan, spec)
