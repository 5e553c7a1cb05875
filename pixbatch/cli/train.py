"""``pixbatch train``: train models on your own images."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group(name="train", short_help="Train models.")
def train_group() -> None:
    """Train a model on a folder of images."""


@train_group.command(name="sr", short_help="Train a super-resolution model.")
@click.option("--data", multiple=True, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of training images (repeatable); LR/HR pairs are cut from them.")
@click.option("--arch", required=True, help="A registered model, e.g. edsr_tiny_x4, or a family with --scale "
                                            "(edsr_baseline --scale 2).")
@click.option("--scale", type=click.IntRange(min=2), default=None, help="Scale, when --arch names a family.")
@click.option("--model-kwargs", default="{}", metavar="JSON",
              help='Architecture arguments, e.g. \'{"n_resblocks": 16, "n_feats": 48}\' (stored in the checkpoint).')
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write (.safetensors).")
@click.option("--steps", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--patch", type=click.IntRange(min=8), default=48, show_default=True, help="LR patch size in px.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (one-cycle).")
@click.option("--loss", type=click.Choice(["l1", "mse", "perceptual"]), default="l1", show_default=True)
@click.option("--pixel-weight", type=float, default=0.1, show_default=True, help="Pixel L1 weight in the perceptual loss.")
@click.option("--vgg-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="torchvision VGG16 weights for --loss perceptual (default: the torch hub cache; never downloaded).")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Progressive resizing: start from this checkpoint (e.g. the x2 model for x4).")
@click.option("--freeze-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --init: train only the new upsampler for this many steps first.")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast (default: on a GPU or a CPU with native bf16).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0 = torch's default).")
@click.option("--val-every", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Write OUT.state (for --resume) this often.")
@click.option("--resume", is_flag=True, help="Continue from OUT.state if it exists.")
@click.pass_obj
def train_sr_command(app, data, arch, scale, model_kwargs, out, steps, batch_size, patch, lr, loss, pixel_weight, vgg_weights,
                     init, freeze_steps, amp, seed, threads, val_every, save_every, resume) -> None:
    """Train on self-supervised pairs: random HR crops, MATLAB-bicubic LR, random dihedral
    augmentation; Adam with a one-cycle schedule, gradient clipping, ICNR-initialised upsamplers.

    \b
    pixbatch train sr --data photos/ --arch edsr_baseline --scale 2 --steps 20000 --out x2.safetensors
    pixbatch train sr --data photos/ --arch edsr_baseline --scale 4 --init x2.safetensors --freeze-steps 500 ...
    """
    from pixbatch.models import UnknownModelError, list_models
    from pixbatch.runtime.device import StartupError, resolve_device
    from pixbatch.train.sr import SrTrainConfig, command_line, train_sr

    name = arch if scale is None or arch.endswith(f"_x{scale}") else f"{arch}_x{scale}"
    if name not in list_models():
        app.fail_start(str(UnknownModelError(f"unknown model {name!r}; see `pixbatch models`")))
    try:
        kwargs = json.loads(model_kwargs)
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict):
        app.fail_start(f"--model-kwargs must be a JSON object, got {model_kwargs!r}")
    if Path(sys.argv[0]).name in ("sr.py", "pixbatch.train.sr"):  # python -m pixbatch.train.sr ARGS
        argv = sys.argv[1:]
    else:  # pixbatch [global options] train sr ARGS
        argv = sys.argv[sys.argv.index("sr") + 1:] if "sr" in sys.argv else []
    cfg = SrTrainConfig(
        data=list(data), arch=name, out=out, model_kwargs=kwargs, steps=steps, batch_size=batch_size, patch=patch, lr=lr, loss=loss,
        pixel_weight=pixel_weight, vgg_weights=vgg_weights, init=init, freeze_steps=freeze_steps, amp=amp,
        seed=seed, threads=threads, val_every=val_every, save_every=save_every, resume=resume,
        command=command_line(argv),
    )
    try:
        device = resolve_device(app.device)
        recipe = train_sr(cfg, device, progress=app.progress)
    except (StartupError, FileNotFoundError, ValueError) as exc:
        app.fail_start(str(exc))
    click.echo(f"saved {out}: validation PSNR {recipe['val_psnr_rgb']} dB (bicubic {recipe['val_bicubic']}) "
               f"after {recipe['seconds']} s")
