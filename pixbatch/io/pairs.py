"""Image/mask pairs (segmentation training and evaluation): pairing folders by file stem, and loading
images (through the one decoder) and masks (raw: their values are class labels)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixbatch.io.discover import IMAGE_SUFFIXES


class PairingError(ValueError):
    """Images and masks that cannot be matched one to one."""


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    mask: Path | None
    roi: Path | None = None


def _files(folder: Path) -> list[Path]:
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _key(stem: str) -> str:
    """The id part of a stem: up to the first '_' or '-' ("21_training" and "21_manual1" -> "21")."""
    return re.split(r"[_\-]", stem, maxsplit=1)[0]


def _match(images: list[Path], others: list[Path], what: str) -> dict[Path, Path]:
    """Match by exact stem; files left over are matched by their id part when that is unambiguous."""
    by_stem = {p.stem: p for p in others}
    matched = {im: by_stem[im.stem] for im in images if im.stem in by_stem}
    rest_img = [im for im in images if im not in matched]
    rest_oth = [p for p in others if p not in matched.values()]
    keys_img = [_key(p.stem) for p in rest_img]
    keys_oth = [_key(p.stem) for p in rest_oth]
    for im, k in zip(rest_img, keys_img):
        if keys_img.count(k) == 1 and keys_oth.count(k) == 1:
            matched[im] = rest_oth[keys_oth.index(k)]
    missing = [im.name for im in images if im not in matched]
    extra = sorted(p.name for p in set(others) - set(matched.values()))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no {what} for {len(missing)} image(s): {', '.join(missing[:5])}")
        if extra:
            parts.append(f"no image for {len(extra)} {what}(s): {', '.join(extra[:5])}")
        raise PairingError("; ".join(parts) + " (files are paired by stem, or by the part before the first '_')")
    return matched


def pair_folders(images: Path, masks: Path | None, roi: Path | None = None) -> list[Pair]:
    imgs = _files(images)
    if not imgs:
        raise PairingError(f"no images in {images}")
    mask_of = _match(imgs, _files(masks), "mask") if masks is not None else {}
    roi_of = _match(imgs, _files(roi), "region-of-interest mask") if roi is not None else {}
    return [Pair(p.stem, p, mask_of.get(p), roi_of.get(p)) for p in imgs]


def load_image(path: Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]; gray is repeated, alpha dropped, 16-bit kept at full precision."""
    from pixbatch.io.decode import DEFAULT_MAX_PIXELS, decode_image

    arr, meta = decode_image(path, max_pixels=DEFAULT_MAX_PIXELS)
    x = torch.from_numpy(arr.astype(np.float32) / (255.0 if meta.bits == 8 else 65535.0)).permute(2, 0, 1)
    x = x[:-1] if meta.has_alpha else x
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def load_mask(path: Path, binary: bool) -> torch.Tensor:
    """(H, W) int64. Binary: any gray level > 127 is 1. Multi-class: palette indices or gray values."""
    import warnings

    from PIL import Image

    from pixbatch.io.decode import DecodeError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if binary:
                    arr = np.asarray(im.convert("L")) > 127
                elif im.mode == "P":
                    arr = np.asarray(im)
                else:
                    arr = np.asarray(im.convert("L"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"cannot read the mask ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr.astype(np.int64))
