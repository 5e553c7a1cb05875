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


@pytest.mark.parametrize("command", [[], ["train"], ["eval"]], ids=lambda c: " ".join(c) or "pixbatch")
def test_a_group_without_its_command_prints_its_help(command):
    """Bare ``pixbatch`` (or ``pixbatch train``) prints the help as help, as Click does (on stderr, exit 2),
    not as one error line with literal \\n in it."""
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run([sys.executable, "-m", "pixbatch", *command], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"Usage: {' '.join(['pixbatch', *command])} [OPTIONS] COMMAND")
    assert "\\n" not in proc.stderr and "Commands:" in proc.stderr and "error:" not in proc.stderr
