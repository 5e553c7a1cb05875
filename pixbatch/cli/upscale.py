"""``pixbatch upscale``: super-resolution of files and folders."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click

from pixbatch.cli._options import (
    FiniteFloat,
    format_options,
    io_options,
    kernels_option,
    precision_options,
    ray_options,
    window_options,
)

DEFAULT_MODELS = {2: "edsr_tiny_x2", 3: "edsr_tiny_x3", 4: "rlfn_x4"}  # pixbatch.models.DEFAULT_SR_MODELS, for
# --help without importing torch (a test holds the two equal)


@click.command(short_help="Upscale images and folders of images.")
@click.option("-s", "--scale", type=click.IntRange(min=1), default=None,
              help="Upscaling factor (default: the model's, or 4 with the built-in models).")
@click.option("-m", "--model", "model_name", default=None, metavar="NAME|PATH",
              help="A built-in model (see `pixbatch models`) or a checkpoint file (.safetensors/.pth). Default "
                   "for --scale: " + ", ".join(f"{name} (x{s})" for s, name in DEFAULT_MODELS.items()) + ".")
@io_options
@format_options
@window_options(0, None, "the model's receptive field")
@precision_options
@ray_options
@kernels_option
@click.option("--outscale", type=FiniteFloat(min=0, min_open=True, max=64), default=None, metavar="FACTOR",
              help="Output size / input size when it should differ from the model's scale (e.g. 2 or 3 with an "
                   "x4 model): the model's output is resized with antialiased bicubic before rounding, on the "
                   "device, streamed row by row. Sizes are int(input x FACTOR), as in Real-ESRGAN.")
@click.pass_obj
def upscale(app, src: tuple[Path, ...], dst: Path, glob, fmt, quality, png_compression, suffix, skip_existing,
            workers, writers, max_pixels, tile, overlap, blend, batch_size, precision, compile_, channels_last, backend,
            kernels, scale, outscale, model_name) -> None:
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
    """

    if model_name is None and scale is not None and scale not in DEFAULT_MODELS:
        raise click.BadParameter(f"the built-in models upscale by {', '.join(map(str, DEFAULT_MODELS))}; "
                                 f"x{scale} needs --model PATH of such a model", param_hint="'-s' / '--scale'")
    plan, dst_root = app.plan(src, dst, fmt=fmt, suffix=suffix, glob=glob, overwrite=not skip_existing)
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.engine import JobOptions
    from pixbatch.tasks.upscale import UpscaleTask, upscale_windowing

    runner = app.start_runner(plan, dst_root, model_name, scale, precision, compile_, channels_last, backend=backend, kernels=kernels)
    if max_pixels:  # now that the scale is known: outputs too large for memory go to tiled BigTIFFs
        from pixbatch.io.discover import header_pixels, output_suffix

        factor = (outscale or runner.info.scale) ** 2

        def suffix_of(p: Path) -> str:
            pixels = header_pixels(p)
            return ".tif" if pixels is not None and pixels * factor > max_pixels else output_suffix(p, fmt)

        plan, _ = app.plan(src, dst, fmt=fmt, suffix=suffix, glob=glob, overwrite=not skip_existing,
                           suffix_of=suffix_of)
    opts = JobOptions(
        windowing=upscale_windowing(tile, overlap, batch_size, blend=blend), workers=workers, writers=writers,
        max_pixels=max_pixels,
        encode=EncodeOptions(quality=quality, png_compression=png_compression, overwrite=not skip_existing),
    )
    app.run(partial(UpscaleTask, fp32_for_16bit=precision == "auto", outscale=outscale), plan, opts)
