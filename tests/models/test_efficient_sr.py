"""The efficient x4 architectures pixbatch implements (BSRN, RLFN, SAFMN, SAFMN++, SMFAN, SPAN): each
published checkpoint of the shared data is recognised from its keys and shapes, loads strictly, and
produces its pinned output; the one Set5 number published for one of these files is reproduced."""

import numpy as np
import pytest
import torch

from pixbatch.models import build_registered, create_model
from pixbatch.models.foreign.spandrel_loader import probe_receptive_field
from tests.conftest import DATA, requires_data
from tests.golden.regenerate import EFFICIENT_SR, efficient_checkpoints, efficient_golden, golden_output

# file -> (architecture, registered builder, parameters): what the published sources say each file is
EXPECTED = {
    "net_g_BSRN_x4": ("BSRN", "bsrn_x4", 352_400),
    "team00_rlfn": ("RLFN", "rlfn_x4", 317_218),
    "team04_rlfn": ("RLFN", "rlfn_x4", 317_218),
    "team15_SAFMN": ("SAFMN", "safmn_ntire_x4", 237_000),
    "team18_bsrn": ("BSRN", "bsrn_x4", 156_288),
    "team23_safmnpp": ("SAFMNPP", "safmnpp_x4", 211_572),
    "team24_smfan": ("SMFAN", "smfan_x4", 84_408),
    "team38_span_ch28_slim": ("SPAN", "span_x4", 150_688),
    "team39_spantiny_ch26_slim": ("SPAN", "span_x4", 130_828),
}
TOLERANCE = 1e-4  # as the shipped models' goldens


@requires_data
def test_every_efficient_checkpoint_is_listed():
    assert sorted(p.stem for p in efficient_checkpoints()) == sorted(EXPECTED)


@requires_data
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_efficient_checkpoint_is_recognised_and_matches_its_golden_output(stem):
    path = EFFICIENT_SR / f"{stem}.pth"
    info = create_model(path).info
    arch, builder, params = EXPECTED[stem]
    assert (info.arch, info.builder["name"], info.params, info.scale) == (arch, builder, params, 4)
    assert info.recognised_by == "pixbatch"
    expected = np.load(efficient_golden(path))
    got = golden_output(str(path))
    assert got.shape == expected.shape == (1, 3, 64, 64)
    assert np.abs(got - expected).max() <= TOLERANCE


@requires_data
def test_bsrn_reproduces_its_published_set5_score():
    """The BSRN paper (Li et al. 2022, Table 1): Set5 x4 32.35 dB / 0.8966 (Y, 4 px shaved)."""
    from pixbatch.eval.sr import evaluate_sr, mean_metrics
    from pixbatch.runtime.prepare import prepare_model

    runner = prepare_model(create_model(EFFICIENT_SR / "net_g_BSRN_x4.pth"), torch.device("cpu"), torch.float32,
                           channels_last=False, kernels="torch")
    m = mean_metrics([r.model for r in evaluate_sr(runner, DATA / "sr" / "set5", DATA / "sr" / "set5" / "LR_bicubic" / "X4")])
    assert abs(m["psnr_y"] - 32.35) <= 0.05 and abs(m["ssim_y"] - 0.8966) <= 0.001


def test_span_receptive_field_is_what_it_declares():
    torch.manual_seed(0)
    model = build_registered("span_x4", feature_channels=4).eval()
    assert probe_receptive_field(model, 4) == model.receptive_field == 21


@pytest.mark.parametrize("name", ["rlfn_x4", "bsrn_x4", "safmn_ntire_x4", "safmnpp_x4", "smfan_x4"])
def test_pooling_attention_runs_below_its_minimum_size_through_the_runner(name):
    """An image smaller than the pooling window (6x5 px) is padded up to ``min_size`` and cropped back."""
    from pixbatch.models import LoadedModel
    from pixbatch.models.info import describe_native
    from pixbatch.runtime.prepare import prepare_model

    module = build_registered(name).eval()
    loaded = LoadedModel(module, describe_native(name, module, source="untrained"))
    assert loaded.info.min_size > 6
    y = prepare_model(loaded, torch.device("cpu"), torch.float32)(torch.rand(1, 3, 6, 5))
    assert y.shape == (1, 3, 24, 20) and torch.isfinite(y).all()
