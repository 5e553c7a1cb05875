"""What the engine knows about a model, whoever trained it: the descriptor and the loaded pair."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from torch import nn


class ImageModel(nn.Module):
    """What every built-in architecture declares about itself, as class attributes (or, where they
    depend on the variant, attributes its ``__init__`` sets or properties): the engine reads these,
    never probes for them.

    ``receptive_field`` is the radius in input px of the region that can influence one output pixel
    (an upper bound), None when it is unbounded (pooling over the whole input); windows of a tiled
    image get at least this much context. Inputs are RGB (or ``in_channels`` planes) in ``value_range``."""

    task: ClassVar[str] = "sr"  # "sr" (image -> image x scale), "seg" (logits per pixel), "style" (image)
    scale: int = 1
    in_channels: int = 3
    out_channels: int = 3  # output planes: colours, or one logit per class (1: binary)
    size_multiple: int = 1  # input sizes the model computes exactly (the runner pads others)
    min_size: int = 1  # smaller inputs are padded up to this many px (pooling needs a few pixels)
    receptive_field: int | None = None
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")  # what it computes correctly in
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)  # input and output normalisation


@dataclass(frozen=True)
class ModelInfo:
    """What the engine needs to know about a model, whoever trained it."""

    name: str
    arch: str
    source: str  # "builtin" (shipped weights), "untrained", "checkpoint" (ours), "foreign"
    scale: int
    in_channels: int
    out_channels: int
    params: int
    supports_fp16: bool
    supports_bf16: bool
    size_multiple: int
    receptive_field: int | None  # radius in input pixels; None when it could not be bounded
    path: str | None = None
    training: dict | None = None
    recognised_by: str | None = None  # for foreign checkpoints: "pixbatch" (native implementation) or "spandrel"
    task: str = "sr"  # "sr" (image -> image x scale), "seg" (out_channels logits per pixel), "style" (image)
    builder: dict | None = None  # {"name": registered architecture, "kwargs": ...} when pixbatch implements it
    min_size: int = 1  # smaller inputs are padded up to this many px (pooling attention needs a few pixels)
    max_size: int = 0  # larger inputs are tiled to fit (0: any size); an ONNX file of one fixed size has both
    denoise: float | None = None  # where a real-photo model sits between its two endpoints (0 grain, 1 clean)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    module: nn.Module
    info: ModelInfo


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_native(name: str, module: ImageModel, *, source: str, path: str | None = None,
                    training: dict | None = None, recognised_by: str | None = None,
                    builder: dict | None = None) -> ModelInfo:
    """The descriptor of a built-in architecture, from what it declares (``ImageModel``)."""
    rf = module.receptive_field
    return ModelInfo(
        name=name,
        arch=type(module).__name__,
        source=source,
        scale=int(module.scale),
        in_channels=int(module.in_channels),
        out_channels=int(module.out_channels),
        params=count_params(module),
        supports_fp16="fp16" in module.precisions,
        supports_bf16="bf16" in module.precisions,
        size_multiple=int(module.size_multiple),
        receptive_field=None if rf is None else int(rf),
        path=path,
        training=training,
        recognised_by=recognised_by,
        task=module.task,
        builder=builder,
        min_size=int(module.min_size),
    )
