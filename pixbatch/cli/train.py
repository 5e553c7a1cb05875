"""``pixbatch train``: train models on your own images."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from pixbatch.cli._options import FiniteFloat


@click.group(name="train", short_help="Train models.")
def train_group() -> None:
    """Train a model on a folder of images.

    \b
    Examples:
      pixbatch train sr --data photos/ --arch edsr_tiny --scale 2 --steps 2000 --out x2.safetensors
      pixbatch train seg --images train/images --masks train/masks --arch unet_small --out m.safetensors
      pixbatch train style --style starry.jpg --content photos/ --vgg-weights vgg16.pth --out starry.safetensors
    """


def _every(ctx, param, value: str) -> tuple[int | None, float | None]:
    """--save-every: steps (1000) or minutes (10m, 10min): (steps, None) or (None, minutes)."""
    text = str(value).strip().lower()
    try:
        if text.endswith(("m", "min")):
            minutes = float(text.removesuffix("min").removesuffix("m"))
            if minutes > 0 and minutes < float("inf"):
                return None, minutes
        elif int(text) >= 1:
            return int(text), None
    except ValueError:
        pass
    raise click.BadParameter(f"expected steps (1000) or minutes (10m), got {value!r}")


@train_group.command(name="sr", short_help="Train a super-resolution model.")
@click.option("--data", multiple=True, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of training images (repeatable); LR/HR pairs are cut from them.")
@click.option("--arch", required=True, help="A registered model, e.g. edsr_tiny_x4, or a family with --scale "
                                            "(edsr_baseline --scale 2).")
@click.option("--scale", type=click.IntRange(min=2), default=None, help="Scale, when --arch names a family.")
@click.option("--model-kwargs", default="{}", metavar="JSON",
              help='Architecture arguments, e.g. \'{"n_resblocks": 16, "n_feats": 48}\' (stored in the checkpoint).')
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write (.safetensors).")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True, help="Optimisation steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Patch pairs per step.")
@click.option("--patch", type=click.IntRange(min=8), default=48, show_default=True, help="LR patch size in px.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-3, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--loss", type=click.Choice(["l1", "l1+fft", "mse", "perceptual"]), default="l1", show_default=True,
              help="l1 or mse on pixels; l1+fft adds 0.05 x L1 of the spectra (no weights needed); perceptual: "
                   "VGG16 features plus --pixel-weight x L1.")
@click.option("--degrade", type=click.Choice(["bicubic", "real", "real-light"]), default="bicubic", show_default=True,
              help="How LR is made from HR: bicubic (the papers' protocol), or for photos real: blur, resize, noise "
                   "(Gaussian σ 1-30, Poisson) and JPEG (quality 30-95) twice, then sinc ringing; real-light: "
                   "the same with noise σ 1-5 and JPEG 70-95.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Processes making the --degrade real pairs while the model trains (0: in the training process).")
@click.option("--pixel-weight", type=FiniteFloat(min=0), default=0.1, show_default=True, help="Pixel L1 weight in the perceptual loss.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="torchvision VGG16 weights for --loss perceptual (default: the torch hub cache; never downloaded).")
@click.option("--init", default=None, metavar="FILE|MODEL",
              help="Start from this checkpoint or built-in model, of any scale (e.g. rlfn_x4 for an x2 model): "
                   "every tensor of matching name and shape is copied; new upsampler layers start fresh.")
@click.option("--freeze-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --init: train only the new upsampler for this many steps first.")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (default: on a GPU or a CPU with native bf16).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (initialisation, sampling, augmentation): the same seed trains the same model.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0 = torch's default).")
@click.option("--val-every", type=click.IntRange(min=1), default=250, show_default=True,
              help="Validate (PSNR on held-out images) every this many steps.")
@click.option("--save-every", default="1000", show_default=True, callback=_every, metavar="STEPS|MINm",
              help="Write OUT.state (for --resume) every this many steps, or minutes with m (10m).")
@click.option("--holdout", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A list of image file names (one per line) in --data: left out of training and validated whole "
                   "(Y-PSNR, scale px shaved, MATLAB-bicubic LR), as `pixbatch eval sr` measures.")
@click.option("--ema", type=FiniteFloat(0, 1, max_open=True), default=0.999, show_default=True,
              help="Decay of the weights' moving average, which validation and the saved model use (0: off).")
@click.option("--resume", is_flag=True, help="Continue from OUT.state if it exists.")
@click.pass_obj
def train_sr_command(app, data, arch, scale, model_kwargs, out, steps, batch_size, patch, lr, loss, degrade, workers,
                     pixel_weight, vgg_weights, init, freeze_steps, amp, seed, threads, val_every, save_every, holdout, ema, resume) -> None:
    """Train on self-supervised pairs: random HR crops, MATLAB-bicubic LR (or the real-world chain of
    --degrade real), random dihedral augmentation; Adam with a one-cycle schedule, gradient clipping, ICNR-initialised upsamplers.

    \b
    Examples:
    pixbatch train sr --data photos/ --arch edsr_baseline --scale 2 --steps 20000 --out x2.safetensors
    pixbatch train sr --data photos/ --arch edsr_baseline --scale 4 --init x2.safetensors --freeze-steps 500 ...
    """
    from pixbatch.models import UnknownModelError, list_models
    from pixbatch.train.sr import SrTrainConfig, train_sr

    name = arch if scale is None or arch.endswith(f"_x{scale}") else f"{arch}_x{scale}"
    if name not in list_models():
        app.fail_start(str(UnknownModelError(f"unknown model {name!r}; see `pixbatch models`")))
    kwargs = _json_object(app, model_kwargs)
    argv = _args_after("sr")
    cfg = SrTrainConfig(
        data=list(data), arch=name, out=out, model_kwargs=kwargs, steps=steps, batch_size=batch_size, patch=patch, lr=lr, loss=loss,
        degrade=degrade, workers=workers, pixel_weight=pixel_weight, vgg_weights=vgg_weights, init=init, freeze_steps=freeze_steps, amp=amp,
        seed=seed, threads=threads, val_every=val_every, save_every=save_every[0], save_minutes=save_every[1],
        holdout=holdout, ema=ema, resume=resume, command="pixbatch train sr " + shlex.join(argv),
    )
    recipe = _train(app, train_sr, cfg)
    which = f"held-out Y-PSNR {recipe['val_psnr_y']}" if holdout else f"validation PSNR {recipe['val_psnr_rgb']}"
    click.echo(f"saved {out}: {which} dB (bicubic {recipe['val_bicubic']}) after {recipe['seconds']} s")
    app.exit_for_file_errors()


def _train(app, train, cfg) -> dict:
    """Run a trainer on this invocation's device: its recipe, or one clear error line (exit 1) for a
    bad device, missing data or weights, or an unusable setting. Inputs it had to leave out are error
    lines as they happen (``app.file_error``)."""
    from pixbatch.io.decode import DecodeError
    from pixbatch.runtime.device import StartupError, resolve_device

    try:
        return train(cfg, resolve_device(app.device), progress=app.progress, on_error=app.file_error)
    except (StartupError, FileNotFoundError, DecodeError, ValueError) as exc:  # PairingError is a ValueError
        app.fail_start(str(exc))


def _json_object(app, text: str) -> dict:
    """--model-kwargs: a JSON object, or a startup error that says so."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        app.fail_start(f"--model-kwargs must be a JSON object, got {text!r}")
    return value


def _args_after(sub: str) -> list[str]:
    """The arguments after ``pixbatch [global options] train SUB``, recorded in the checkpoint."""
    argv = sys.argv
    for i in range(len(argv) - 1):
        if argv[i] == "train" and argv[i + 1] == sub:
            return argv[i + 2:]
    return []


def _sizes(ctx, param, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 16:
        raise click.BadParameter(f"expected crop sizes of at least 16 px like 512 or 256,512, got {value!r}")
    return sizes


@train_group.command(name="seg", short_help="Train a segmentation model.")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of training images.")
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of masks, paired with the images by file stem (or the part before the first '_').")
@click.option("--arch", default="unet", show_default=True,
              help="unet, unet_small, unet_drive, segnet, segnet_small or resnet34_unet (see `pixbatch models`).")
@click.option("--model-kwargs", default="{}", metavar="JSON", help='Architecture arguments, e.g. \'{"base": 32, "depth": 3}\'.')
@click.option("--classes", type=click.IntRange(min=1), default=1, show_default=True,
              help="1 = binary masks (0 / 255); C >= 2 = class-index masks (palette or gray values).")
@click.option("--ignore-index", type=int, default=None, help="Mask value that counts for nothing (e.g. 255).")
@click.option("--loss", default="bce+dice", show_default=True, help="bce, dice, focal, ce, or sums such as bce+dice.")
@click.option("--size", "sizes", default="512", show_default=True, callback=_sizes,
              help="Crop size in px; several (256,512) = progressive resizing over equal parts of the steps. "
                   "Images smaller than a crop are mirror-padded to it.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Optimisation steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Crops per step at the first size (later sizes keep the pixels per step).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=2e-3, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--val-fraction", type=FiniteFloat(0, 0.9), default=0.1, show_default=True,
              help="Images held out for validation (the checkpoint with the best Dice, or mIoU for multi-class "
                   "models, is kept).")
@click.option("--val-images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Validate on this folder instead of a held-out fraction (masks from --val-masks).")
@click.option("--val-masks", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Masks of --val-images (default: --masks).")
@click.option("--val-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="Validate every this many steps; the best checkpoint so far is kept.")
@click.option("--encoder-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="resnet34_unet: torchvision ResNet34 ImageNet weights from a local file (never downloaded).")
@click.option("--tune-threshold", is_flag=True,
              help="Binary models: store the threshold (0.2-0.8) with the best validation Dice instead of 0.5; "
                   "worth it with enough validation images.")
@click.option("--class-weights", default=None, metavar="auto|W0,W1,...",
              help="Multi-class cross-entropy weights: auto = median-frequency balancing over the training masks "
                   "(SegNet), or one number per class.")
@click.option("--class-names", default=None, metavar="A,B,...",
              help="Names of the classes in index order, stored in the checkpoint (eval and segment show them).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write (.safetensors).")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (default: on a GPU or a CPU with native bf16).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (initialisation, sampling, augmentation): the same seed trains the same model.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0 = torch's default).")
@click.option("--save-every", default="500", show_default=True, callback=_every, metavar="STEPS|MINm",
              help="Write OUT.state (for --resume) every this many steps, or minutes with m (10m).")
@click.option("--resume", is_flag=True, help="Continue from OUT.state if it exists (the best weights so far included).")
@click.pass_obj
def train_seg_command(app, images, masks, arch, model_kwargs, classes, ignore_index, loss, sizes, steps, batch_size,
                      lr, val_fraction, val_images, val_masks, val_every, encoder_weights, tune_threshold,
                      class_weights, class_names, out, amp, seed, threads, save_every, resume) -> None:
    """Train on random crops of the images with augmentations applied alike to image and mask
    (flips, 90-degree and small rotations; brightness/contrast on the image). The checkpoint keeps the
    weights with the best validation Dice (mIoU for multi-class models) and the full recipe.

    \b
    Examples:
    pixbatch train seg --images train/images --masks train/masks --arch unet --loss bce+dice --size 512
    pixbatch train seg ... --size 256,512 --steps 4000          # progressive resizing
    """
    from pixbatch.models import UnknownModelError, list_models, model_entry
    from pixbatch.train.seg import SegTrainConfig, train_seg

    if arch not in list_models() or model_entry(arch).task != "seg":
        app.fail_start(str(UnknownModelError(f"unknown segmentation model {arch!r}; see `pixbatch models`")))
    kwargs = _json_object(app, model_kwargs)
    cfg = SegTrainConfig(
        images=images, masks=masks, arch=arch, out=out, model_kwargs=kwargs, classes=classes,
        ignore_index=ignore_index, loss=loss, sizes=sizes, steps=steps, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, val_images=val_images, val_masks=val_masks, val_every=val_every,
        encoder_weights=encoder_weights, tune_threshold=tune_threshold, class_weights=class_weights,
        class_names=class_names.split(",") if class_names else None, amp=amp, seed=seed, threads=threads,
        save_every=save_every[0], save_minutes=save_every[1], resume=resume,
        command="pixbatch train seg " + shlex.join(_args_after("seg")),
    )
    recipe = _train(app, train_seg, cfg)
    score = recipe["val_dice"] if recipe["val_miou"] is None else recipe["val_miou"]
    click.echo(f"saved {out}: validation {recipe['val_metric']} {score} (step {recipe['best_step']}) "
               f"after {recipe['seconds']} s")
    app.exit_for_file_errors()


@train_group.command(name="style", short_help="Train a fast style-transfer net for one style image.")
@click.option("--style", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The style image.")
@click.option("--content", multiple=True, required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of content photos (repeatable; e.g. COCO train2014).")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="torchvision VGG16 ImageNet weights, vgg16-397923af.pth (default: the torch hub cache; "
                   "never downloaded).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (.safetensors); previews go to OUT_preview.png.")
@click.option("--arch", type=click.Choice(["johnson_style", "mobilenet_style"]), default="johnson_style",
              show_default=True, help="johnson_style (Johnson et al. 2016) or mobilenet_style (lighter, faster).")
@click.option("--model-kwargs", default="{}", metavar="JSON", help='Architecture arguments, e.g. \'{"width": 16}\'.')
@click.option("--steps", type=click.IntRange(min=1), default=20000, show_default=True, help="Optimisation steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Content crops per step.")
@click.option("--size", type=click.IntRange(min=32), default=256, show_default=True, help="Content crop size in px.")
@click.option("--style-size", type=click.IntRange(min=32), default=None,
              help="Resize the style image's longer side to this first (its brush strokes' scale).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-3, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--content-weight", type=FiniteFloat(min=0), default=1e5, show_default=True,
              help="Weight of the content loss (VGG16 features of the photo).")
@click.option("--style-weight", type=FiniteFloat(min=0), default=1e10, show_default=True,
              help="Weight of the style loss (Gram matrices of VGG16 features of the style image).")
@click.option("--tv-weight", type=FiniteFloat(min=0), default=1e2, show_default=True, help="Total variation (smoothness).")
@click.option("--preview", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Content photo for the previews (default: the first content image).")
@click.option("--preview-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="Write OUT_preview.png every this many steps.")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (default: on a GPU or a CPU with native bf16).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (initialisation, sampling, augmentation): the same seed trains the same model.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0 = torch's default).")
@click.option("--save-every", default="1000", show_default=True, callback=_every, metavar="STEPS|MINm",
              help="Write OUT.state (for --resume) every this many steps, or minutes with m (10m).")
@click.option("--resume", is_flag=True, help="Continue from OUT.state if it exists.")
@click.pass_obj
def train_style_command(app, style, content, vgg_weights, out, arch, model_kwargs, steps, batch_size, size,
                        style_size, lr, content_weight, style_weight, tv_weight, preview, preview_every, amp, seed,
                        threads, save_every, resume) -> None:
    """Train a feed-forward style net (Johnson et al.) on random crops of content photos, with VGG16
    content (relu2_2) and Gram style (relu1_2 .. relu4_3) losses and total variation. The result runs
    with `pixbatch stylize --style OUT`.

    \b
    Examples:
    pixbatch train style --style starry.jpg --content coco/ --vgg-weights vgg16-397923af.pth --out starry.safetensors
    pixbatch train style ... --style-size 512 --style-weight 5e10 --resume
    """
    from pixbatch.train.style import StyleTrainConfig, train_style

    cfg = StyleTrainConfig(
        style=style, content=list(content), out=out, arch=arch, model_kwargs=_json_object(app, model_kwargs),
        vgg_weights=vgg_weights, steps=steps, batch_size=batch_size, size=size, style_size=style_size, lr=lr,
        content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight, preview=preview,
        preview_every=preview_every, amp=amp, seed=seed, threads=threads, save_every=save_every[0],
        save_minutes=save_every[1], resume=resume,
        command="pixbatch train style " + shlex.join(_args_after("style")),
    )
    recipe = _train(app, train_style, cfg)
    losses = ", ".join(f"{k} {v:.3g}" for k, v in recipe["final_losses"].items())
    click.echo(f"saved {out}: final losses {losses} after {recipe['seconds']} s")
    app.exit_for_file_errors()
