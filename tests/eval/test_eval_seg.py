import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.eval.seg import evaluate_seg
from pixbatch.models import LoadedModel, ModelInfo
from pixbatch.runtime.backends import openvino_precision
from pixbatch.runtime.prepare import prepare_model
from tests.conftest import DATA, requires_data, write_disk_set


class RedIsForeground(torch.nn.Module):
    """An 'oracle' whose logit is the red channel, centred: a perfect ranking of the disk images."""

    def forward(self, x):
        return (x[:, :1] - 0.5) * 40


def _runner():
    info = ModelInfo(name="oracle", arch="RedIsForeground", source="checkpoint", scale=1, in_channels=3,
                     out_channels=1, params=0, supports_fp16=True, supports_bf16=True, size_multiple=1,
                     receptive_field=0, task="seg")
    return prepare_model(LoadedModel(RedIsForeground(), info), torch.device("cpu"), torch.float32, kernels="torch")


def test_scores_of_a_perfect_and_of_a_flipped_model(tmp_path):
    images, masks = write_disk_set(tmp_path, 3, size=48)
    results, pooled = evaluate_seg(_runner(), images, masks)
    assert len(results) == 3 and pooled["auc"] > 0.999 and pooled["dice"] > 0.99
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for p in masks.iterdir():
        Image.fromarray(255 - np.asarray(Image.open(p))).save(flipped / p.name)
    _, pooled = evaluate_seg(_runner(), images, flipped)
    assert pooled["auc"] < 0.01 and pooled["dice"] < 0.05


def test_region_of_interest_limits_the_pixels(tmp_path):
    images, masks = write_disk_set(tmp_path, 2, size=48)
    roi = tmp_path / "roi"
    roi.mkdir()
    for p in masks.iterdir():  # only the left half counts; the right half's labels are destroyed
        m = np.zeros((48, 48), np.uint8)
        m[:, :24] = 255
        Image.fromarray(m).save(roi / p.name.replace("mask", "fov"))
        noisy = np.asarray(Image.open(p)).copy()
        noisy[:, 24:] = 255 - noisy[:, 24:]
        Image.fromarray(noisy).save(p)
    _, pooled = evaluate_seg(_runner(), images, masks, roi)
    assert pooled["dice"] > 0.99 and pooled["auc"] > 0.999
    _, everywhere = evaluate_seg(_runner(), images, masks)
    assert everywhere["dice"] < 0.8


def test_eval_seg_command(tmp_path, seg_checkpoint):
    images, masks = write_disk_set(tmp_path, 2, size=48)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["eval", "seg", "--model", str(seg_checkpoint), "--images", str(images),
                                      "--masks", str(masks), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["image", "dice", "iou", "accuracy", "precision", "recall", "specificity", "auc"]
    assert lines[-1].startswith("all pixels") and lines[-2].startswith("mean")
    summary = json.loads(out.read_text())
    assert [r["name"] for r in summary["per_image"]] == ["00_img", "01_img"] and 0 <= summary["pooled"]["auc"] <= 1
    result = CliRunner().invoke(cli, ["eval", "seg", "--model", str(seg_checkpoint), "--images", str(images),
                                      "--masks", str(tmp_path)])
    assert result.exit_code == 1 and "error: no mask for 2 image(s)" in result.output


@requires_data
def test_openvino_backend_keeps_drive_scores_of_the_shipped_unet():
    """What `--backend openvino` (bf16) computes scores DRIVE within 0.01 Dice of fp32 PyTorch."""
    pytest.importorskip("openvino")
    drive = DATA / "seg" / "drive" / "test"
    dice = {}
    for precision, backend in [("fp32", "torch"), ("bf16", "openvino")]:
        result = CliRunner().invoke(cli, ["--device", "cpu", "--json", "eval", "seg", "--model", "unet_drive",
                                          "--images", str(drive / "images"), "--masks", str(drive / "masks"),
                                          "--roi", str(drive / "fov"), "--precision", precision, "--backend", backend])
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        dice[backend] = summary["pooled"]["dice"]
    assert summary["backend"] == f"openvino ({openvino_precision(torch.bfloat16)})"  # f32 without native bf16
    assert dice["torch"] > 0.8 and abs(dice["openvino"] - dice["torch"]) < 0.01, dice
