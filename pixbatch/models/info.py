"""What the engine knows about a model, whoever trained it: the descriptor and the loaded pair."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    module: nn.Module
    info: ModelInfo


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
