"""``pixbatch segment``: semantic segmentation of files, folders and images too large for memory."""

from __future__ import annotations

from pathlib import Path

import click

from pixbatch.cli._options import io_options, png_compression_option, precision_options


@click.command(short_help="Segment images and folders of images (masks, probabilities, overlays).")
@io_options
@png_compression_option
@precision_options
@click.option("--model", "model_name", default="unet_drive", show_default=True, metavar="NAME|PATH",
              help="A built-in segmentation model or a checkpoint written by `pixbatch train seg`.")
@click.option("--tile", type=click.IntRange(min=64), default=1024, show_default=True,
              help="Window size in px; smaller images run whole.")
@click.option("--overlap", type=click.IntRange(min=0), default=128, show_default=True,
              help="Px shared by neighbouring windows, where their logits are blended (cosine ramps).")
@click.option("--batch-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Windows per batch (0 = automatic: from the memory budget on a GPU, 1 on the CPU).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Probability above which a pixel is foreground (binary models; default: the model's, else 0.5).")
@click.option("--probabilities", is_flag=True, help="Also write NAME_prob.tif with the probability map(s).")
@click.option("--prob-format", type=click.Choice(["8bit", "float"]), default="8bit", show_default=True,
              help="Probability TIFF samples: 8-bit (p x 255, rounded) or 32-bit float.")
@click.option("--overlay", is_flag=True, help="Also write NAME_overlay.png: the classes in colour over the input.")
@click.option("--overlay-alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.pass_obj
def segment(app, src: tuple[Path, ...], dst: Path, glob, suffix, skip_existing, workers, writers, max_pixels,
            png_compression, precision, compile_, channels_last, model_name, tile, overlap, batch_size, threshold,
            probabilities, prob_format, overlay, overlay_alpha) -> None:
    """Segment every image in SRC (files and/or folders, searched recursively) into DST.

    Each input gets a mask PNG: 0/255 for binary models, class indices with a palette for multi-class
    models. Large images are cut into overlapping windows (mirror-padded at the image borders) whose
    logits are blended, so tiling leaves no seams. Tiled (Big)TIFF inputs are read region by region and
    their outputs written tile by tile as tiled BigTIFFs (NAME.tif), so memory stays bounded. Existing
    outputs are skipped (resume); every output is written to a temporary file and renamed when complete.

    \b
    Examples:
      pixbatch segment fundus/ masks/
      pixbatch segment slide.tif out/ --model my_unet.safetensors --tile 1024 --overlap 128
      pixbatch segment in/ out/ --probabilities --overlay
    """
    from pixbatch.io.discover import plan_jobs
    from pixbatch.io.regions import is_tiled_tiff

    if overlap * 2 >= tile:
        raise click.BadParameter(f"must be less than half of --tile ({tile})", param_hint="--overlap")
    try:  # before torch is imported: a missing input is an instant error
        plan = plan_jobs(list(src), dst, suffix=suffix, glob=glob, overwrite=not skip_existing,
                         suffix_of=lambda p: ".tif" if is_tiled_tiff(p) else ".png")
    except FileNotFoundError as exc:
        app.fail_start(str(exc))
    from pixbatch.io.encode import EncodeOptions
    from pixbatch.runtime.device import StartupError
    from pixbatch.runtime.pipeline import check_destination
    from pixbatch.runtime.segment import SegmentOptions, segment_images
    from pixbatch.runtime.session import load_runner

    try:
        runner = load_runner(app, model_name, None, precision, compile_, channels_last, n_jobs=len(plan.todo),
                             kernels="torch", task="seg")
        check_destination(dst)
    except StartupError as exc:
        app.fail_start(str(exc))
    opts = SegmentOptions(
        tile=tile, overlap=overlap, batch_size=batch_size, threshold=threshold,
        probabilities=prob_format if probabilities else None, overlay=overlay, overlay_alpha=overlay_alpha,
        workers=workers, writers=writers, max_pixels=max_pixels,
        encode=EncodeOptions(png_compression=png_compression, overwrite=not skip_existing),
    )
    from pixbatch.runtime.pipeline import Report

    app.report = Report()
    app.info(f"{len(plan.todo)} to do, {len(plan.skipped)} already done, {len(plan.problems)} problem(s)")
    report = segment_images(dst, runner, opts, plan, progress=app.progress, log=app.log,
                              info=app.info, report=app.report)
    app.info("settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items()))
    app.finish(report)
