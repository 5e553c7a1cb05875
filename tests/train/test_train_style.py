"""pixbatch train style: the mechanics, with a randomly initialised VGG16 saved to a temporary file
(pretrained weights cannot be downloaded here)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.models import create_model
from pixbatch.train.style import StyleLoss, gram, total_variation
from pixbatch.train.vgg import VGGFeatures
from tests.conftest import gradient_rgb


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """torchvision VGG16's convolutional part, random weights (what --vgg-weights reads)."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in vgg16(weights=None).features[:23].state_dict().items()}, path)
    return path


@pytest.fixture()
def content(tmp_path):
    folder = tmp_path / "content"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(gradient_rgb(40 + 8 * i, 50, seed=i)).save(folder / f"{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    Image.fromarray(gradient_rgb(64, 64, seed=9)[:, ::-1].copy()).save(tmp_path / "style.png")
    return folder


def test_gram_and_total_variation():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    g = gram(f)
    assert g.shape == (1, 2, 2) and g[0, 0, 0].item() == pytest.approx((1 + 4 + 9 + 16) / 8)
    assert g[0, 0, 1].item() == pytest.approx((2 + 4) / 8) and torch.equal(g, g.transpose(1, 2))
    assert total_variation(torch.ones(1, 3, 5, 5)).item() == 0


def test_style_loss_is_zero_only_where_it_should_be(vgg_file):
    vgg = VGGFeatures(("relu1_2", "relu2_2", "relu3_3", "relu4_3"), vgg_file)
    torch.manual_seed(0)
    style = torch.rand(1, 3, 32, 32)
    loss = StyleLoss(vgg, style, 1.0, 1.0, 0.0)
    assert loss(style, style).item() == pytest.approx(0, abs=1e-6)  # its own content, its own style
    other = torch.rand(1, 3, 32, 32)
    assert loss(other, style).item() > 0 and set(loss.parts) == {"content", "style", "tv"}


def test_train_style_end_to_end(tmp_path, content, vgg_file):
    out = tmp_path / "mystyle.safetensors"
    result = CliRunner().invoke(cli, [
        "train", "style", "--style", str(tmp_path / "style.png"), "--content", str(content), "--vgg-weights",
        str(vgg_file), "--out", str(out), "--steps", "3", "--batch-size", "2", "--size", "32",
        "--preview-every", "2", "--model-kwargs", '{"width": 8}', "--no-amp"])
    # the broken content photo is one error line (exit 123); the net is trained and saved all the same
    assert result.exit_code == 123, result.output
    assert result.stderr.count("error:") == 1 and "broken.jpg" in result.stderr
    assert "saved" in result.stdout and "content" in result.stdout
    loaded = create_model(out)
    recipe = loaded.info.training
    assert loaded.info.task == "style" and loaded.info.arch == "TransformerNet"
    assert recipe["steps"] == 3 and recipe["unreadable_content"] == 1 and recipe["command"].startswith(
        "pixbatch train style")
    assert Image.open(tmp_path / "mystyle_preview.png").size == (48, 40)  # the first photo, cut to multiples of 4
    assert not (tmp_path / "mystyle.safetensors.state").exists()
    # the trained net runs in pixbatch stylize
    Image.fromarray(gradient_rgb(20, 24)).save(tmp_path / "photo.png")
    run = CliRunner().invoke(cli, ["--json", "stylize", str(tmp_path / "photo.png"), str(tmp_path / "o"),
                                   "--style", str(out)])
    assert run.exit_code == 0 and json.loads(run.stdout)["done"] == 1


def test_without_vgg_weights_it_stops_with_one_clear_error(tmp_path, content, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    result = CliRunner().invoke(cli, ["train", "style", "--style", str(tmp_path / "style.png"), "--content",
                                      str(content), "--out", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 1
    assert "needs VGG16 ImageNet weights: pass --vgg-weights PATH" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o.safetensors").exists()


def test_a_file_that_is_not_vgg16_is_refused(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(FileNotFoundError, match="not torchvision VGG16 weights"):
        VGGFeatures(("relu1_2",), path)
