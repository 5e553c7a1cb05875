import numpy as np
import torch

from pixbatch.models import create_model
from pixbatch.runtime.prepare import prepare_model
from pixbatch.tasks.planes import model_planes
from pixbatch.tasks.segment import SegmentTask, palette


def test_palette_is_distinct_for_the_first_classes():
    pal = palette()
    assert pal.shape == (256, 3) and tuple(pal[0]) == (0, 0, 0)
    assert len({tuple(c) for c in pal[:64]}) == 64


def test_model_planes_drop_alpha_and_match_the_model_channels():
    rgba = np.full((3, 4, 4), 255, np.uint8)
    assert model_planes(rgba, torch.device("cpu"), 3).shape == (1, 3, 3, 4)
    gray16 = np.full((3, 4, 1), 65535, np.uint16)
    x = model_planes(gray16, torch.device("cpu"), 3)
    assert x.shape == (1, 3, 3, 4) and float(x.min()) == 1.0


def test_outputs_are_declared_and_posted_with_the_same_names():
    torch.manual_seed(0)
    runner = prepare_model(create_model("unet", pretrained=False, base=4, depth=2), torch.device("cpu"), torch.float32)
    task = SegmentTask(runner, probabilities="8bit", overlay=True)
    from pathlib import Path

    paths = task.outputs(Path("o/a.png"), streamed=False)
    assert paths == {"mask": Path("o/a.png"), "prob": Path("o/a_prob.tif"), "overlay": Path("o/a_overlay.png")}
    assert task.outputs(Path("o/a.tif"), streamed=True)["overlay"] == Path("o/a_overlay.tif")
    logits = torch.randn(1, 1, 5, 6)
    out = task.post(logits, None, lambda: np.zeros((5, 6, 3), np.uint8))
    assert set(out) == set(paths) and out["mask"].shape == (5, 6, 1) and out["overlay"].shape == (5, 6, 3)
    assert set(out["mask"].unique().tolist()) <= {0, 255}


def test_multiclass_masks_carry_class_names_and_never_the_void_label(tmp_path):
    """A model trained with an ignore (void) label never predicts it, and its class names travel in the
    mask PNG's text chunks."""
    import json

    from PIL import Image

    from pixbatch.io.discover import plan_jobs
    from pixbatch.models import build_registered
    from pixbatch.models.checkpoint import save_checkpoint
    from pixbatch.runtime.engine import run_job
    from pixbatch.runtime.spec import JobSpec
    from tests.conftest import gradient_rgb

    torch.manual_seed(0)
    kwargs = {"base": 4, "depth": 2, "num_classes": 3}
    net = build_registered("unet", **kwargs)
    with torch.no_grad():  # make the void class (1) win everywhere unless it is excluded
        net.head.bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(net, ckpt, name="unet", kwargs=kwargs,
                    training={"ignore_index": 1, "class_names": ["ground", "void", "door"]})
    Image.fromarray(gradient_rgb(24, 32)).save(tmp_path / "a.png")
    runner = prepare_model(create_model(ckpt), torch.device("cpu"), torch.float32)
    report = run_job(SegmentTask(runner), plan_jobs([tmp_path / "a.png"], tmp_path / "out"), JobSpec(),
                     log=lambda m: None)
    assert report.done == 1 and report.settings["ignore_index"] == 1
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.mode == "P" and json.loads(im.text["classes"]) == ["ground", "void", "door"]
        assert 1 not in set(np.unique(np.asarray(im)))
    # --ignore-index overrides the checkpoint's: class 1 may be predicted again (it wins everywhere)
    report = run_job(SegmentTask(runner, ignore_index=2), plan_jobs([tmp_path / "a.png"], tmp_path / "out2"),
                     JobSpec(), log=lambda m: None)
    with Image.open(tmp_path / "out2" / "a.png") as im:
        assert set(np.unique(np.asarray(im))) == {1}
