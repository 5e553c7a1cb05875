"""Regenerate the golden outputs of the shipped models. Run only on purpose, after changing weights:

    python tests/golden/regenerate.py

Each file holds the fp32 output (NCHW; [0, 1] images for super-resolution, logits for segmentation)
of one shipped model on a fixed 16x16 crop of examples/coffee.png; tests/models/test_golden.py
compares against it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def golden_input() -> torch.Tensor:
    with Image.open(REPO / "examples" / "coffee.png") as im:
        arr = np.asarray(im.convert("RGB"))[40:56, 60:76]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float().div(255)


def golden_output(name: str) -> np.ndarray:
    from pixbatch.models import create_model

    model = create_model(name).module.eval()
    with torch.no_grad():
        return model(golden_input()).numpy()


def shipped_models() -> list[str]:
    from pixbatch.models import DEFAULT_SEG_MODEL, DEFAULT_SR_MODELS

    return sorted([*DEFAULT_SR_MODELS.values(), DEFAULT_SEG_MODEL])


def main() -> None:
    for name in shipped_models():
        np.save(HERE / f"{name}.npy", golden_output(name))
        print(f"wrote {HERE / name}.npy")


if __name__ == "__main__":
    main()
