"""``pixbatch bench``: where the time goes, on this machine, next to a plain eager PyTorch loop."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pixbatch.cli._options import BACKENDS, PRECISIONS, compute_spec


def shipped_examples() -> Path | None:
    """The example photos: installed with the package (``pixbatch/examples/`` in a wheel), or beside it
    in a source checkout (``examples/``, which an editable install uses)."""
    import pixbatch

    package = Path(pixbatch.__file__).resolve().parent
    for folder in (package / "examples", package.parent / "examples"):
        if any(folder.glob("*.jpg")):
            return folder
    return None


@click.command(short_help="Measure the upscale pipeline stage by stage against a plain PyTorch loop.")
@click.option("--model", "model_name", default="edsr_tiny_x4", show_default=True, metavar="NAME|PATH",
              help="The model to measure: a built-in name or a checkpoint file.")
@click.option("--photos", type=click.Path(exists=True, file_okay=False, path_type=Path), multiple=True,
              help="Folder(s) of real photos to cut the test images from (default: the example photos "
                   "installed with pixbatch, from scikit-image's public-domain/CC0 samples).")
@click.option("--images", type=click.IntRange(min=2), default=24, show_default=True,
              help="How many test images of --size px to cut from the photos.")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True, help="Input size in px.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="What computes on the CPU, as in `pixbatch upscale` (auto chooses for a job of IMAGES x SIZE^2 "
                   "input pixels).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="As in `pixbatch upscale` (int8: the model quantized on the shipped calibration set, from the "
                   "cache or made first).")
@click.option("--out", "out_json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures as JSON to this file.")
@click.pass_obj
def bench(app, model_name, photos, images, size, backend, precision, out_json) -> None:
    """Cut IMAGES crops of SIZE px from real photos (JPEG and PNG), then time each pipeline stage alone
    (decode, host->device, compute, device->host, encode), the pipeline as `pixbatch upscale` runs it, and
    a plain eager loop (PIL -> tensor -> fp32 model -> PIL, one image at a time) and, on the CPU with
    openvino installed, the same loop computing with OpenVINO (conversion time reported apart), in the
    same run.
    Prints the bottleneck stage and the pipeline efficiency (end-to-end rate / bottleneck capacity).

    \b
    Examples:
      pixbatch bench                                  # the example photos installed with pixbatch
      pixbatch --device cpu bench --photos my_photos/ --images 48 --size 512 --out bench.json
    """
    from pixbatch.bench.pipeline import bench_upscale

    examples = shipped_examples()
    sources = list(photos) or ([examples] if examples is not None else [])
    if not sources:
        app.fail_start("the example photos are missing from this installation: pass --photos FOLDER")
    try:
        result = bench_upscale(model_name, sources, images=images, size=size,
                               compute=compute_spec(app, precision, None, True, backend),
                               log=app.info,
                               on_line=None if app.as_json else click.echo)  # each line as it is measured
    except (FileNotFoundError, ValueError) as exc:
        app.fail_start(str(exc))
    if out_json:
        out_json.write_text(json.dumps(result, indent=2) + "\n")
    if app.as_json:
        click.echo(json.dumps(result, indent=2))
