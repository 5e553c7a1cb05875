"""The command line's malloc setting: on for glibc, off on request."""

import os
import subprocess
import sys

import pytest

CHECK = "from pixbatch.runtime.host_memory import reuse_freed_memory as r; print(r(), r())"


def run(**env) -> str:
    return subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reuse_is_on_for_glibc_and_idempotent():
    import ctypes

    glibc = hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert run(PIXBATCH_MALLOC="reuse") == [str(glibc)] * 2


def test_system_malloc_on_request():
    assert run(PIXBATCH_MALLOC="system") == ["False", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_memory_retained_for_reuse_is_released_at_the_end():
    """A 400 MB buffer freed while reuse is on stays resident until release_freed_memory()."""
    code = (
        "import resource, numpy as np\n"
        "from pixbatch.runtime.host_memory import release_freed_memory as rel, reuse_freed_memory as reuse\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize() >> 20\n"
        "assert reuse()\n"
        "a = np.ones(400 << 20, np.uint8); b = np.ones(1 << 20, np.uint8); del a\n"
        "kept = rss(); rel(); print(kept, rss())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    kept, released = map(int, out)
    assert kept - released > 300, (kept, released)
