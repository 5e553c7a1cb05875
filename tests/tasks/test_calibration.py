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
    assert (len(sr.calibration), len(sr.held_out)) == (9, 3) and not sr.from_input
    assert "photos shipped with pixbatch" in sr.source
    photos = calibration.shipped_images("sr")
    assert len(photos) == 12 and all(decode_rgb8(p).shape == (256, 256, 3) for p in photos)
    # every fourth image held out; each as it is, in [0, 1]
    np.testing.assert_allclose(sr.held_out[0][0].transpose(1, 2, 0) * 255, decode_rgb8(photos[3]), atol=1e-3)
    np.testing.assert_allclose(sr.calibration[3][0].transpose(1, 2, 0) * 255, decode_rgb8(photos[4]), atol=1e-3)
    assert sr.calibration[0].shape == (1, 3, 256, 256) and sr.calibration[0].dtype == np.float32
    seg = calibration.calibration_data(create_model("unet_drive").info)
    assert (len(seg.calibration), len(seg.held_out)) == (6, 2)
    assert seg.calibration[0].shape == (1, 3, 160, 160) and "fundus" in seg.source


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
