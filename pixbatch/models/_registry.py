"""Registry of built-in architectures and of recognisers for checkpoints that others trained.

A leaf: family modules import it to register their variants (``@register_model``) and the
published layouts they implement (``@register_recogniser``); ``pixbatch.models`` imports the families.
Adding an architecture touches its family module only."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class UnknownModelError(ValueError):
    """Raised for a model name that is neither registered nor an existing file."""


class UnsupportedModelError(ValueError):
    """Raised for a checkpoint file whose architecture pixbatch cannot build."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant and what is known about it without building it."""

    name: str
    build: Callable[..., nn.Module]
    task: str  # "sr" (image -> image x scale), "seg" (image -> logits per pixel) or "style" (image -> image)
    family: str  # the module that defines it: "edsr", "imdn", "unet", ...
    value_range: tuple[float, float] = (0.0, 1.0)  # input and output normalisation: RGB in [0, 1]

    @property
    def weights(self) -> Path | None:
        """The shipped checkpoint, if the package has one."""
        return builtin_weights(self.name)


# (state dict, requested scale) -> (registered name, builder kwargs[, the tensors renamed to the builder's
# keys]) when the layout is recognised, else None
Recogniser = Callable[[dict, "int | None"], "tuple[str, dict] | tuple[str, dict, dict] | None"]

_MODELS: dict[str, ModelEntry] = {}
_RECOGNISERS: list[tuple[str, Recogniser]] = []


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant function under its own name (``family_variant``); the task is the family's
    package (``models/sr`` or ``models/seg``)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    package, _, family = fn.__module__.rpartition(".")
    task = package.rpartition(".")[2]
    _MODELS[name] = ModelEntry(name, fn, task if task in ("seg", "style") else "sr", family)
    return fn


def register_recogniser(arch: str) -> Callable[[Recogniser], Recogniser]:
    """Register a function that recognises a published checkpoint layout from its keys and shapes.
    Recognisers are tried in registration order, before spandrel."""
    def add(fn: Recogniser) -> Recogniser:
        _RECOGNISERS.append((arch, fn))
        return fn

    return add


def recognisers() -> list[tuple[str, Recogniser]]:
    return list(_RECOGNISERS)


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


def build_registered(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture with fresh (initialised) weights."""
    return model_entry(name).build(**kwargs)
