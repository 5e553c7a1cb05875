"""`pixbatch eval seg` on a multi-class model: the confusion matrix over all pixels, per-class scores
and their means, the ignore label, class names and the confusion-matrix picture."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.eval.metrics import class_scores, confusion_matrix
from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.tasks.segment import predict_logits
from tests.conftest import gradient_rgb


def test_multiclass_eval_matches_a_confusion_matrix_counted_here(tmp_path, seg3_checkpoint):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(3):
        Image.fromarray(gradient_rgb(40, 48, seed=i)).save(images / f"{i}.png")
        mask = rng.integers(0, 2, (40, 48)).astype(np.uint8)  # classes 0 and 1 only: 2 never in the truth
        mask[:4] = 255  # the void label
        Image.fromarray(mask).save(masks / f"{i}.png")
        truth[i] = mask
    result = CliRunner().invoke(cli, ["--json", "eval", "seg", "--model", str(seg3_checkpoint), "--images", str(images),
                                      "--masks", str(masks), "--ignore-index", "255", "--class-names",
                                      "road,car,sky", "--plot", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    runner = prepare_model(create_model(seg3_checkpoint), torch.device("cpu"), torch.float32)
    expected = np.zeros((3, 3), np.int64)
    for i, mask in truth.items():
        pixels = np.asarray(Image.open(images / f"{i}.png").convert("RGB"))
        pred = predict_logits(runner, pixels).argmax(0).numpy()
        expected += confusion_matrix(pred, mask, 3, ignore_index=255)
    pooled = summary["pooled"]
    assert pooled["confusion_matrix"] == expected.tolist() and expected.sum() == 3 * 36 * 48
    scores = class_scores(expected)
    assert pooled["miou"] == scores["miou"] and pooled["global_accuracy"] == scores["global_accuracy"]
    assert pooled["iou"][2] != pooled["iou"][2]  # NaN: "sky" has no ground-truth pixel, no IoU (not 0)
    assert summary["class_names"] == ["road", "car", "sky"] and summary["ignore_index"] == 255
    with Image.open(tmp_path / "cm.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    table = CliRunner().invoke(cli, ["eval", "seg", "--model", str(seg3_checkpoint), "--images", str(images),
                                     "--masks", str(masks), "--ignore-index", "255", "--class-names", "road,car,sky"])
    assert table.exit_code == 0 and "mIoU" in table.stdout and "sky" in table.stdout
    assert f"{pooled['miou']:.4f}" in table.stdout
