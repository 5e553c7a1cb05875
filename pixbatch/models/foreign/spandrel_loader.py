"""Checkpoints trained by others: recognised from their keys and shapes by spandrel."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pixbatch.models._registry import UnsupportedModelError
from pixbatch.models.info import LoadedModel, ModelInfo, count_params


def load_foreign(state_dict: dict, path: Path) -> LoadedModel:
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(state_dict))
    except spandrel.UnsupportedModelError:
        raise UnsupportedModelError(f"{path}: unrecognised architecture (not a model spandrel knows)") from None
    except Exception as exc:  # keys of a known architecture with shapes or values that do not fit it
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"{path}: looks like a known architecture but cannot be loaded "
                                    f"({type(exc).__name__}: {reason})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UnsupportedModelError(f"{path}: {descriptor.architecture.name} is not an image-to-image model")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UnsupportedModelError(
            f"{path}: model maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
            "pixbatch upscale runs RGB -> RGB models"
        )
    module = descriptor.model.eval()
    multiple = max(1, int(descriptor.size_requirements.multiple_of))
    info = ModelInfo(
        name=path.name,
        arch=descriptor.architecture.name,
        source="foreign",
        scale=int(descriptor.scale),
        in_channels=int(descriptor.input_channels),
        out_channels=int(descriptor.output_channels),
        params=count_params(module),
        supports_fp16=bool(descriptor.supports_half),
        supports_bf16=bool(descriptor.supports_bfloat16),
        size_multiple=multiple,
        receptive_field=probe_receptive_field(module, int(descriptor.scale), multiple),
        path=str(path),
        recognised_by="spandrel",
    )
    return LoadedModel(module, info)


def probe_receptive_field(module: nn.Module, scale: int, multiple: int = 1, start: int = 48,
                          limit: int = 192) -> int | None:
    """Measure the receptive field radius by back-propagating from the output block of one centre
    input pixel: the input pixels with a non-zero gradient are exactly those that influence it.
    Returns None when it reaches the probe's edge even at ``limit`` px (global attention, etc.)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        size = start
        while size <= limit:
            n = -(-size // multiple) * multiple
            gen = torch.Generator().manual_seed(0)
            x = torch.rand(1, 3, n, n, generator=gen, requires_grad=True)
            with torch.enable_grad():
                y = module(x)
                c = n // 2
                y[:, :, c * scale:(c + 1) * scale, c * scale:(c + 1) * scale].sum().backward()
            hit = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
            radius = int(max((hit - c).abs().max().item(), 0))
            if radius < c - 1:
                return radius
            size *= 2
        return None
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
