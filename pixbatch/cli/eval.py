"""``pixbatch eval``: measure models the way the literature does."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group(name="eval", short_help="Evaluate models (PSNR/SSIM for super-resolution).")
def eval_group() -> None:
    """Evaluate a model on a folder of ground-truth images."""


@eval_group.command(name="sr", short_help="PSNR/SSIM of a super-resolution model.")
@click.option("--model", "model_name", default=None, metavar="NAME|PATH",
              help="A built-in model or a checkpoint (default: the shipped model for --scale).")
@click.option("--hr", "hr_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of high-resolution ground-truth images.")
@click.option("--scale", type=click.IntRange(min=2), default=None, help="Upscaling factor (default: the model's).")
@click.option("--lr", "lr_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use these LR images (NAMExS.png or NAME.png) instead of MATLAB-bicubic downscaling.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--out", "out_json", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.pass_obj
def eval_sr(app, model_name, hr_dir, scale, lr_dir, precision, out_json) -> None:
    """Y-PSNR/SSIM (BT.601, SCALE pixels shaved) and RGB PSNR per image and on average, next to
    MATLAB-bicubic upsampling. LR images are made from HR exactly as MATLAB's imresize does."""
    from pixbatch.runtime.device import StartupError
    from pixbatch.runtime.session import load_runner
    from pixbatch.train.evaluate import evaluate_sr, mean_metrics

    try:
        runner = load_runner(app, model_name, scale, precision, False, True, n_jobs=0, kernels="auto")
        results = evaluate_sr(runner, hr_dir, lr_dir)
    except (StartupError, FileNotFoundError, ValueError) as exc:
        app.fail_start(str(exc))
    model_mean = mean_metrics([r.model for r in results])
    bicubic_mean = mean_metrics([r.bicubic for r in results])
    summary = {"model": runner.info.name, "scale": runner.info.scale, "hr": str(hr_dir),
               "lr": str(lr_dir) if lr_dir else "MATLAB bicubic from HR", "precision": precision,
               "images": [{"name": r.name, "model": r.model, "bicubic": r.bicubic} for r in results],
               "mean": {"model": model_mean, "bicubic": bicubic_mean}}
    if out_json:
        out_json.write_text(json.dumps(summary, indent=2) + "\n")
    if app.as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{runner.info.name} x{runner.info.scale} on {hr_dir} ({summary['lr']}), {precision}")
    click.echo(f"{'image':<16} {'PSNR-Y':>8} {'SSIM-Y':>8} {'PSNR-RGB':>9}   {'bicubic PSNR-Y':>15} {'SSIM-Y':>8}")
    for r in results + [None]:
        name, m, b = ("mean", model_mean, bicubic_mean) if r is None else (r.name, r.model, r.bicubic)
        click.echo(f"{name:<16} {m['psnr_y']:8.2f} {m['ssim_y']:8.4f} {m['psnr_rgb']:9.2f}   "
                   f"{b['psnr_y']:15.2f} {b['ssim_y']:8.4f}")
