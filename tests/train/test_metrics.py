import numpy as np
import pytest

from pixbatch.train.metrics import psnr, rgb_to_y, sr_metrics, ssim


def test_psnr_of_a_constant_error():
    a = np.full((8, 8), 100.0)
    assert psnr(a, a + 5) == pytest.approx(10 * np.log10(255**2 / 25))
    assert psnr(a, a) == float("inf")


def test_shave_ignores_the_border():
    a = np.zeros((10, 10))
    b = a.copy()
    b[0, :] = 255  # only the border differs
    assert psnr(a, b, shave=1) == float("inf")


def test_y_channel_of_bt601():
    assert rgb_to_y(np.array([[[0, 0, 0]]]))[0, 0] == pytest.approx(16)
    assert rgb_to_y(np.array([[[255, 255, 255]]]))[0, 0] == pytest.approx(235)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: only luminance remains
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected)
    noise = np.random.default_rng(0).uniform(0, 255, (32, 32))
    assert ssim(noise, noise) == pytest.approx(1.0)
    assert ssim(noise, 255 - noise) < 0


def test_sr_metrics_keys():
    hr = np.random.default_rng(1).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    m = sr_metrics(hr, hr, 4)
    assert set(m) == {"psnr_y", "ssim_y", "psnr_rgb"} and m["ssim_y"] == pytest.approx(1.0)
