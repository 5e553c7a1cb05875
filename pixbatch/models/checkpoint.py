"""Checkpoint files: ours (safetensors + config in the metadata) and foreign ones (via spandrel).

Nothing here unpickles arbitrary objects: safetensors, or ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pixbatch.models import LoadedModel, ModelInfo
from pixbatch.models._registry import UnsupportedModelError, build_registered

METADATA_KEY = "pixbatch.config"


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_native(name: str, module: nn.Module, *, source: str, path: str | None = None,
                    training: dict | None = None, recognised_by: str | None = None) -> ModelInfo:
    rf = module.receptive_field
    return ModelInfo(
        name=name,
        arch=type(module).__name__,
        source=source,
        scale=int(module.scale),
        in_channels=int(getattr(module, "in_channels", 3)),
        out_channels=int(getattr(module, "out_channels", 3)),
        params=count_params(module),
        supports_fp16=True,
        supports_bf16=True,
        size_multiple=int(getattr(module, "size_multiple", 1)),
        receptive_field=None if rf is None else int(rf),
        path=path,
        training=training,
        recognised_by=recognised_by,
        task=getattr(module, "task", "sr"),
    )


def save_checkpoint(module: nn.Module, path: Path, *, name: str, kwargs: dict | None = None,
                    training: dict | None = None) -> None:
    """Write a safetensors checkpoint whose metadata is enough to rebuild the model; atomically."""
    from safetensors.torch import save

    from pixbatch.io.atomic import write_bytes

    config = {"name": name, "kwargs": kwargs or {}, "scale": int(module.scale), "value_range": [0.0, 1.0],
              "training": training or {}}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    write_bytes(save(tensors, metadata={METADATA_KEY: json.dumps(config)}), Path(path), overwrite=True)


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a checkpoint, loaded without unpickling code."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        tensors = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
        return tensors, metadata
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it, a TorchScript archive, or not a checkpoint
        raise UnsupportedModelError(
            f"{path}: cannot be read as plain weights ({type(exc).__name__}); pixbatch only loads "
            "safetensors or state dicts that torch.load(weights_only=True) accepts"
        ) from exc
    if not isinstance(obj, dict):
        raise UnsupportedModelError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj, {}


def load_checkpoint(path: Path, scale: int | None = None) -> LoadedModel:
    """Load any checkpoint; ``scale`` picks the branch of multi-scale models (CARN-M; default 4)."""
    tensors, metadata = read_state_dict(path)
    if METADATA_KEY in metadata:
        config = json.loads(metadata[METADATA_KEY])
        module = build_registered(config["name"], **config.get("kwargs", {}))
        module.load_state_dict(tensors, strict=True)
        info = describe_native(config["name"], module, source="checkpoint", path=str(path),
                               training=config.get("training") or None)
        return LoadedModel(module.eval(), info)
    native = _recognise_native(tensors, scale)
    if native is not None:  # a published architecture we implement ourselves, with its original keys
        name, kwargs, tensors = native
        module = build_registered(name, **kwargs)
        module.load_state_dict(tensors, strict=True)
        info = describe_native(path.name, module, source="foreign", path=str(path), recognised_by="pixbatch")
        return LoadedModel(module.eval(), info)
    from pixbatch.models.foreign.spandrel_loader import load_foreign

    return load_foreign(tensors, path)


def _recognise_native(tensors: dict, scale: int | None = None) -> tuple[str, dict, dict] | None:
    """Published architectures implemented here, recognised from their keys and shapes."""
    from pixbatch.models.sr import carn, imdn

    for prefix in ("", "module."):
        stripped = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if len(stripped) != len(tensors):
            continue
        found = imdn.recognise(stripped) or carn.recognise(stripped, scale)
        if found is not None:
            return found[0], found[1], stripped
    return None
