"""Whole models with their upsamplers fused (Triton kernel; the CPU interpreter without a GPU) against
the same models unfused."""

import copy
import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.models import create_model
from pixbatch.ops.conv_pixel_shuffle import ConvPixelShuffle
from pixbatch.runtime.fuse import fuse_upsamplers
from pixbatch.runtime.prepare import prepare_model
from pixbatch.tasks.upscale import upscale_tensor
from tests.conftest import COMPACT, gradient_rgb, requires_data

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _fused_vs_unfused(loaded, x, expect_fused):
    plain = prepare_model(loaded, DEVICE, torch.float32, kernels="torch")
    fused = prepare_model(loaded, DEVICE, torch.float32, kernels="triton")
    assert plain.kernels == "torch" and fused.kernels == f"triton ({expect_fused} fused)"
    assert sum(isinstance(m, ConvPixelShuffle) for m in fused.module.modules()) == expect_fused
    a, b = upscale_tensor(plain, x), upscale_tensor(fused, x)
    assert (a - b).abs().max().item() < 1e-4


def test_our_edsr_x4_fused_equals_unfused():
    torch.manual_seed(0)
    _fused_vs_unfused(create_model("edsr_tiny_x4"), torch.rand(2, 3, 11, 9), expect_fused=2)


def test_srresnet_fuses_its_prelu():
    torch.manual_seed(0)
    loaded = create_model("srresnet_x4", pretrained=False, n_resblocks=1, n_feats=8)
    _fused_vs_unfused(loaded, torch.rand(1, 3, 7, 6), expect_fused=2)
    fused, _ = fuse_upsamplers(loaded.module)
    assert {m.act for m in fused.modules() if isinstance(m, ConvPixelShuffle)} == {"prelu"}


@requires_data
def test_foreign_compact_model_fuses_its_residual():
    loaded = create_model(COMPACT)
    fused, n = fuse_upsamplers(loaded.module)
    (layer,) = [m for m in fused.modules() if isinstance(m, ConvPixelShuffle)]
    assert n == 1 and layer.residual and layer.r == 4
    assert "interpolate" not in fused.code  # the nearest-upsampled skip now lives in the epilogue
    _fused_vs_unfused(loaded, torch.rand(1, 3, 9, 10), expect_fused=1)


def test_untraceable_model_is_left_alone():
    class Dynamic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
            self.shuffle = torch.nn.PixelShuffle(2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                return self.shuffle(self.conv(x))
            return x

    model = Dynamic()
    assert fuse_upsamplers(model) == (model, 0)


def test_cli_kernels_option(tmp_path, monkeypatch, tiny_checkpoint):
    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(10, 12)).save(src)
    runner = CliRunner()
    model = ["--model", str(tiny_checkpoint)]
    if not torch.cuda.is_available():
        # auto on the CPU: never the Triton kernel (a GPU optimisation), the CPU rewrites instead
        result = runner.invoke(cli, ["--json", "upscale", str(src), str(tmp_path / "auto"), *model])
        kernels = json.loads(result.stdout)["settings"]["kernels"]
        assert result.exit_code == 0 and kernels.startswith("cpu: ") and "triton" not in kernels
        result = runner.invoke(cli, ["--json", "upscale", str(src), str(tmp_path / "plain"), "--kernels", "torch", *model])
        assert result.exit_code == 0 and json.loads(result.stdout)["settings"]["kernels"] == "torch"
    result = runner.invoke(cli, ["--json", "upscale", str(src), str(tmp_path / "fused"), "--kernels", "triton", *model])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["kernels"] == "triton (1 fused)"
    if not torch.cuda.is_available():
        monkeypatch.delenv("TRITON_INTERPRET")
        result = runner.invoke(cli, ["upscale", str(src), str(tmp_path / "no"), "--kernels", "triton", *model])
        assert result.exit_code == 1
        assert result.stderr == "error: --kernels triton needs a CUDA GPU and triton (and PIXBATCH_TRITON not 0)\n"


def test_cli_output_identical_with_and_without_kernels(tmp_path, tiny_checkpoint):
    import numpy as np

    src = tmp_path / "a.png"
    Image.fromarray(gradient_rgb(9, 13)).save(src)
    outputs = {}
    for kernels in ("torch", "triton"):
        result = CliRunner().invoke(cli, ["upscale", str(src), str(tmp_path / kernels), "--kernels", kernels,
                                          "--model", str(tiny_checkpoint)])
        assert result.exit_code == 0, result.stderr
        outputs[kernels] = np.asarray(Image.open(tmp_path / kernels / "a.png")).astype(int)
    assert outputs["torch"].shape == (18, 26, 3)  # the tiny checkpoint is x2
    assert np.abs(outputs["torch"] - outputs["triton"]).max() <= 1  # at most one rounding step apart


def test_batch_norms_fold_into_their_convs():
    from pixbatch.runtime.fuse import fold_batch_norms

    torch.manual_seed(0)
    model = create_model("unet", pretrained=False, base=4, depth=2).module
    for m in model.modules():  # non-trivial statistics, as a trained net has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        want = model(x)
        folded = fold_batch_norms(model)
        got = model(x)
    assert folded == sum(isinstance(m, torch.nn.Identity) for m in model.modules()) > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["edsr_tiny_x4", "unet_drive", "rlfn_x4", "imdn_x2", "carn_m_x3", "unet"])
def test_cpu_rewrites_compute_the_same_function(name):
    """The default CPU preparation (batch norms folded, convs packed with their activations, upsamplers
    through the channels-last path) against the model as written, both fp32."""
    torch.manual_seed(0)
    kwargs = {"base": 4, "depth": 2} if name == "unet" else {}
    loaded = create_model(name, **kwargs)  # untrained ones get random weights: one set for both
    fast = prepare_model(copy.deepcopy(loaded), torch.device("cpu"), torch.float32)
    plain = prepare_model(loaded, torch.device("cpu"), torch.float32, kernels="torch")
    assert fast.kernels.startswith("cpu: ") and plain.kernels == "torch"
    x = torch.rand(2, 3, 21, 26)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=2e-4)
