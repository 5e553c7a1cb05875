"""``pixbatch models``: what is built in, and what a checkpoint file is."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pixbatch.cli._options import STYLE_NETS_HINT


@click.command(short_help="List built-in models or describe a checkpoint file.")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--pattern", default="*", show_default=True, help="Filter built-in names, e.g. 'edsr*'.")
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="OUT.safetensors",
              help="Convert CHECKPOINT (an architecture pixbatch implements) to a pixbatch safetensors file, its "
                   "architecture and origin in the metadata.")
@click.option("--source", "origin", default=None, metavar="TEXT",
              help="With --save: where CHECKPOINT comes from (repository @ commit : path), kept in the metadata.")
@click.option("--licence", default=None, metavar="TEXT", help="With --save: the weights' licence, kept in the metadata.")
@click.option("--precision", type=click.Choice(["int8"]), default=None,
              help="With CHECKPOINT (a file or a built-in name): its cached int8 models, their measured loss and speed.")
@click.pass_obj
def models(app, checkpoint: Path | None, pattern: str, save: Path | None, origin: str | None,
           licence: str | None, precision: str | None) -> None:
    """Without an argument, list the built-in models; with CHECKPOINT, describe that file
    (architecture, scale, parameters, channels, supported dtypes, receptive field).

    \b
    Examples:
      pixbatch models
      pixbatch models --pattern 'edsr*'
      pixbatch models realesr-animevideov3.pth
      pixbatch models rlfn_x4 --precision int8
      pixbatch models style_weights/udnie/ --save udnie.safetensors
    """
    from pixbatch.models import (
        UnknownModelError,
        UnsupportedModelError,
        create_model,
        denoisable_models,
        list_models,
        model_entry,
    )

    if save is not None and checkpoint is None:
        raise click.UsageError("--save needs a CHECKPOINT to convert")
    if (origin or licence) and save is None:
        raise click.UsageError("--source and --licence describe a file written with --save")
    if precision is not None and (checkpoint is None or save is not None):
        raise click.UsageError("--precision int8 lists the int8 models cached for one CHECKPOINT (a file or a name)")
    if checkpoint is not None:
        try:
            loaded = create_model(checkpoint)
        except (UnknownModelError, UnsupportedModelError, FileNotFoundError) as exc:
            app.fail_start(str(exc))
        info = loaded.info
        if save is not None:
            _convert(app, loaded, checkpoint, save, origin, licence)
            return
        if precision == "int8":
            _int8_entries(app, info.name)
            return
        d = info.as_dict()
        if app.as_json:
            click.echo(json.dumps(d, indent=2))
            return
        dtypes = ["fp32"] + (["bf16"] if info.supports_bf16 else []) + (["fp16"] if info.supports_fp16 else [])
        rows = [
            ("file", str(checkpoint)), ("architecture", info.arch),
            ("origin", {"checkpoint": "pixbatch checkpoint", "builtin": "shipped with pixbatch",
                        "untrained": "untrained (fresh weights)", "onnx": "ONNX file (run by ONNX Runtime or OpenVINO)"}.get(
                info.source, f"foreign (recognised by {info.recognised_by})")),
            ("task", {"sr": f"super-resolution x{info.scale}", "style": "style transfer (pixbatch stylize)"}.get(
                info.task, f"segmentation, {info.out_channels} {'logit' if info.out_channels == 1 else 'classes'}")),
            ("parameters", f"{info.params:,}"),
            ("channels", f"{info.in_channels} -> {info.out_channels}"), ("dtypes", ", ".join(dtypes)),
            ("size multiple", str(info.size_multiple)),
            *([("input size", f"{info.max_size} x {info.max_size} px only (larger images: windows of it)")]
              if info.max_size else []),
            ("receptive field", f"{info.receptive_field} px" if info.receptive_field is not None else "unbounded"),
            *([("denoise", f"{info.denoise:g} (for real photos: --denoise 0 keeps grain, 1 cleans)")]
              if info.denoise is not None else []),
        ]
        onnx = (info.training or {}).get("onnx")
        if onnx:  # what an ONNX file's description rests on
            rows.append(("input", f"{onnx['found']['layout']}, {onnx['found']['input_type']}, {onnx['input_order']}, "
                                  f"white = {onnx['value_range']:g}" + (f", mean {onnx['mean']}, std {onnx['std']}"
                                                                        if onnx["mean"] else "")))
            rows.append(("found from", ", ".join(f"{k} ({v})" for k, v in onnx["found"].items()
                                                 if k not in ("layout", "input_type"))))
        if info.training and "command" in info.training:
            rows.append(("trained with", info.training["command"]))
        for key, label in (("converted_from", "converted from"), ("source", "source"), ("licence", "licence")):
            if info.training and key in info.training:
                rows.append((label, info.training[key]))
        for k, v in rows:
            click.echo(f"{k:>16}: {v}")
        return
    from pixbatch.tasks.defaults import SEGMENT, UPSCALE

    defaults = {v: k for k, v in UPSCALE.models.items()}
    real = set(denoisable_models())
    entries = []
    for name in list_models(pattern):  # as the registry describes each
        entry = model_entry(name)
        info = entry.describe()
        entries.append({"name": name, "family": entry.family, "arch": info.arch, "task": entry.task,
                        "scale": info.scale, "classes": info.out_channels if entry.task == "seg" else None,
                        "params": info.params, "weights": entry.weights is not None,
                        "default_for_scale": defaults.get(name), "for_real_photos": name in real})
    entries.sort(key=lambda e: not e["weights"])  # shipped weights first, then by name
    if app.as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    name_w = max(len(e["name"]) for e in entries)  # columns as wide as their longest entry
    arch_w = max(len(e["arch"]) for e in entries)
    click.echo(f"{'name':<{name_w}}  {'arch':<{arch_w}}  {'task':>7} {'params':>12}  weights")
    for e in entries:
        note = "shipped" if e["weights"] else "-"
        if e["default_for_scale"]:
            note += f" (default for --scale {e['default_for_scale']})"
        elif e["name"] == SEGMENT.model_for(None):
            note += " (default for segment)"
        elif e["for_real_photos"]:
            note += " (for real photos: blur, noise, JPEG; --denoise 0..1)"
        task = {"sr": f"x{e['scale']}", "style": "style"}.get(e["task"], "segment")
        click.echo(f"{e['name']:<{name_w}}  {e['arch']:<{arch_w}}  {task:>7} {e['params']:>12,}  {note}")
    click.echo("\nStyle nets for `pixbatch stylize` are not shipped: pass a file with --style (a PyTorch "
               "fast_neural_style .pth, a MobileNetV2 style net, a folder of Engstrom's TensorFlow variables); "
               f"{STYLE_NETS_HINT}.")
    click.echo("Any checkpoint spandrel recognises (ESRGAN, Real-ESRGAN compact, SwinIR, ...) also works: "
               "--model PATH. Describe one with `pixbatch models PATH`.")


def _convert(app, loaded, source: Path, out: Path, origin: str | None, licence: str | None) -> None:
    """Write a loaded checkpoint as pixbatch safetensors (architecture and kwargs in the metadata, and
    the original file's name and sha256, its source and licence when given)."""
    import hashlib

    from pixbatch.models.checkpoint import save_checkpoint

    info = loaded.info
    if info.builder is None:
        app.fail_start(f"{source}: {info.arch} runs through spandrel; only architectures pixbatch implements "
                       "can be saved as pixbatch checkpoints")
    if out.suffix.lower() != ".safetensors":
        app.fail_start(f"--save writes safetensors: name the file OUT.safetensors, not {out.name}")
    training = dict(info.training or {})
    if "converted_from" not in training:
        digest = hashlib.sha256(source.read_bytes()).hexdigest() if source.is_file() else None
        training.update(converted_from=source.name, **({"converted_sha256": digest} if digest else {}))
    training.update({k: v for k, v in (("source", origin), ("licence", licence)) if v})
    save_checkpoint(loaded.module, out, name=info.builder["name"], kwargs=info.builder["kwargs"], training=training)
    click.echo(f"saved {out}: {info.arch}, {info.params:,} parameters (from {source})")


def _int8_entries(app, name: str) -> None:
    """The int8 models cached for ``name`` (runtime/int8.py), one paragraph each."""
    from pixbatch.runtime.int8 import cache_root, cached_entries, quality_line

    entries = cached_entries(name)
    if app.as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo(f"no int8 model of {name} cached in {cache_root()}: the first run with --precision int8 makes one")
        return
    for e in entries:
        kept = e["float_convolutions"]
        click.echo(f"{e['path']}  ({e['created']}, {e['seconds']:g} s to make)")
        click.echo(f"  {'kept' if e['accepted'] else 'REFUSED'}: {quality_line(e)}")
        click.echo(f"  calibrated on {e['calibration']}")
        if e["accepted"]:
            click.echo(f"  {len(kept)} of {e['convolutions']} convolutions in {e['precision']}"
                       + (f": {', '.join(kept)}" if kept else "")
                       + f"; {e['float_ms'] / e['int8_ms']:.2f}x the speed of {e['precision']} at {e['probe']} px "
                       f"({e['int8_ms']:g} against {e['float_ms']:g} ms)")
