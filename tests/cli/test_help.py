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


def test_every_option_of_every_command_says_what_it_is_for():
    import click

    bare = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")
        bare.extend(f"{path} {p.opts[0]}" for p in command.params
                    if isinstance(p, click.Option) and not p.hidden and not p.help)

    walk(cli, "pixbatch")
    assert not bare, bare


def test_upscale_help_starts_with_scale_and_model_and_names_the_default_models():
    text = CliRunner().invoke(cli, ["upscale", "--help"]).stdout
    options = text.split("Options:")[1].split()
    assert options[:2] == ["-s,", "--scale"] and options.index("-m,") < options.index("--glob")
    assert "Default for --scale: rlfn_x2 (x2), rlfn_x3 (x3), rlfn_x4 (x4)." in " ".join(text.split())


def test_models_table_columns_line_up():
    import re

    lines = CliRunner().invoke(cli, ["models"]).stdout.split("\n\n")[0].splitlines()
    header, rows = lines[0], lines[1:]
    arch_at, params_end = header.index("arch"), header.index("params") + len("params")
    assert len(rows) > 20
    for row in rows:  # however long a name or an architecture's name
        name = row.split()[0]
        assert row.index(row.split()[1], len(name)) == arch_at, row
        assert re.search(r" ([\d,]{3,})  ", row).end(1) == params_end, row


def test_every_command_speaks_one_precision_and_backend_vocabulary():
    """--precision and --backend take the same words everywhere (eval keeps fp32 and torch as defaults),
    and --backend's are the ones the engine's backend factory knows."""
    import click

    from pixbatch.cli._options import BACKENDS, PRECISIONS
    from pixbatch.runtime.spec import BackendChoice, Precision

    assert BACKENDS == BackendChoice.words() and PRECISIONS == Precision.words()
    seen = {}

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")
        for p in command.params:
            if isinstance(p, click.Option) and p.name in ("precision", "backend"):
                seen[(path, p.name)] = (tuple(p.type.choices), p.default)

    walk(cli, "pixbatch")
    assert {path for path, _ in seen} >= {"pixbatch upscale", "pixbatch segment", "pixbatch stylize",
                                          "pixbatch eval sr", "pixbatch eval seg", "pixbatch bench"}
    for (path, name), (choices, default) in seen.items():
        if path == "pixbatch models":  # --precision int8: which cached models to describe
            assert choices == (Precision.INT8,)
            continue
        assert choices == (PRECISIONS if name == "precision" else BACKENDS), (path, name)
        if path.startswith("pixbatch eval"):
            assert default == {"precision": "fp32", "backend": "torch"}[name]


def test_train_offers_bicubic_and_every_degradation_the_data_pipeline_knows():
    """--degrade's words are written out in the CLI (it imports no torch); they must be the pipeline's."""
    import click

    from pixbatch.train.degradations import DEGRADATIONS

    (option,) = [p for p in cli.commands["train"].commands["sr"].params if p.name == "degrade"]
    assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == ("bicubic", *DEGRADATIONS)
