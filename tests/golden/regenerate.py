"""Regenerate the golden outputs of the shipped models. Run only on purpose, after changing weights:

    python tests/golden/regenerate.py

Each file holds the fp32 output (NCHW; [0, 1] images for super-resolution, logits for segmentation)
of one shipped model on a fixed 16x16 crop of examples/coffee.png; tests/models/test_golden.py
compares against it. With ``--efficient``: the outputs of the efficient x4 checkpoints of the shared
data (weights/efficient_sr) on the same crop (tests/models/test_efficient_sr.py). With ``--style``: the outputs of Engstrom's udnie and wave nets (shared data) on
a 64x64 crop of the style content photo (tests/models/test_style_nets.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = GOLDEN = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED_DATA = Path(os.environ.get("PIXBATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
STYLE_CONTENT = SHARED_DATA / "style" / "content" / "amber.jpg"
EFFICIENT_SR = SHARED_DATA / "weights" / "efficient_sr"
SAME_TENSORS = {"team04_rlfn": "team00_rlfn"}  # the 2022 release of the same RLFN weights, other key names


def golden_input() -> torch.Tensor:
    with Image.open(REPO / "examples" / "coffee.png") as im:
        arr = np.asarray(im.convert("RGB"))[40:56, 60:76]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255)


def golden_output(name: str) -> np.ndarray:
    from pixbatch.models import create_model

    model = create_model(name).module.eval()
    with torch.no_grad():
        return model(golden_input()).numpy()


def style_golden_input() -> torch.Tensor:
    """A 64x64 crop of the style examples' content photo, shrunk 4x (shared data)."""
    with Image.open(STYLE_CONTENT) as im:
        arr = np.asarray(im.convert("RGB").resize((270, 270), Image.BICUBIC))[100:164, 100:164]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255)


def style_golden_output(path: Path) -> np.ndarray:
    from pixbatch.models import create_model

    model = create_model(path).module.eval()
    with torch.no_grad():
        return model(style_golden_input()).numpy()


def shipped_models() -> list[str]:
    """Every registered model whose weights ship with the package."""
    from pixbatch.models import builtin_weights, list_models

    return [name for name in list_models() if builtin_weights(name) is not None]


def efficient_checkpoints() -> list[Path]:
    """The efficient x4 checkpoints of the shared data (none when it is absent)."""
    return sorted(EFFICIENT_SR.glob("*.pth")) if EFFICIENT_SR.is_dir() else []


def efficient_golden(path: Path) -> Path:
    return HERE / f"efficient_{SAME_TENSORS.get(path.stem, path.stem)}.npy"


def main() -> None:
    if "--style" in sys.argv:  # Engstrom's weights from the shared data (not shipped: research use only)
        for style in ("udnie", "wave"):
            folder = SHARED_DATA / "style_weights" / "ml5_lengstrom" / style
            np.save(HERE / f"engstrom_{style}.npy", style_golden_output(folder))
            print(f"wrote {HERE / f'engstrom_{style}.npy'}")
        return
    if "--efficient" in sys.argv:
        for path in efficient_checkpoints():
            if path.stem not in SAME_TENSORS:
                np.save(efficient_golden(path), golden_output(str(path)))
                print(f"wrote {efficient_golden(path)}")
        return
    for name in shipped_models():
        np.save(HERE / f"{name}.npy", golden_output(name))
        print(f"wrote {HERE / name}.npy")


if __name__ == "__main__":
    main()
