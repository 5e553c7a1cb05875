"""What int8 calibrates and is judged on (tasks/calibration.py): the shipped set or the job's images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixbatch.io.decode import decode_rgb8
from pixbatch.models import create_model
from pixbatch.tasks import calibration
from tests.conftest import gradient_rgb


def test_the_shipped_sets_split_into_calibration_and_held_out_images():
    sr = calibration.calibration_data(create_model("edsr_tiny_x2").info)
    # 9 photos and the drawings calibrate; only photos are held out
    assert (len(sr.calibration), len(sr.held_out)) == (9 + calibration.GRAPHICS, 3) and not sr.from_input
    assert "photos shipped with pixbatch (9 calibrate, 3 held out) and 3 drawings (calibrate)" in sr.source
    np.testing.assert_allclose(sr.calibration[-1][0].transpose(1, 2, 0) * 255,
                               calibration.drawing(calibration.GRAPHICS - 1, 256), atol=1e-3)
    photos = calibration.shipped_images("sr")
    assert len(photos) == 12 and all(decode_rgb8(p).shape == (256, 256, 3) for p in photos)
    # every fourth image held out; each as it is, in [0, 1]
    np.testing.assert_allclose(sr.held_out[0][0].transpose(1, 2, 0) * 255, decode_rgb8(photos[3]), atol=1e-3)
    np.testing.assert_allclose(sr.calibration[3][0].transpose(1, 2, 0) * 255, decode_rgb8(photos[4]), atol=1e-3)
    assert sr.calibration[0].shape == (1, 3, 256, 256) and sr.calibration[0].dtype == np.float32
    seg = calibration.calibration_data(create_model("unet_drive").info)
    assert (len(seg.calibration), len(seg.held_out)) == (6, 2)
    assert seg.calibration[0].shape == (1, 3, 160, 160) and "fundus" in seg.source


def test_drawings_are_the_same_each_run_and_have_what_the_photos_lack():
    a, b = calibration.drawing(0, 128), calibration.drawing(0, 128)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, calibration.drawing(1, 128))
    # saturated colours: a large share of pixels far from grey (0.59 of the three), unlike the shipped photos'
    # (0.21 at most)
    chroma = lambda img: ((img.max(axis=2).astype(int) - img.min(axis=2)) > 150).mean()  # noqa: E731
    assert np.mean([chroma(calibration.drawing(seed, 128)) for seed in range(calibration.GRAPHICS)]) > 0.4
    assert max(chroma(decode_rgb8(p)) for p in calibration.shipped_images("sr")) < 0.25
    # hard edges: neighbouring pixels often differ by most of the range
    assert (np.abs(np.diff(a.astype(int), axis=1)).max(axis=2) > 128).mean() > 0.005


def test_the_job_images_come_without_drawings(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(gradient_rgb(64, 64, seed=i)).save(paths[-1])
    data = calibration.calibration_data(create_model("edsr_tiny_x2").info, paths)
    assert len(data.calibration) == 2 and "drawings" not in data.source


def test_calibrating_on_the_job_uses_its_images_and_skips_unreadable_ones(tmp_path):
    paths = []
    for i, size in enumerate([(300, 200), (90, 120), (64, 64), (257, 300), (70, 70)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(gradient_rgb(*size, seed=i)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(1, tmp_path / "bad.png")
    info = create_model("edsr_tiny_x2").info
    data = calibration.calibration_data(info, paths)
    assert data.from_input and data.source.startswith("5 of your images (4 calibrate, 1 held out)")
    # centre crops of at most 256 px
    assert [x.shape[2:] for x in data.calibration] == [(256, 200), (90, 120), (64, 64), (70, 70)]
    np.testing.assert_allclose(data.calibration[0][0].transpose(1, 2, 0) * 255,
                               gradient_rgb(300, 200, seed=0)[22:278], atol=1e-3)
    assert data.held_out[0].shape == (1, 3, 256, 256)
    with pytest.raises(ValueError, match="at least two readable images"):
        calibration.calibration_data(info, [paths[0], tmp_path / "bad.png"])


def test_style_models_calibrate_also_and_are_judged_only_on_enlarged_photos():
    style = calibration.calibration_data(create_model("johnson_style").info)
    k = calibration.STYLE_ENLARGE
    photos = calibration.shipped_images("style")
    # 9 photos as they are, the same 9 enlarged, then the drawings; the 3 held out enlarged only
    assert (len(style.calibration), len(style.held_out)) == (18 + calibration.GRAPHICS, 3)
    assert [x.shape[2] for x in style.calibration] == [256] * 9 + [256 * k] * 9 + [256] * calibration.GRAPHICS
    assert all(x.shape[2:] == (256 * k, 256 * k) for x in style.held_out)
    # the fourth photo enlarged: within a level of Pillow's bicubic enlargement of it (the same kernel, other edges)
    photo = decode_rgb8(photos[3])
    pillow = np.asarray(Image.fromarray(photo).resize((photo.shape[1] * k, photo.shape[0] * k), Image.BICUBIC))
    assert np.abs(style.held_out[0][0].transpose(1, 2, 0) * 255 - pillow).mean() < 0.5
    assert style.source.endswith(f"judged at {k}x their size")
