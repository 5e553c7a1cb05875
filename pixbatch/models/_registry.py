"""Registry of built-in architectures: ``register_model``, ``list_models``, ``build_registered``.

A leaf: family modules import it to register their variants; ``pixbatch.models`` imports the families."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from pathlib import Path

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class UnknownModelError(ValueError):
    """Raised for a model name that is neither registered nor an existing file."""


class UnsupportedModelError(ValueError):
    """Raised for a checkpoint file whose architecture pixbatch cannot build."""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a variant function under its own name (``family_variant``)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def builtin_weights(name: str) -> Path | None:
    """The shipped checkpoint of a registered model, if the package has one."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    return path if path.is_file() else None


def build_registered(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture with fresh (initialised) weights."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `pixbatch models`"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _MODELS[name](**kwargs)

