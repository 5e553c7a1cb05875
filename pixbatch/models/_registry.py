"""Registry of built-in architectures: every variant with what its architecture declares.

A leaf: family modules import it to register their variants (``@register_model``); ``pixbatch.models``
imports the families. The published checkpoint layouts they implement are recognised in the order
``models/recognisers.py`` lists them."""

from __future__ import annotations

import difflib
import fnmatch
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pixbatch.models.info import ImageModel, ModelInfo, describe_native

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class UnknownModelError(ValueError):
    """Raised for a model name that is neither registered nor an existing file."""


class UnsupportedModelError(ValueError):
    """Raised for a checkpoint file whose architecture pixbatch cannot build."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: its builder, its architecture and what that declares (``ImageModel``)."""

    name: str
    build: Callable[..., nn.Module]
    arch: type[ImageModel]
    family: str  # the module that defines it: "edsr", "imdn", "unet", ...

    @property
    def task(self) -> str:
        return self.arch.task

    @property
    def value_range(self) -> tuple[float, float]:
        return self.arch.value_range

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.arch.precisions

    @property
    def weights(self) -> Path | None:
        """The shipped checkpoint, if the package has one."""
        return builtin_weights(self.name)

    def describe(self) -> ModelInfo:
        """Everything the variant declares (scale, classes, receptive field, size multiple, ...), read
        from a copy built on the meta device: shapes only, no memory, no initialisation work."""
        return _describe(self.name)


# (state dict, requested scale) -> (registered name, builder kwargs[, the tensors renamed to the builder's
# keys]) when the layout is recognised, else None
Recogniser = Callable[[dict, "int | None"], "tuple[str, dict] | tuple[str, dict, dict] | None"]

_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant function under its own name (``family_variant``). Its return annotation names
    its architecture, an ``ImageModel`` whose declarations (task, precisions, normalisation) the entry
    carries."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    arch = typing.get_type_hints(fn).get("return")
    if not (isinstance(arch, type) and issubclass(arch, ImageModel)):
        raise TypeError(f"{name} must be annotated with the ImageModel it builds (-> ArchName)")
    _MODELS[name] = ModelEntry(name, fn, arch, fn.__module__.rpartition(".")[2])
    return fn


@functools.cache
def _describe(name: str) -> ModelInfo:
    with torch.device("meta"):
        module = _MODELS[name].build()
    return describe_native(name, module, source="builtin" if builtin_weights(name) else "untrained")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `pixbatch models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def builtin_weights(name: str) -> Path | None:
    """The shipped checkpoint of a registered model, if the package has one."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def denoise_endpoint(name: str) -> Path | None:
    """The other end of a built-in model's ``--denoise`` range: ``NAME.safetensors`` is denoise 1 (trained
    on strong noise and JPEG), ``NAME.denoise0.safetensors`` denoise 0 (trained on weak ones)."""
    path = WEIGHTS_DIR / f"{name}.denoise0.safetensors"
    return path if path.is_file() and builtin_weights(name) else None


def build_registered(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture with fresh (initialised) weights."""
    return model_entry(name).build(**kwargs)
