"""``pixbatch eval``: measure models the way the literature does."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from pixbatch.cli._options import BACKENDS, PRECISIONS, TILE, FiniteFloat, onnx_input, onnx_options
from pixbatch.runtime.spec import BackendChoice, ComputeSpec, KernelChoice, ModelSpec, Precision
from pixbatch.tasks.defaults import SEGMENT

# Both evaluators: the other commands' vocabularies, with defaults that reproduce published numbers (fp32,
# PyTorch, no compile: a score measures the model, not a backend's rounding)
EVAL_COMPUTE = ComputeSpec(precision=Precision.FP32, backend=BackendChoice.TORCH, compile=False)


@click.group(name="eval", short_help="Evaluate models (PSNR/SSIM for super-resolution, IoU/Dice/AUC for segmentation).")
def eval_group() -> None:
    """Evaluate a model on a folder of ground-truth images.

    \b
    Examples:
      pixbatch eval sr --model imdn_x4.pth --hr Set5/
      pixbatch eval seg --model m.safetensors --images test/images --masks test/masks --roi test/fov
    """


backend_option = click.option("--backend", type=click.Choice(BACKENDS), default=EVAL_COMPUTE.backend.value,
                              show_default=True,
                              help="What computes on the CPU, as in `pixbatch upscale/segment` (the scores of a "
                                   "backend they can choose); torch by default, as published numbers are computed.")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default=EVAL_COMPUTE.precision.value,
                                show_default=True,
                                help="Compute precision, as in `pixbatch upscale/segment` (auto: bf16/fp16 where "
                                     "they would use it); fp32 by default: published numbers are reproduced in fp32.")


def eval_backend(model_name: str | None, backend: str, precision: str) -> str:
    """--backend as given; an ONNX model left at eval's default (torch) runs on ONNX Runtime, the reference
    runtime for ONNX files, except in bf16, which OpenVINO computes (auto chooses it)."""
    ctx = click.get_current_context(silent=True)
    default = ctx is not None and ctx.get_parameter_source("backend") == click.core.ParameterSource.DEFAULT
    onnx = model_name is not None and str(model_name).lower().endswith(".onnx")
    if not (onnx and default):
        return backend
    return (BackendChoice.ONNXRUNTIME if precision == Precision.FP32 else BackendChoice.AUTO).value


def _renamed(old: str, new: str):
    """A deprecated option name that still works, saying its new name (``--lr`` of eval sr, a learning
    rate everywhere else, is now ``--lr-images``)."""
    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            click.echo(f"note: {old} is deprecated here; it is now {new}", err=True)
        return value

    return callback


@eval_group.command(name="sr", short_help="PSNR/SSIM of a super-resolution model.")
@click.option("--model", "model_name", default=None, metavar="NAME|PATH",
              help="A built-in model or a checkpoint (default: the shipped model for --scale).")
@click.option("--hr", "hr_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of high-resolution ground-truth images.")
@click.option("--scale", type=click.IntRange(min=2), default=None, help="Upscaling factor (default: the model's).")
@click.option("--lr-images", "lr_dir", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use these LR images (NAMExS.png or NAME.png) instead of MATLAB-bicubic downscaling.")
@click.option("--lr", "lr_dir_old", default=None, hidden=True, callback=_renamed("--lr", "--lr-images"),
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--only", "only_list", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="LIST", help="Only the images this file names (one file name per line), e.g. the held-out "
                                   "list `train sr --holdout` took.")
@click.option("--denoise", type=FiniteFloat(min=0, max=1), default=None, metavar="0..1",
              help="With real_x2/real_x4: between keeping grain (0) and cleaning (1), as in upscale (default 0.5).")
@precision_option
@backend_option
@onnx_options
@click.option("--out", "out_json", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.pass_obj
def eval_sr(app, model_name, hr_dir, scale, lr_dir, lr_dir_old, only_list, denoise, precision, backend, input_order,
            value_range, mean, std, out_json) -> None:
    """Y-PSNR/SSIM (BT.601, SCALE pixels shaved) and RGB PSNR per image and on average, next to
    MATLAB-bicubic upsampling. LR images are made from HR exactly as MATLAB's imresize does.

    \b
    Examples:
      pixbatch eval sr --hr Set5/ --scale 4                 # the shipped x4 model
      pixbatch eval sr --model imdn_x4.pth --hr Set5/ --lr-images Set5/LR_bicubic/X4 --out imdn_x4.json
    """
    lr_dir = lr_dir or lr_dir_old
    from pixbatch.cli.session import load_runner
    from pixbatch.eval.sr import evaluate_sr, mean_metrics
    from pixbatch.io.discover import read_names
    from pixbatch.runtime.device import StartupError, precision_name
    from pixbatch.runtime.jobs import one_line
    from pixbatch.runtime.prepare import ModelFailedError

    try:
        compute = replace(EVAL_COMPUTE, device=app.device, precision=precision,
                          backend=eval_backend(model_name, backend, precision))
        model = ModelSpec(model_name, scale, task="sr", onnx=onnx_input(input_order, value_range, mean, std),
                          denoise=denoise)
        runner = load_runner(model, compute, n_jobs=0, info=app.info)
        precision = "int8" if runner.int8 else precision_name(runner.dtype)  # what it computed in (auto resolved)
        only = read_names(only_list) if only_list is not None else None
        results = evaluate_sr(runner, hr_dir, lr_dir, on_error=app.file_error, only=only)
    except (StartupError, FileNotFoundError, ValueError, ModelFailedError) as exc:
        app.fail_start(str(exc))
    model_mean = mean_metrics([r.model for r in results])
    bicubic_mean = mean_metrics([r.bicubic for r in results])
    summary = {"model": model_label(runner.info), "arch": runner.info.name, "scale": runner.info.scale,
               **({"denoise": runner.info.denoise} if runner.info.denoise is not None else {}),
               "hr": str(hr_dir), **({"only": str(only_list)} if only_list is not None else {}),
               "lr": str(lr_dir) if lr_dir else "MATLAB bicubic from HR", "precision": precision, "backend": runner.backend,
               "images": [{"name": r.name, "model": r.model, "bicubic": r.bicubic} for r in results],
               "mean": {"model": model_mean, "bicubic": bicubic_mean},
               "errors": [{"path": p, "reason": r} for p, r in app.file_errors]}
    if out_json:
        out_json.write_text(json.dumps(summary, indent=2) + "\n")
    if app.as_json:
        click.echo(json.dumps(summary, indent=2))
        app.exit_for_file_errors()
        return
    click.echo(f"{summary['model']} x{runner.info.scale} on {hr_dir} ({summary['lr']}), {precision}")
    click.echo(f"{'image':<16} {'PSNR-Y':>8} {'SSIM-Y':>8} {'PSNR-RGB':>9}   {'bicubic PSNR-Y':>15} {'SSIM-Y':>8}")
    for r in results + [None]:
        name, m, b = ("mean", model_mean, bicubic_mean) if r is None else (one_line(r.name), r.model, r.bicubic)
        click.echo(f"{name:<16} {m['psnr_y']:8.2f} {m['ssim_y']:8.4f} {m['psnr_rgb']:9.2f}   "
                   f"{b['psnr_y']:15.2f} {b['ssim_y']:8.4f}")
    app.exit_for_file_errors()


def model_label(info) -> str:
    """What a results table is headed with: the checkpoint file's name (and its architecture) for a
    file, the built-in name otherwise."""
    if info.path is None or info.source == "builtin":
        return info.name
    name = Path(info.path).name
    return name if name == info.name else f"{name} ({info.name})"


SEG_COLUMNS = ("dice", "iou", "accuracy", "precision", "recall", "specificity", "auc")
MULTICLASS_COLUMNS = ("miou", "mean_accuracy", "accuracy")


@eval_group.command(name="seg", short_help="IoU/Dice/AUC of a segmentation model.")
@click.option("--model", "model_name", default=SEGMENT.model_for(None), show_default=True, metavar="NAME|PATH",
              help="A built-in segmentation model or a checkpoint.")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of test images.")
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Ground-truth masks, paired with the images by stem (or the part before the first '_').")
@click.option("--roi", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Region-of-interest masks (e.g. DRIVE's field of view): only pixels inside count.")
@click.option("--threshold", type=FiniteFloat(0, 1), default=None,
              help="Binary models: foreground above this probability (default: the model's, else 0.5).")
@click.option("--ignore-index", type=int, default=None,
              help="Mask value that counts for nothing (default: the one the model was trained with, if any).")
@click.option("--class-names", default=None, metavar="A,B,...",
              help="Names of the classes, in index order (default: the ones stored in the checkpoint).")
@click.option("--plot", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Multi-class models: also write the confusion matrix as a PNG picture.")
@click.option("--tile", type=TILE, default=SEGMENT.tile, show_default=True,
              help="Tile edge in input px, as in `pixbatch segment`.")
@click.option("--overlap", type=click.IntRange(min=0), default=SEGMENT.overlap, show_default=True,
              help="Context px on each side of a tile, as in `pixbatch segment`.")
@precision_option
@backend_option
@onnx_options
@click.option("--out", "out_json", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON to this file.")
@click.pass_obj
def eval_seg(app, model_name, images, masks, roi, threshold, ignore_index, class_names, plot, tile, overlap, precision,
             backend, input_order, value_range, mean, std, out_json) -> None:
    """Per-image and pooled (all pixels together) Dice (= F1), IoU, pixel accuracy, precision,
    recall (sensitivity), specificity and, for binary models, AUC-ROC. Multi-class models: a confusion
    matrix of exact pixel counts over all images, per-class IoU, precision and recall, class-mean IoU
    (mIoU), class-mean and global accuracy, the ignore label left out; classes absent from the ground
    truth have no IoU (they do not count as 0 in the mean).

    \b
    Examples:
      pixbatch eval seg --images DRIVE/test/images --masks DRIVE/test/masks --roi DRIVE/test/fov
      pixbatch eval seg --model m.safetensors --images test/images --masks test/masks --out scores.json
    """
    from pixbatch.cli.session import load_runner
    from pixbatch.eval.seg import evaluate_seg
    from pixbatch.eval.sr import mean_metrics
    from pixbatch.io.pairs import PairingError
    from pixbatch.runtime.device import StartupError, precision_name
    from pixbatch.runtime.jobs import one_line
    from pixbatch.runtime.prepare import ModelFailedError

    try:
        compute = replace(EVAL_COMPUTE, device=app.device, precision=precision,
                          backend=eval_backend(model_name, backend, precision),
                          kernels=KernelChoice.TORCH)
        model = ModelSpec(model_name, task="seg", onnx=onnx_input(input_order, value_range, mean, std))
        runner = load_runner(model, compute, n_jobs=0, info=app.info)
        precision = "int8" if runner.int8 else precision_name(runner.dtype)  # what it computed in (auto resolved)
        training = runner.info.training or {}
        if threshold is None:
            threshold = float(training.get("threshold", 0.5))
        if ignore_index is None and isinstance(training.get("ignore_index"), int):
            ignore_index = training["ignore_index"]
        results, pooled = evaluate_seg(runner, images, masks, roi, threshold=threshold, ignore_index=ignore_index,
                                       tile=tile, overlap=overlap, on_error=app.file_error)
    except (StartupError, FileNotFoundError, PairingError, ValueError, ModelFailedError) as exc:
        app.fail_start(str(exc))
    mean = mean_metrics([r.scores for r in results])
    classes = runner.info.out_channels
    names = class_names.split(",") if class_names else training.get("class_names")
    if not isinstance(names, list) or len(names) != classes:
        names = [str(c) for c in range(classes)]
    summary = {"model": model_label(runner.info), "arch": runner.info.name, "images": str(images),
               "masks": str(masks), "classes": classes, "class_names": names, "ignore_index": ignore_index,
               "roi": str(roi) if roi else None, "threshold": threshold if classes == 1 else None,
               "precision": precision, "backend": runner.backend,
               "per_image": [{"name": r.name, **r.scores} for r in results], "mean": mean, "pooled": pooled,
               "errors": [{"path": p, "reason": r} for p, r in app.file_errors]}
    if out_json:
        out_json.write_text(json.dumps(summary, indent=2) + "\n")
    if plot is not None and classes > 1:
        import numpy as np

        from pixbatch.eval.seg import confusion_png
        from pixbatch.io.atomic import write_bytes

        write_bytes(confusion_png(np.array(pooled["confusion_matrix"]), names), plot, overwrite=True)
    if app.as_json:
        click.echo(json.dumps(summary, indent=2))
        app.exit_for_file_errors()
        return
    if classes > 1:
        print_multiclass(summary, results, mean, pooled, names, ignore_index)
        app.exit_for_file_errors()
        return
    cols = [c for c in SEG_COLUMNS if c in mean]
    click.echo(f"{summary['model']} on {images}{' inside ' + str(roi) if roi else ''}, threshold {threshold}, {precision}")
    click.echo(f"{'image':<20}" + "".join(f"{c:>12}" for c in cols))
    for name, row in [(one_line(r.name), r.scores) for r in results] + [("mean", mean), ("all pixels", pooled)]:
        click.echo(f"{name:<20}" + "".join(f"{row[c]:12.4f}" for c in cols))
    app.exit_for_file_errors()


def print_multiclass(summary: dict, results, mean: dict, pooled: dict, names: list[str],
                     ignore_index: int | None) -> None:
    """Per-image class means, the per-class table over all pixels, and the protocol's three numbers."""
    from pixbatch.runtime.jobs import one_line

    void = f", ignore label {ignore_index}" if ignore_index is not None else ""
    click.echo(f"{summary['model']} on {summary['images']}: {len(names)} classes{void}, {summary['precision']}")
    click.echo(f"{'image':<20}" + "".join(f"{c:>15}" for c in MULTICLASS_COLUMNS))
    for name, row in [(one_line(r.name), r.scores) for r in results] + [("mean of images", mean)]:
        click.echo(f"{name:<20}" + "".join(f"{row[c]:15.4f}" for c in MULTICLASS_COLUMNS))
    click.echo(f"\n{'class':<20}{'IoU':>10}{'precision':>11}{'recall':>10}{'pixels':>14}   (all pixels together)")
    for c, name in enumerate(names):
        if c == ignore_index:
            click.echo(f"{one_line(name)[:19]:<20}{'ignored':>10}")
            continue
        iou, prec, rec = pooled["iou"][c], pooled["precision"][c], pooled["recall"][c]
        cells = "".join("         -" if v != v else f"{v:10.4f}" for v in (iou,))
        cells += "          -" if prec != prec else f"{prec:11.4f}"
        cells += "         -" if rec != rec else f"{rec:10.4f}"
        click.echo(f"{one_line(name)[:19]:<20}{cells}{pooled['pixels'][c]:14,}")
    click.echo(f"mIoU {pooled['miou']:.4f}   class-mean accuracy {pooled['mean_accuracy']:.4f}   "
               f"global accuracy {pooled['global_accuracy']:.4f}   (classes without ground truth pixels: no IoU)")
