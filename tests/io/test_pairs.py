import numpy as np
import pytest
from PIL import Image

from pixbatch.io.pairs import PairingError, load_mask, pair_folders


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / n)


def test_pairs_by_stem_then_by_id(tmp_path):
    _touch(tmp_path / "im", ["21_training.tif", "22_training.tif", "b.png"])
    _touch(tmp_path / "ma", ["21_manual1.gif", "22_manual1.gif", "b.png"])
    pairs = pair_folders(tmp_path / "im", tmp_path / "ma")
    assert [(p.image.name, p.mask.name) for p in pairs] == [
        ("21_training.tif", "21_manual1.gif"), ("22_training.tif", "22_manual1.gif"), ("b.png", "b.png")]


def test_unmatched_files_are_listed(tmp_path):
    _touch(tmp_path / "im", ["1_a.png", "2_a.png"])
    _touch(tmp_path / "ma", ["1_m.png", "3_m.png"])
    with pytest.raises(PairingError, match=r"no mask for 1 image\(s\): 2_a.png; no image for 1 mask\(s\): 3_m.png"):
        pair_folders(tmp_path / "im", tmp_path / "ma")


def test_ambiguous_ids_are_not_guessed(tmp_path):
    _touch(tmp_path / "im", ["1_a.png", "1_b.png"])
    _touch(tmp_path / "ma", ["1_m.png", "1_n.png"])
    with pytest.raises(PairingError, match="no mask for 2 image"):
        pair_folders(tmp_path / "im", tmp_path / "ma")


def test_masks_binary_and_palette(tmp_path):
    p = Image.fromarray(np.array([[0, 251], [251, 0]], np.uint8), "P")
    p.putpalette([0, 0, 0] * 251 + [255, 255, 255] * 5)
    p.save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png", binary=True).tolist() == [[0, 1], [1, 0]]
    assert load_mask(tmp_path / "m.png", binary=False).tolist() == [[0, 251], [251, 0]]
