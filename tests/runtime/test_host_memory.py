"""The command line's malloc setting: on for a pixbatch process with glibc, off on request, and never
switched on by driving the CLI in-process."""

import os
import subprocess
import sys

import pytest

CHECK = "from pixbatch.runtime.host_memory import reuse_freed_memory as r; print(r(), r())"


def run(code: str, **env) -> list[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_is_on_for_glibc_and_idempotent():
    import ctypes

    glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert run(CHECK, PIXBATCH_MALLOC="reuse") == [str(glibc)] * 2


def test_system_malloc_on_request():
    assert run(CHECK, PIXBATCH_MALLOC="system") == ["False", "False"]


def test_only_the_pixbatch_process_turns_it_on():
    """``cli`` called in-process (CliRunner, a host program) leaves malloc alone; ``main`` does not."""
    code = ("from click.testing import CliRunner\nfrom pixbatch.cli import cli\nfrom pixbatch.runtime.host_memory import reuse_in_effect\n"
            "CliRunner().invoke(cli, ['models'])\nprint(reuse_in_effect())")
    assert run(code) == ["False"]
