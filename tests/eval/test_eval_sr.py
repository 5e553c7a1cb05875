"""``pixbatch eval sr`` reproduces published numbers with the authors' own checkpoints."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.eval.sr import evaluate_sr, mean_metrics
from pixbatch.models import create_model
from pixbatch.runtime.backends import openvino_precision
from pixbatch.runtime.prepare import prepare_model
from tests.conftest import DATA, gradient_rgb, requires_data

SET5 = DATA / "sr" / "set5"
# Hui et al. 2019 (IMDN), Set5, Y channel: PSNR / SSIM
PUBLISHED = {2: (38.00, 0.9605), 3: (34.36, 0.9270), 4: (32.21, 0.8948)}


@requires_data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imdn_reproduces_published_set5(scale):
    loaded = create_model(DATA / "weights" / f"imdn_x{scale}.pth")
    assert loaded.info.arch == "IMDN" and loaded.info.recognised_by == "pixbatch" and loaded.info.scale == scale
    runner = prepare_model(loaded, torch.device("cpu"), torch.float32, kernels="torch")
    results = evaluate_sr(runner, SET5)
    model, bicubic = mean_metrics([r.model for r in results]), mean_metrics([r.bicubic for r in results])
    assert abs(model["psnr_y"] - PUBLISHED[scale][0]) < 0.05, model
    assert abs(model["ssim_y"] - PUBLISHED[scale][1]) < 0.0005, model
    assert abs(bicubic["psnr_y"] - {2: 33.66, 3: 30.39, 4: 28.42}[scale]) < 0.05, bicubic


@requires_data
def test_cli_with_given_lr_images_and_json(tmp_path):
    out = tmp_path / "r.json"
    args = ["--json", "eval", "sr", "--model", str(DATA / "weights" / "imdn_x4.pth"), "--hr", str(SET5),
            "--lr-images", str(SET5 / "LR_bicubic" / "X4"), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads(out.read_text())
    assert [i["name"] for i in summary["images"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert round(summary["mean"]["model"]["psnr_y"], 2) == 32.21  # the given LR = our MATLAB-bicubic LR


@requires_data
def test_imdn_works_in_upscale(tmp_path):
    src = SET5 / "LR_bicubic" / "X2" / "birdx2.png"
    result = CliRunner().invoke(cli, ["upscale", str(src), str(tmp_path), "--model", str(DATA / "weights" / "imdn_x2.pth")])
    assert result.exit_code == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "birdx2.png").size == (288, 288)


def test_eval_reports_a_missing_lr_image(tmp_path, tiny_checkpoint):
    from PIL import Image

    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "hr" / "a.png")
    result = CliRunner().invoke(cli, ["eval", "sr", "--model", str(tiny_checkpoint), "--hr", str(tmp_path / "hr"),
                                      "--lr", str(tmp_path / "lr")])
    assert result.exit_code == 1
    assert "no LR image for a in" in result.stderr
    assert "note: --lr is deprecated here; it is now --lr-images" in result.stderr  # the old name still works


def test_a_checkpoint_file_heads_the_table_with_its_own_name(tmp_path, tiny_checkpoint):
    (tmp_path / "hr").mkdir()
    Image.fromarray(gradient_rgb(24, 32)).save(tmp_path / "hr" / "a.png")
    result = CliRunner().invoke(cli, ["eval", "sr", "--model", str(tiny_checkpoint), "--hr", str(tmp_path / "hr")])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("tiny_x2.safetensors (edsr_tiny_x2) x2 on ")
    result = CliRunner().invoke(cli, ["--json", "eval", "sr", "--model", str(tiny_checkpoint), "--hr",
                                      str(tmp_path / "hr")])
    summary = json.loads(result.stdout)
    assert summary["model"] == "tiny_x2.safetensors (edsr_tiny_x2)" and summary["arch"] == "edsr_tiny_x2"
    assert (summary["precision"], summary["backend"]) == ("fp32", "torch")  # eval's defaults


def test_precision_and_backend_auto_report_what_they_chose(tmp_path, tiny_checkpoint):
    """`eval --precision auto --backend auto` decides as upscale would, and says what it computed in."""
    import torch

    from pixbatch.models import create_model
    from pixbatch.runtime.device import precision_name, resolve_precision

    (tmp_path / "hr").mkdir()
    Image.fromarray(gradient_rgb(24, 32)).save(tmp_path / "hr" / "a.png")
    result = CliRunner().invoke(cli, ["--device", "cpu", "--json", "eval", "sr", "--model", str(tiny_checkpoint),
                                      "--hr", str(tmp_path / "hr"), "--precision", "auto", "--backend", "auto"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    chosen = resolve_precision("auto", torch.device("cpu"), create_model(tiny_checkpoint).info)
    assert summary["precision"] == precision_name(chosen) and summary["backend"] == "torch"  # a small job


@requires_data
def test_openvino_backend_keeps_set5_scores_of_the_shipped_x4_model():
    """What `--backend openvino` (bf16) computes scores within 0.01 dB / 0.001 SSIM of fp32 PyTorch."""
    pytest.importorskip("openvino")
    scores = {}
    for precision, backend in [("fp32", "torch"), ("bf16", "openvino")]:
        result = CliRunner().invoke(cli, ["--device", "cpu", "--json", "eval", "sr", "--model", "edsr_tiny_x4", "--hr",
                                          str(SET5), "--precision", precision, "--backend", backend])
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        scores[backend] = summary["mean"]["model"]
    assert summary["backend"] == f"openvino ({openvino_precision(torch.bfloat16)})"  # f32 without native bf16
    assert abs(scores["openvino"]["psnr_y"] - scores["torch"]["psnr_y"]) < 0.01, scores
    assert abs(scores["openvino"]["ssim_y"] - scores["torch"]["ssim_y"]) < 0.001, scores


def test_only_evaluates_the_images_a_list_names(tmp_path, tiny_checkpoint):
    (tmp_path / "hr").mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(gradient_rgb(24, 32, seed=ord(name))).save(tmp_path / "hr" / f"{name}.png")
    (tmp_path / "list.txt").write_text("# two of three\nc.png\na.png\n")
    args = ["--json", "eval", "sr", "--model", str(tiny_checkpoint), "--hr", str(tmp_path / "hr")]
    result = CliRunner().invoke(cli, [*args, "--only", str(tmp_path / "list.txt")])
    assert result.exit_code == 0, result.stderr
    assert [i["name"] for i in json.loads(result.stdout)["images"]] == ["a", "c"]
    (tmp_path / "list.txt").write_text("a.png\nd.png\n")
    result = CliRunner().invoke(cli, [*args, "--only", str(tmp_path / "list.txt")])
    assert result.exit_code == 1 and "--only names 1 image(s) not in" in result.stderr and "d.png" in result.stderr
