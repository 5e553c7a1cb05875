"""The ``pixbatch`` command: root group, global options and ``main()``.

Heavy imports (torch, models) happen inside the commands so ``pixbatch --help`` stays instant."""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import click

from pixbatch import __version__
from pixbatch.cli._options import DEVICE
from pixbatch.cli.report import App


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "PIXBATCH"})
@click.version_option(__version__, "--version", prog_name="pixbatch")
@click.option("-v", "--verbose", count=True, envvar="PIXBATCH_VERBOSE",
              help="More detail on stderr (repeat for more). [env: PIXBATCH_VERBOSE]")
@click.option("-q", "--quiet", is_flag=True, envvar="PIXBATCH_QUIET",
              help="No progress bar and no summary; errors only. [env: PIXBATCH_QUIET]")
@click.option("--device", type=DEVICE, default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where models run. [env: PIXBATCH_DEVICE]")
@click.option("--json", "as_json", is_flag=True, envvar="PIXBATCH_JSON",
              help="Print the summary as JSON on stdout (also on start errors and interruptions). "
                   "[env: PIXBATCH_JSON]")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, device: str, as_json: bool) -> None:
    """Stream folders of images through image-to-image neural networks.

    \b
    Examples:
      pixbatch upscale photos/ out/ --scale 4
      pixbatch segment fundus/ masks/
      pixbatch --device cpu --json upscale scans/ out/ --scale 2
    """
    ctx.obj = App(verbosity=-1 if quiet else verbose, device=device, as_json=as_json)
    App.current = ctx.obj


def _late(attr: str, value_of):
    """A callback that sets a global option given after the command on this invocation's App."""
    def callback(ctx: click.Context, param: click.Parameter, value) -> None:
        app = ctx.find_object(App)
        if app is not None and value:
            setattr(app, attr, value_of(app, value))

    return callback


def _accept_global_options_after(command: click.Command) -> None:
    """Global options work after the command too (``pixbatch upscale in/ out/ --json``), as users
    type them; ``--help`` lists them once, on ``pixbatch --help``."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_global_options_after(sub)
        return
    command.params += [
        click.Option(["-v", "--verbose"], count=True, hidden=True, expose_value=False,
                     callback=_late("verbosity", lambda app, n: max(app.verbosity, 0) + n)),
        click.Option(["-q", "--quiet"], is_flag=True, hidden=True, expose_value=False,
                     callback=_late("verbosity", lambda app, _: -1)),
        click.Option(["--device"], type=DEVICE, default=None, hidden=True, expose_value=False,
                     callback=_late("device", lambda app, spec: spec)),
        click.Option(["--json", "as_json"], is_flag=True, hidden=True, expose_value=False,
                     callback=_late("as_json", lambda app, _: True)),
    ]


def _register() -> None:
    from pixbatch.cli.bench import bench
    from pixbatch.cli.eval import eval_group
    from pixbatch.cli.export import export
    from pixbatch.cli.models import models
    from pixbatch.cli.segment import segment
    from pixbatch.cli.stylize import stylize
    from pixbatch.cli.train import train_group
    from pixbatch.cli.upscale import upscale

    cli.add_command(upscale)
    cli.add_command(segment)
    cli.add_command(stylize)
    cli.add_command(models)
    cli.add_command(eval_group)
    cli.add_command(train_group)
    cli.add_command(bench)
    cli.add_command(export)

    for command in cli.commands.values():
        _accept_global_options_after(command)


_register()


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


PACKAGE = Path(__file__).resolve().parents[1]


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one line each: pixbatch's own as ``warning: ...``; a library's (torch's
    deprecations while OpenVINO traces a model, ...) only with -v, saying where it came from."""
    from pixbatch.runtime.jobs import one_line

    if Path(filename).resolve().is_relative_to(PACKAGE):
        click.echo(f"warning: {one_line(message)}", err=True)
    elif App.current is not None and App.current.verbosity >= 1:
        click.echo(f"note: {category.__name__} from {filename}:{lineno}: {one_line(message)}", err=True)


def main() -> None:
    from pixbatch.runtime.host_memory import reuse_freed_memory

    # This process is one pixbatch command: large CPU tensors reuse freed pages instead of faulting
    # fresh ones on every forward pass (a host calling `cli` in-process keeps its own malloc settings).
    reuse_freed_memory()
    # SIGTERM unwinds like Ctrl-C, so writers finish or delete their temporary files.
    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = show_warning
    try:
        code = cli.main(prog_name="pixbatch", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("interrupted: finished outputs are complete; run the same command again to resume",
                   err=True)
        app = App.current
        if app is not None and app.report is not None:
            app.finish(app.report, interrupted=True)  # the partial summary, exit 130
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `pixbatch` or `pixbatch train`: the help itself
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # one line, like every other error: what is wrong and where help is
        from pixbatch.runtime.jobs import one_line

        where = exc.ctx.command_path if exc.ctx is not None else "pixbatch"
        click.echo(f"error: {one_line(exc.format_message())} (see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
