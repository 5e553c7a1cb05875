import pytest
import torch
from click.testing import CliRunner

from pixbatch.cli import cli
from pixbatch.models import create_model
from tests.conftest import write_disk_set

ARGS = ["--arch", "unet", "--model-kwargs", '{"base": 4, "depth": 2}', "--steps", "6", "--batch-size", "2",
        "--val-every", "3", "--val-fraction", "0.25", "--no-amp", "--threads", "1"]


@pytest.mark.slow
def test_train_a_few_steps_then_segment(tmp_path):
    images, masks = write_disk_set(tmp_path / "data", 4)
    out = tmp_path / "m.safetensors"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", "seg", "--images", str(images), "--masks", str(masks), "--size", "32,64",
                                 *ARGS, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "validation Dice" in result.output
    tuned = tmp_path / "tuned.safetensors"
    result = runner.invoke(cli, ["train", "seg", "--images", str(images), "--masks", str(masks), "--size", "32",
                                 *ARGS, "--tune-threshold", "--out", str(tuned)])
    assert result.exit_code == 0, result.output
    recipe = create_model(tuned).info.training
    assert 0.2 <= recipe["threshold"] <= 0.8 and recipe["val_dice_at_threshold"] >= 0
    loaded = create_model(out)
    recipe = loaded.info.training
    assert loaded.info.task == "seg" and recipe["sizes"] == [32, 64] and recipe["train_images"] == 3
    assert recipe["val_images"] and 0 <= recipe["val_dice"] <= 1 and recipe["command"].startswith("pixbatch train seg")
    assert recipe["threshold"] == 0.5
    result = runner.invoke(cli, ["segment", str(images), str(tmp_path / "masks_out"), "--model", str(out)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "masks_out").glob("*.png"))) == 4


@pytest.mark.slow
def test_seeded_training_is_reproducible_on_cpu(tmp_path):
    images, masks = write_disk_set(tmp_path / "data", 3)
    runner = CliRunner()
    weights = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        result = runner.invoke(cli, ["train", "seg", "--images", str(images), "--masks", str(masks), "--size", "32",
                                     *ARGS, "--seed", "3", "--out", str(out)])
        assert result.exit_code == 0, result.output
        weights.append(create_model(out).module.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)


def test_training_errors_are_clear(tmp_path):
    images, masks = write_disk_set(tmp_path / "data", 2)
    (masks / "01_mask.png").unlink()
    runner = CliRunner()
    base = ["train", "seg", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.safetensors")]
    result = runner.invoke(cli, base)
    assert result.exit_code == 1 and "error: no mask for 1 image(s): 01_img.png" in result.output
    result = runner.invoke(cli, base + ["--loss", "bce+iou"])
    assert result.exit_code == 1 and "unknown loss 'bce+iou'" in result.output
    result = runner.invoke(cli, base + ["--arch", "edsr_tiny_x2"])
    assert result.exit_code == 1 and "unknown segmentation model 'edsr_tiny_x2'" in result.output
    result = runner.invoke(cli, base + ["--size", "8"])
    assert result.exit_code == 2 and "crop sizes of at least 16 px" in result.output


@pytest.mark.slow
def test_resume_continues_exactly_with_the_best_weights(tmp_path, monkeypatch):
    """train seg shares the training loop with train sr: an interrupted run resumed from its state
    ends where an uninterrupted one ends, best-validation weights included."""
    from safetensors.torch import load_file

    import pixbatch.models.checkpoint as ckpt

    images, masks = write_disk_set(tmp_path / "data", 4)
    common = ["train", "seg", "--images", str(images), "--masks", str(masks), "--size", "32", *ARGS,
              "--save-every", "3"]
    runner = CliRunner()
    full = tmp_path / "full.safetensors"
    assert runner.invoke(cli, [*common, "--out", str(full)]).exit_code == 0
    part = tmp_path / "part.safetensors"
    # interrupt right after the step-3 state is written: the final save fails
    monkeypatch.setattr(ckpt, "save_checkpoint", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    result = runner.invoke(cli, [*common, "--out", str(part)])
    monkeypatch.undo()
    assert result.exit_code != 0 and not part.exists()  # stopped before the final checkpoint
    state = torch.load(tmp_path / "part.safetensors.state", weights_only=True)
    assert state["step"] == 3 and state["extra"]["best"]["step"] == 3
    result = runner.invoke(cli, [*common, "--resume", "--out", str(part)])
    assert result.exit_code == 0, result.output
    a, b = load_file(full), load_file(part)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert create_model(part).info.training["best_step"] == create_model(full).info.training["best_step"]
    assert not (tmp_path / "part.safetensors.state").exists()


def test_multiclass_training_balances_classes_keeps_names_and_validates_by_miou(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from pixbatch.eval.metrics import median_frequency_weights

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    counts, seen = np.zeros(3), np.zeros(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[:, 16:] = 1
        if i % 2:
            mask[8:12, 8:12] = 2  # a rare class, in half of the images
        mask[0] = 255  # void
        Image.fromarray(mask).save(masks / f"{i}.png")
    out = tmp_path / "m.safetensors"
    result = CliRunner().invoke(cli, [
        "train", "seg", "--images", str(images), "--masks", str(masks), "--arch", "unet_small", "--model-kwargs",
        '{"base": 4, "depth": 2}', "--classes", "3", "--ignore-index", "255", "--loss", "ce", "--class-weights",
        "auto", "--class-names", "ground,wall,door", "--size", "32", "--steps", "2", "--batch-size", "1",
        "--val-fraction", "0.5", "--val-every", "1", "--out", str(out), "--no-amp"])
    assert result.exit_code == 0, result.output
    assert "validation mIoU" in result.stdout
    recipe = create_model(out).info.training
    assert recipe["val_metric"] == "mIoU" and recipe["class_names"] == ["ground", "wall", "door"]
    assert recipe["ignore_index"] == 255 and len(recipe["class_weights_used"]) == 3
    train_names = set(recipe["val_images"])
    for i in range(4):  # the weights come from the training masks only
        if str(i) in train_names or f"{i}.png" in train_names:
            continue
        m = np.array(Image.open(masks / f"{i}.png"))
        m = m[m != 255]
        n = np.bincount(m, minlength=3)
        counts += n
        seen += n > 0
    np.testing.assert_allclose(recipe["class_weights_used"], median_frequency_weights(counts, seen), atol=1e-4)
    # eval takes the ignore label and the names from the checkpoint
    evaluation = CliRunner().invoke(cli, ["--json", "eval", "seg", "--model", str(out), "--images", str(images),
                                          "--masks", str(masks)])
    summary = json.loads(evaluation.stdout)
    assert summary["ignore_index"] == 255 and summary["class_names"] == ["ground", "wall", "door"]
    assert sum(map(sum, summary["pooled"]["confusion_matrix"])) == 4 * 31 * 32


def test_class_weights_need_a_multiclass_model_and_one_per_class(tmp_path):
    images, masks = write_disk_set(tmp_path / "d", 2, size=32)
    base = ["train", "seg", "--images", str(images), "--masks", str(masks), "--arch", "unet_small", "--size", "32",
            "--steps", "1", "--out", str(tmp_path / "m.safetensors")]
    result = CliRunner().invoke(cli, [*base, "--class-weights", "auto"])
    assert result.exit_code == 1 and "--class-weights is for multi-class models" in result.stderr
    result = CliRunner().invoke(cli, [*base, "--classes", "2", "--loss", "ce", "--ignore-index", "255",
                                      "--class-weights", "1,2,3"])
    assert result.exit_code == 1 and "needs 'auto' or 2 non-negative numbers" in result.stderr
