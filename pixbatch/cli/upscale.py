"""``pixbatch upscale``: super-resolution of files and folders."""

from __future__ import annotations

from pathlib import Path

import click

from pixbatch.cli._options import format_options, io_options, run_options


@click.command(short_help="Upscale images and folders of images.")
@io_options
@format_options
@run_options
@click.option("--scale", type=click.IntRange(min=1), default=None,
              help="Upscaling factor (default: the model's, or 4 with the built-in models).")
@click.option("--model", "model_name", default=None, metavar="NAME|PATH",
              help="A built-in model (see `pixbatch models`) or a checkpoint file (.safetensors/.pth).")
@click.pass_obj
def upscale(app, src: tuple[Path, ...], dst: Path, glob, fmt, quality, png_compression, suffix, skip_existing,
            workers, writers, max_pixels, tile, tile_overlap, batch_size, precision, compile_, channels_last,
            kernels, scale, model_name) -> None:
    """Upscale every image in SRC (files and/or folders, searched recursively) into DST.

    DST mirrors each folder's tree. Existing outputs are skipped, so an interrupted run resumes
    where it stopped; every output is written to a temporary file and renamed when complete.

    \b
    Examples:
      pixbatch upscale photos/ out/ --scale 4
      pixbatch upscale scan.tif out/ --scale 2 --tile 512
      pixbatch upscale in/ out/ --model realesr-animevideov3.pth
    """
    from pixbatch.io.discover import plan_jobs

    try:  # before torch is imported: a missing input is an instant error
        plan = plan_jobs(list(src), dst, fmt=fmt, suffix=suffix, glob=glob, overwrite=not skip_existing)
    except FileNotFoundError as exc:
        app.fail_start(str(exc))
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.device import StartupError
    from pixbatch.runtime.pipeline import UpscaleOptions, check_destination, upscale_images
    from pixbatch.runtime.session import load_runner

    try:
        runner = load_runner(app, model_name, scale, precision, compile_, channels_last, n_jobs=len(plan.todo),
                             kernels=kernels)
        check_destination(dst)
    except StartupError as exc:
        app.fail_start(str(exc))
    opts = UpscaleOptions(
        tile=tile, tile_overlap=tile_overlap, batch_size=batch_size, workers=workers, writers=writers,
        max_pixels=max_pixels, fp32_for_16bit=precision == "auto",
        encode=EncodeOptions(quality=quality, png_compression=png_compression, overwrite=not skip_existing),
    )
    from pixbatch.runtime.pipeline import Report

    app.report = Report()
    app.info(f"{len(plan.todo)} to do, {len(plan.skipped)} already done, {len(plan.problems)} problem(s)")
    report = upscale_images(list(src), dst, runner, opts, plan, progress=app.progress, log=app.log,
                              info=app.info, report=app.report)
    app.info("settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items()))
    app.finish(report)
