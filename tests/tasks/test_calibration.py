"""What int8 calibrates and is judged on (tasks/calibration.py): the shipped set or the job's images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixbatch.io.decode import decode_rgb8
from pixbatch.models import create_model
from pixbatch.ops.imresize import imresize_uint8
from pixbatch.tasks import calibration
from tests.conftest import gradient_rgb


def test_the_shipped_sets_split_into_calibration_and_held_out_images():
    sr = calibration.calibration_data(create_model("edsr_tiny_x2").info)
    assert (len(sr.calibration), len(sr.held_out)) == (9, 3) and not sr.from_input
    assert "photos shipped with pixbatch" in sr.source
    photos = calibration.shipped_images("sr")
    assert len(photos) == 12 and all(decode_rgb8(p).shape == (256, 256, 3) for p in photos)
    # super-resolution: each held-out crop is the reference, its MATLAB bicubic downscale the input
    first_held = decode_rgb8(photos[3])
    np.testing.assert_array_equal(sr.targets[0], first_held)
    np.testing.assert_allclose(sr.held_out[0][0].transpose(1, 2, 0) * 255, imresize_uint8(first_held, 0.5), atol=1e-3)
    assert sr.calibration[0].shape == (1, 3, 128, 128) and sr.calibration[0].dtype == np.float32
    seg = calibration.calibration_data(create_model("unet_drive").info)
    assert (len(seg.calibration), len(seg.held_out)) == (6, 2) and seg.targets == [None, None]
    assert seg.calibration[0].shape == (1, 3, 160, 160) and "fundus" in seg.source


def test_calibrating_on_the_job_uses_its_images_as_they_are_and_skips_unreadable_ones(tmp_path):
    paths = []
    for i, size in enumerate([(300, 200), (90, 120), (64, 64), (257, 300), (70, 70)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(gradient_rgb(*size, seed=i)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(1, tmp_path / "bad.png")
    info = create_model("edsr_tiny_x2").info
    data = calibration.calibration_data(info, paths)
    assert data.from_input and data.source.startswith("5 of your images (4 calibrate, 1 held out)")
    # centre crops of at most 256 px, cut to the sizes the model takes; calibrated as they are (not downscaled)
    assert [x.shape[2:] for x in data.calibration] == [(256, 200), (90, 120), (64, 64), (70, 70)]
    np.testing.assert_allclose(data.calibration[0][0].transpose(1, 2, 0) * 255,
                               gradient_rgb(300, 200, seed=0)[22:278], atol=1e-3)
    assert data.targets[0].shape == (256, 256, 3) and data.held_out[0].shape == (1, 3, 128, 128)
    with pytest.raises(ValueError, match="at least two readable images"):
        calibration.calibration_data(info, [paths[0], tmp_path / "bad.png"])
