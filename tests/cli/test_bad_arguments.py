"""Bad values for every option: a usage error (exit 2) in one line that says what is wrong, before any
work, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from tests.conftest import REPO, gradient_rgb

TILE = [("--tile", v, "is not 0 (automatic) or a tile of 16 to 32768 px") for v in ("1", "7", "-5", "100000")]
ENGINE = TILE + [("--batch-size", "-1", "is not in the range"), ("--workers", "-1", "is not in the range"),
                 ("--writers", "0", "is not in the range"), ("--overlap", "-3", "is not in the range"),
                 ("--max-pixels", "-1", "is not in the range"), ("--precision", "fp8", "is not one of"),
                 ("--suffix", "a/b", "")]
FORMATS = [("--quality", "101", "is not in the range"), ("--quality", "0", "is not in the range"),
           ("--format", "bmp", "is not one of"), ("--png-compression", "10", "is not in the range")]
CASES = (
    [("upscale", o, v, m) for o, v, m in ENGINE + FORMATS]
    + [("upscale", "--scale", v, m) for v, m in (("0", "is not in the range"), ("5", "x5 needs --model"),
                                                   ("8", "x8 needs --model"))]
    + [("upscale", "--outscale", v, "is not in the range") for v in ("0", "65", "1e300")]
    + [("segment", o, v, m) for o, v, m in ENGINE + [("--threshold", "2", "is not in the range"),
                                                        ("--prob-format", "half", "is not one of")]]
    + [("stylize", o, v, m) for o, v, m in ENGINE + FORMATS + [("--strength", "2", "is not in the range"),
                                                                  ("--max-side", "3", "is not in the range")]]
)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-args") / "a.png"
    Image.fromarray(gradient_rgb(16, 16)).save(path)
    return path


@pytest.mark.parametrize(("command", "option", "value", "message"), CASES)
def test_every_bad_value_is_a_usage_error(photo, tmp_path, command, option, value, message):
    extra = ["--style", str(photo)] if command == "stylize" else []
    result = CliRunner().invoke(cli, [command, str(photo), str(tmp_path / "out"), *extra, option, value])
    assert result.exit_code == 2, (command, option, value, result.output)
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["train", "sr", "--data", ".", "--arch", "edsr_tiny_x2", "--out", "m.safetensors", "--steps", "0"], "--steps"),
    (["train", "seg", "--images", ".", "--masks", ".", "--out", "m.safetensors", "--size", "8"], "--size"),
    (["train", "style", "--style", "x.png", "--content", ".", "--out", "m.safetensors"], "--style"),
    (["eval", "seg", "--images", ".", "--masks", ".", "--tile", "7"], "--tile"),
    (["eval", "sr", "--hr", ".", "--precision", "fp8"], "--precision"),
])
def test_training_and_evaluation_options(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_usage_error_is_one_line_from_the_real_command(photo, tmp_path):
    for args, says in ((["upscale", photo, tmp_path / "o", "--tile", "7"], "'--tile': 7 is not 0 (automatic)"),
                       (["upscal"], "No such command 'upscal'. Did you mean 'upscale'?"),
                       (["stylize", photo, tmp_path / "o"], "Missing option '--style'")):
        proc = subprocess.run([sys.executable, "-m", "pixbatch", *map(str, args)], capture_output=True, text=True,
                              cwd=REPO)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and says in proc.stderr
        assert "--help`)" in proc.stderr


def float_options() -> list[tuple[str, click.Option]]:
    """Every option of every command whose value is a number with a fraction."""
    found = []

    def walk(command: click.Command, path: str) -> None:
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {sub_name}")
        found.extend((path, p) for p in command.params if isinstance(p.type, click.types.FloatParamType))

    walk(cli, "pixbatch")
    return found


def test_every_float_option_of_every_command_refuses_nan_and_infinity():
    from pixbatch.cli._options import FiniteFloat

    options = float_options()
    assert len(options) >= 12  # thresholds, strengths, learning rates, loss weights, --outscale, ...
    for where, option in options:
        assert isinstance(option.type, FiniteFloat), f"{where} {option.opts[0]} takes NaN"
        ctx = click.Context(cli)
        for value in ("nan", "NaN", "inf", "-inf", "1e999"):
            with pytest.raises(click.BadParameter, match="is not a finite number"):
                option.type.convert(value, option, ctx)


@pytest.mark.parametrize(("args", "option"), [
    (["segment", "{photo}", "{out}", "--threshold", "nan"], "--threshold"),
    (["segment", "{photo}", "{out}", "--overlay", "--overlay-alpha", "nan"], "--overlay-alpha"),
    (["stylize", "{photo}", "{out}", "--style", "{photo}", "--strength", "nan"], "--strength"),
    (["upscale", "{photo}", "{out}", "--outscale", "inf"], "--outscale"),
    (["train", "sr", "--data", ".", "--arch", "edsr_tiny_x2", "--out", "m.safetensors", "--lr", "nan"], "--lr"),
    (["eval", "seg", "--images", ".", "--masks", ".", "--threshold", "-inf"], "--threshold"),
])
def test_nan_and_infinity_are_usage_errors_before_any_work(photo, tmp_path, args, option):
    args = [a.format(photo=photo, out=tmp_path / "out") for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output and "is not a finite number" in result.output
    assert not (tmp_path / "out").exists()
