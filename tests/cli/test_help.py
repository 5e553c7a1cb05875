"""Every command's --help shows at least one example of the command itself."""

import pytest
from click.testing import CliRunner

from pixbatch.cli import cli

COMMANDS = [[], ["upscale"], ["segment"], ["models"], ["bench"], ["eval"], ["eval", "sr"], ["eval", "seg"],
            ["train"], ["train", "sr"], ["train", "seg"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pixbatch")
def test_help_shows_an_example(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    text = result.stdout
    assert "Examples:" in text
    example = text.split("Examples:")[1].strip().splitlines()[0].strip()
    assert example.startswith(" ".join(["pixbatch", *command])), example
