"""train/sr_data.py: the held-out list is exact (a missing or ambiguous name is an error, not an image
left in training), and held-out validation is `pixbatch eval sr`'s protocol."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixbatch.eval.metrics import psnr, rgb_to_y
from pixbatch.io.discover import image_paths, read_names
from pixbatch.ops.imresize import imresize_uint8
from pixbatch.train.sr_data import HeldOut, split_holdout
from tests.conftest import gradient_rgb


def test_holdout_names_leave_exactly_those_images_out(tmp_path):
    for folder, names in (("a", ["1.png", "2.png", "3.png"]), ("b", ["4.png", "5.jpg"])):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.fromarray(gradient_rgb(20, 20)).save(tmp_path / folder / name)
    (tmp_path / "list.txt").write_text("# held out\n2.png\n\n5.jpg  # a photo\n")
    assert read_names(tmp_path / "list.txt") == ["2.png", "5.jpg"]
    paths = image_paths([tmp_path / "a", tmp_path / "b"])
    train, held = split_holdout(paths, read_names(tmp_path / "list.txt"))
    assert [p.name for p in held] == ["2.png", "5.jpg"]
    assert [p.name for p in train] == ["1.png", "3.png", "4.png"]
    with pytest.raises(ValueError, match="not in --data: 6.png"):
        split_holdout(paths, ["2.png", "6.png"])
    Image.fromarray(gradient_rgb(20, 20)).save(tmp_path / "b" / "2.png")
    with pytest.raises(ValueError, match="several files in --data: 2.png"):
        split_holdout(image_paths([tmp_path / "a", tmp_path / "b"]), ["2.png"])


def test_held_out_psnr_is_the_protocol_of_eval_sr(tmp_path):
    """Odd-sized images are cropped to a multiple of the scale; bicubic's score is the figure `eval sr`
    prints for bicubic; a net that upsamples by MATLAB bicubic scores what bicubic scores."""
    paths = []
    for i, (h, w) in enumerate(((41, 50), (36, 33))):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(gradient_rgb(h, w, seed=i)).save(paths[-1])
    held = HeldOut(paths, 2)
    expected = []
    for path in paths:
        hr = np.asarray(Image.open(path).convert("RGB"))
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]
        expected.append(psnr(rgb_to_y(imresize_uint8(imresize_uint8(hr, 0.5), 2)), rgb_to_y(hr), 2))
    assert held.bicubic == pytest.approx(np.mean(expected), abs=1e-9)

    class Bicubic(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(imresize_uint8((x[0] * 255).round().permute(1, 2, 0).numpy().astype(np.uint8),
                                                   2)).permute(2, 0, 1)[None].float() / 255

    assert held.psnr_y(Bicubic(), torch.device("cpu")) == pytest.approx(held.bicubic, abs=1e-9)


def test_real_pairs_are_the_same_stream_in_a_worker_and_here():
    from pixbatch.train.sr_data import real_batches

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8, generator=g) for _ in range(3)]
    here = real_batches(images, 3, 32, 4, "real", seed=7, workers=0)
    there = real_batches(images, 3, 32, 4, "real", seed=7, workers=1)
    for _ in range(2):
        (lr_a, hr_a), (lr_b, hr_b) = next(here), next(there)
        assert lr_a.shape == (3, 3, 8, 8) and hr_a.shape == (3, 3, 32, 32)
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    other = next(real_batches(images, 3, 32, 4, "real", seed=8, workers=0))
    assert not torch.equal(other[1], hr_a)
