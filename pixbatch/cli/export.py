"""``pixbatch export``: a model to ONNX, verified against PyTorch before the file is kept."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(short_help="Export a model to ONNX (verified against PyTorch).")
@click.argument("model_name", metavar="MODEL")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-s", "--scale", type=click.IntRange(min=1), default=None,
              help="The branch of a multi-scale checkpoint (CARN-M); others have one scale.")
@click.option("--fp16", is_flag=True, help="fp16 weights, input and output (about half the file).")
@click.option("--opset", type=click.IntRange(17, 23), default=18, show_default=True, help="ONNX opset.")
@click.pass_obj
def export(app, model_name: str, out: Path, scale: int | None, fp16: bool, opset: int) -> None:
    """Export MODEL (a built-in name, a pixbatch checkpoint or a recognised foreign checkpoint) to OUT.onnx:
    NCHW, RGB, float32 in [0, 1] in and out (the model's own normalisation inside the graph), dynamic batch,
    height and width, and pixbatch's metadata (task, scale, size multiple, receptive field, classes, ignore
    label) as ``pixbatch.*`` metadata_props. The export is run by ONNX Runtime at two sizes other than the
    export's and at batch 2 against PyTorch; it is written only when they agree (max abs difference
    <= 1e-3, a quarter of an 8-bit level; 1e-2 with --fp16), and the difference is printed. Run it with `pixbatch upscale ... --model
    OUT.onnx`.

    \b
    Examples:
      pixbatch export rlfn_x4 rlfn_x4.onnx
      pixbatch export my_unet.safetensors unet.onnx --fp16
    """
    from pixbatch.models import UnknownModelError, UnsupportedModelError, create_model
    from pixbatch.models.onnx_export import ExportError, export_onnx

    if out.suffix.lower() != ".onnx":
        raise click.BadParameter(f"{out.name}: name the file OUT.onnx", param_hint="OUT")
    try:
        loaded = create_model(model_name, scale=scale)
        result = export_onnx(loaded, out, fp16=fp16, opset=opset)
    except (UnknownModelError, UnsupportedModelError, FileNotFoundError, ExportError) as exc:
        app.fail_start(str(exc))
    summary = {"file": str(result.path), "model": loaded.info.name, "opset": result.opset,
               "precision": result.precision, "max_abs_diff": result.max_abs_diff,
               "checked": [{"batch": n, "height": h, "width": w} for n, h, w in result.checks]}
    if app.as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    shapes = ", ".join(f"{n}x{w}x{h}" for n, h, w in result.checks)
    click.echo(f"wrote {result.path} ({loaded.info.name}, opset {result.opset}, {result.precision}); ONNX Runtime "
               f"vs PyTorch at batch x width x height {shapes}: max abs difference {result.max_abs_diff:.2g}")
