"""Usage as people type it: global options after the command, a clear word when DST is missing,
the short options users of other upscalers expect."""

import json

from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import gradient_rgb


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, prog_name="pixbatch")
    return result.exit_code, result.stdout, result.stderr


def test_global_options_after_the_command(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(8, 8)).save(tmp_path / "a.png")
    code, stdout, _ = run("upscale", tmp_path / "a.png", tmp_path / "out", "--model", tiny_checkpoint, "--json",
                          "--device", "cpu")
    summary = json.loads(stdout)
    assert code == 0 and summary["done"] == 1 and summary["settings"]["device"] == "cpu"
    code, stdout, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out2", "--model", tiny_checkpoint, "-q")
    assert code == 0 and stdout == "" and stderr == ""
    code, _, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out3", "--model", tiny_checkpoint, "-v")
    assert code == 0 and "settings: task=upscale" in stderr
    code, stdout, stderr = run("models", "--json", "--pattern", "edsr_tiny*")  # commands without images too
    assert code == 0 and [e["name"] for e in json.loads(stdout)] == ["edsr_tiny_x2", "edsr_tiny_x3", "edsr_tiny_x4"]
    code, _, stderr = run("upscale", tmp_path / "a.png", tmp_path / "out4", "--device", "cuda:7")
    assert code == 1 and stderr.startswith("error: ")  # the late --device is the one used


def test_a_missing_destination_says_what_is_needed(tmp_path):
    for args in (("upscale", tmp_path), ("segment", tmp_path), ("upscale",)):
        code, _, stderr = run(*args)
        assert code == 2
        assert f"give the inputs and the output folder: pixbatch {args[0]} SRC... DST" in stderr
        assert f"`pixbatch {args[0]} photos/ out/`" in stderr


def test_short_options(tmp_path, tiny_checkpoint):
    Image.fromarray(gradient_rgb(30, 40)).save(tmp_path / "a.png")
    code, stdout, _ = run("--json", "upscale", tmp_path / "a.png", tmp_path / "out", "-m", tiny_checkpoint, "-s", 2,
                          "-t", 16, "-f", "jpg")
    settings = json.loads(stdout)["settings"]
    assert code == 0 and settings["tile"] == 16 and settings["scale"] == 2
    assert Image.open(tmp_path / "out" / "a.jpg").size == (80, 60)
