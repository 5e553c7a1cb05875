"""Checkpoint files: ours (safetensors + config in the metadata) and foreign ones (via spandrel).

Nothing here unpickles arbitrary objects: safetensors, or ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from pixbatch.models._registry import UnsupportedModelError, build_registered
from pixbatch.models.info import LoadedModel, ModelInfo, describe_native
from pixbatch.models.recognisers import RECOGNISERS

METADATA_KEY = "pixbatch.config"


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
    """Tensors and string metadata of a checkpoint, loaded without unpickling code. Any file that is
    not one is an UnsupportedModelError with a one-line reason, never a library's traceback."""
    if path.is_dir() and (path / "manifest.json").is_file():
        return read_variables_folder(path), {}
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UnsupportedModelError(f"{path}: empty file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except Exception as exc:  # bad header, offsets or dtypes; a truncated body
            raise UnsupportedModelError(f"{path}: not a valid safetensors file ({_first_line(exc)})") from None
        return tensors, metadata
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it, a TorchScript archive, or not a checkpoint
        raise UnsupportedModelError(
            f"{path}: cannot be read as plain weights ({type(exc).__name__}); pixbatch only loads "
            "safetensors or state dicts that torch.load(weights_only=True) accepts"
        ) from None
    if not isinstance(obj, dict):
        raise UnsupportedModelError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj, {}


MAX_FOLDER_BYTES = 1 << 31  # a variables folder larger than this is not a checkpoint pixbatch can run


def read_variables_folder(path: Path) -> dict[str, torch.Tensor]:
    """A TensorFlow.js / deeplearn.js variables export: ``manifest.json`` maps each variable to a file
    of raw little-endian float32 in the listed shape (C order). Checked before anything is read: file
    names stay inside the folder and every file holds exactly its shape's bytes."""
    import numpy as np

    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"{path}: manifest.json is not readable JSON ({_first_line(exc)})") from None
    if not isinstance(manifest, dict) or not manifest:
        raise UnsupportedModelError(f"{path}: manifest.json does not list variables")
    entries, total = [], 0
    for name, entry in manifest.items():
        filename = entry.get("filename") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(filename, str) or Path(filename).name != filename or filename in ("", ".", "..")
                or not isinstance(shape, list) or not all(isinstance(d, int) and 0 <= d < 1 << 24 for d in shape)):
            raise UnsupportedModelError(f"{path}: manifest.json entry {name!r} needs a file name in the folder "
                                        "and a shape")
        count = math.prod(shape)
        file = path / filename
        size = file.stat().st_size if file.is_file() else -1
        if size != 4 * count:
            found = "missing" if size < 0 else f"{size} bytes"
            raise UnsupportedModelError(f"{path}: variable {name!r} should be {4 * count} bytes of float32 "
                                        f"({'x'.join(map(str, shape))}), its file {filename} is {found}")
        total += size
        entries.append((name, file, shape))
    if total > MAX_FOLDER_BYTES:
        raise UnsupportedModelError(f"{path}: {total / 1e9:.1f} GB of variables; not a model pixbatch runs")
    return {name: torch.from_numpy(np.fromfile(file, dtype="<f4").reshape(shape).copy()) for name, file, shape in entries}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _config(path: Path, raw: str) -> tuple[str, dict, dict | None]:
    """(registered name, kwargs, training) from our metadata, checked for shape."""
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise UnsupportedModelError(f"{path}: its {METADATA_KEY} metadata is not JSON ({exc})") from None
    name = config.get("name") if isinstance(config, dict) else None
    kwargs = config.get("kwargs", {}) if isinstance(config, dict) else None
    training = config.get("training") if isinstance(config, dict) else None
    simple = (int, float, str, bool, type(None), list)
    if (not isinstance(name, str) or not isinstance(kwargs, dict)
            or not all(isinstance(k, str) and isinstance(v, simple) for k, v in kwargs.items())):
        raise UnsupportedModelError(f"{path}: its {METADATA_KEY} metadata does not name an architecture and "
                                    "its arguments")
    return name, kwargs, training if isinstance(training, dict) else None


def build_checked(name: str, kwargs: dict, tensors: dict, path: Path) -> nn.Module:
    """Build ``name(**kwargs)`` and load ``tensors`` into it, strictly. The architecture is built on
    the meta device first and compared with the file's keys and shapes, so arguments from a file
    (``n_feats=200000``) never allocate anything that the file does not hold itself."""
    try:
        with torch.device("meta"):
            skeleton = build_registered(name, **kwargs)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # unknown name, arguments the builder rejects
        raise UnsupportedModelError(f"{path}: cannot build {name} from its stored arguments "
                                    f"({_first_line(exc)})") from None
    expected = skeleton.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [k for k in expected if k in tensors and (not isinstance(tensors[k], torch.Tensor)
                                                      or tuple(tensors[k].shape) != tuple(expected[k].shape))]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise UnsupportedModelError(f"{path}: its tensors do not fit {name}: {', '.join(parts)}")
    module = build_registered(name, **kwargs)
    module.load_state_dict(tensors, strict=True)
    return module


def check_finite(module: nn.Module, path: Path) -> None:
    """Weights that hold NaN or Inf can only produce NaN/black images: refuse them at load."""
    bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UnsupportedModelError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf values (e.g. {bad[0]}); "
                                    "the checkpoint is damaged")


def load_checkpoint(path: Path, scale: int | None = None) -> LoadedModel:
    """Load any checkpoint; ``scale`` picks the branch of multi-scale models (CARN-M; default 4).
    Every problem with the file is an UnsupportedModelError (or FileNotFoundError) with one line."""
    try:
        return _load_checkpoint(path, scale)
    except (UnsupportedModelError, FileNotFoundError):
        raise
    except MemoryError:
        raise UnsupportedModelError(f"{path}: not enough memory to load it") from None
    except Exception as exc:  # whatever else a hostile file makes a library do: one line, not a traceback
        raise UnsupportedModelError(f"{path}: cannot be loaded ({type(exc).__name__}: {_first_line(exc)})") from None


def _load_checkpoint(path: Path, scale: int | None) -> LoadedModel:
    tensors, metadata = read_state_dict(path)
    if METADATA_KEY in metadata:
        name, kwargs, training = _config(path, metadata[METADATA_KEY])
        module = build_checked(name, kwargs, tensors, path)
        info = describe_native(name, module, source="checkpoint", path=str(path), training=training,
                               builder={"name": name, "kwargs": kwargs})
    elif (native := _recognise_native(tensors, scale)) is not None:
        # A published architecture we implement ourselves, with its original keys.
        name, kwargs, tensors = native
        module = build_checked(name, kwargs, tensors, path)
        info = describe_native(path.name, module, source="foreign", path=str(path), recognised_by="pixbatch",
                               builder={"name": name, "kwargs": kwargs})
    else:
        from pixbatch.models.foreign.spandrel_loader import load_foreign

        loaded = load_foreign(tensors, path)
        module, info = loaded.module, loaded.info
    check_finite(module, path)
    return LoadedModel(module.eval(), info)


WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")  # first one present wins


def _recognise_native(tensors: dict, scale: int | None = None) -> tuple[str, dict, dict] | None:
    """Published architectures implemented here (tried in models/recognisers.py's order), from their
    keys and shapes; DataParallel's ``module.`` prefix is allowed, and so are the wrappers training
    frameworks save (BasicSR's ``params_ema``, preferred as its test scripts do, or ``params``)."""
    for wrapper in WRAPPER_KEYS:
        inner = tensors.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            tensors = inner
            break
    for prefix in ("", "module."):
        stripped = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if len(stripped) != len(tensors):
            continue
        for _, recognise in RECOGNISERS:
            found = recognise(stripped, scale)
            if found is not None:  # a recogniser may hand back the tensors renamed to our layout
                return found[0], found[1], found[2] if len(found) > 2 else stripped
    return None


def load_blend(name: str, one: Path, zero: Path, t: float) -> LoadedModel:
    """A built-in model whose weights are ``t`` x those of ``one`` + (1 - t) x those of ``zero`` (two
    trainings of one architecture from one start: the network interpolation of ``--denoise``)."""
    if not 0 <= t <= 1:
        raise UnsupportedModelError(f"--denoise must be between 0 and 1, not {t}")
    loaded = load_checkpoint(one)
    other, _ = read_state_dict(zero)
    own = loaded.module.state_dict()
    if set(other) != set(own) or any(other[k].shape != v.shape for k, v in own.items()):
        raise UnsupportedModelError(f"{zero}: its tensors do not match those of {one}")
    loaded.module.load_state_dict({k: torch.lerp(other[k].to(v.dtype), v, t) if v.is_floating_point() else v
                                   for k, v in own.items()})
    info = {**loaded.info.as_dict(), "name": name, "source": "builtin", "denoise": t}
    return LoadedModel(loaded.module, ModelInfo(**info))
