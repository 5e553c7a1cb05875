"""The shipped default models load from the package and beat bicubic on real images."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixbatch.models import create_model
from pixbatch.tasks.defaults import UPSCALE
from tests.conftest import DATA, requires_data

DEFAULT_SR_MODELS = UPSCALE.models


def y_psnr(a: np.ndarray, b: np.ndarray, shave: int) -> float:
    def luma(x):
        x = x.astype(np.float64)
        return 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255

    d = (luma(a) - luma(b))[shave:-shave, shave:-shave]
    return 10 * np.log10(255**2 / np.mean(d**2))


@pytest.mark.parametrize("scale", sorted(DEFAULT_SR_MODELS))
def test_default_model_has_shipped_weights(scale):
    info = create_model(DEFAULT_SR_MODELS[scale]).info
    assert info.source == "builtin" and info.scale == scale
    # trained by us (its recipe) or converted from a published file (its source and licence)
    assert info.training.get("steps", 0) > 0 or (info.training["source"] and info.training["licence"].startswith("MIT"))


@requires_data
@pytest.mark.parametrize("scale", sorted(DEFAULT_SR_MODELS))
def test_default_model_beats_bicubic_on_set5(scale):
    model = create_model(DEFAULT_SR_MODELS[scale]).module
    gains = []
    for hr_path in sorted((DATA / "sr" / "set5").glob("*.png")):
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        hr = hr[: hr.shape[0] // scale * scale, : hr.shape[1] // scale * scale]
        lr = np.asarray(Image.open(DATA / "sr" / "set5" / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"))
        with torch.no_grad():
            sr = model(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255)
        sr = (sr[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        bicubic = np.asarray(Image.fromarray(lr).resize(hr.shape[1::-1], Image.BICUBIC))
        gains.append(y_psnr(sr, hr, scale) - y_psnr(bicubic, hr, scale))
    assert np.mean(gains) > 1.5, gains  # the defaults gain 3.7-4.2 dB over MATLAB bicubic (eval sr)


def test_shipped_segmentation_model_has_weights():
    from pixbatch.tasks.defaults import SEGMENT

    info = create_model(SEGMENT.model_for(None)).info
    assert info.source == "builtin" and info.task == "seg" and info.out_channels == 1
    assert info.training["steps"] > 0 and info.training["command"].startswith("pixbatch train seg")


@requires_data
def test_shipped_segmentation_model_finds_retinal_vessels(tmp_path):
    """Four DRIVE test images inside the field of view (all 20 are in the README: F1 / AUC)."""
    from pixbatch.eval.seg import evaluate_seg
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.defaults import SEGMENT

    drive = DATA / "seg" / "drive" / "test"
    subset = {k: tmp_path / k for k in ("images", "masks", "fov")}
    for k, folder in subset.items():
        folder.mkdir()
        for p in sorted((drive / k).iterdir())[:4]:
            (folder / p.name).symlink_to(p)
    runner = prepare_model(create_model(SEGMENT.model_for(None)), torch.device("cpu"), torch.float32)
    _, pooled = evaluate_seg(runner, subset["images"], subset["masks"], subset["fov"])
    assert pooled["dice"] > 0.78 and pooled["auc"] > 0.96, pooled


@requires_data
@pytest.mark.parametrize("scale", [2, 4])
def test_real_photo_models_clean_noise_and_jpeg_that_the_defaults_sharpen(scale):
    """A blurred, noisy (σ 15), JPEG-50 photo: real_x2/x4 beat bicubic, and the defaults by more (measured:
    x2 30.82 / bicubic 29.69 / rlfn_x2 28.89 dB; x4 28.43 / 27.73 / 26.98)."""
    from pixbatch.ops.imresize import imresize_uint8
    from pixbatch.train.degradations import add_gaussian_noise, filter2d, gaussian_kernel, jpeg

    hr = np.asarray(Image.open(DATA / "sr" / "set5" / "baby.png").convert("RGB"))
    x = filter2d(torch.from_numpy(hr.copy()).permute(2, 0, 1).float().div(255), gaussian_kernel(13, 1.5, 1.5))
    x = torch.nn.functional.interpolate(x[None], scale_factor=1 / scale, mode="bicubic", antialias=True)[0].clamp(0, 1)
    lr = jpeg(add_gaussian_noise(x, 15.0, False, torch.Generator().manual_seed(0)), 50)[None]

    def psnr_of(name: str) -> float:
        with torch.no_grad():
            out = create_model(name).module.eval()(lr)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        return y_psnr(out, hr, scale)

    bicubic = y_psnr(imresize_uint8((lr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), scale), hr, scale)
    real, default = psnr_of(f"real_x{scale}"), psnr_of(DEFAULT_SR_MODELS[scale])
    assert real > bicubic + 0.4 and real > default + 0.8, (real, bicubic, default)
