"""Models: built-in architectures by family, the registry, and checkpoint loading.

``create_model(name_or_path)`` returns a :class:`LoadedModel`: the module plus a :class:`ModelInfo`
descriptor (scale, channels, supported dtypes, size multiple, receptive field for tiling).
"""

from __future__ import annotations

from pathlib import Path

from pixbatch.models._registry import (
    ModelEntry,
    UnknownModelError,
    UnsupportedModelError,
    build_registered,
    builtin_weights,
    denoise_endpoint,
    list_models,
    model_entry,
    register_model,
)
from pixbatch.models.info import LoadedModel, ModelInfo, count_params, describe_native

# Importing a family module registers its variants; families import only the registry.
from pixbatch.models.seg import resnet_unet, segnet, unet  # noqa: F401, E402, I001
from pixbatch.models.sr import bsrn, carn, edsr, imdn, rlfn, safmn, smfan, span  # noqa: F401, E402
from pixbatch.models.style import engstrom, johnson, mobilenet  # noqa: F401, E402

__all__ = [
    "LoadedModel",
    "ModelEntry",
    "ModelInfo",
    "UnknownModelError",
    "UnsupportedModelError",
    "build_registered",
    "builtin_weights",
    "denoise_endpoint",
    "denoisable_models",
    "count_params",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin", ".onnx")


def looks_like_path(name_or_path: str) -> bool:
    return Path(name_or_path).suffix.lower() in CHECKPOINT_SUFFIXES or Path(name_or_path).exists()


DEFAULT_DENOISE = 0.5


def denoisable_models() -> list[str]:
    """The built-in models with a ``--denoise`` range (two shipped endpoints)."""
    return [n for n in list_models() if denoise_endpoint(n)]


def create_model(name_or_path: str | Path, *, pretrained: bool = True, scale: int | None = None,
                 onnx: dict | None = None, denoise: float | None = None, **kwargs) -> LoadedModel:
    """Build a registered model (with its shipped weights when there are some) or load a checkpoint file.
    ``scale`` chooses the branch of a multi-scale checkpoint (CARN-M); other files ignore it. ``denoise``
    (0..1; default 0.5 for the models that have it) blends the two endpoints of a built-in real-photo
    model, weight by weight; for any other model it is an UnsupportedModelError."""
    from pixbatch.models import checkpoint

    name = str(name_or_path)
    zero = denoise_endpoint(name) if pretrained and not kwargs else None
    if denoise is not None and zero is None:
        raise UnsupportedModelError(f"--denoise works with the built-in models trained for it "
                                    f"({', '.join(denoisable_models())}), not {name}")
    if zero is not None:
        return checkpoint.load_blend(name, builtin_weights(name), zero, DEFAULT_DENOISE if denoise is None else denoise)
    if name.lower().endswith(".onnx"):
        from pixbatch.models.onnx_model import load_onnx

        if not Path(name).is_file():
            raise FileNotFoundError(f"no such model file: {name}")
        return load_onnx(Path(name), onnx)
    if looks_like_path(name):
        return checkpoint.load_checkpoint(Path(name), scale)
    module = build_registered(name, **kwargs)
    weights = builtin_weights(name) if pretrained and not kwargs else None
    if weights is not None:
        loaded = checkpoint.load_checkpoint(weights)
        return LoadedModel(loaded.module, ModelInfo(**{**loaded.info.as_dict(), "source": "builtin"}))
    return LoadedModel(module.eval(), describe_native(name, module, source="untrained"))
