"""Host memory: keep freed blocks for reuse instead of handing them back to the kernel.

PyTorch's CPU tensors come from the C library's malloc. glibc serves blocks above its mmap threshold
(128 KiB to 32 MiB, adaptive) with fresh ``mmap`` pages and unmaps them on free, so every large
activation of every forward pass is page-faulted and zeroed again. On this project's 2-core Xeon that
nearly doubled the CPU time of edsr_tiny_x4 at 256 px (the prepared bf16 model: 119 ms per image with
glibc's defaults, 64 ms with reuse; cloning a 67 MB tensor: 20.8 -> 12.7 ms). Raising the mmap
threshold does not help (it stops at 32 MiB, below those activations); serving everything from the
heap and trimming it only above a high-water mark makes the second forward reuse the first one's
pages, as OpenVINO's and ONNX Runtime's own arenas do.

Process-wide, so only a process that is one pixbatch command turns it on (``pixbatch.cli.main``, the
``pixbatch`` executable and ``python -m pixbatch``): not the library, and not a host that drives the
CLI in-process (a test session would keep every command's heap, and the workers it forks inherit
it). No effect where the C library is not glibc. ``PIXBATCH_MALLOC=system`` leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
TRIM_THRESHOLD = 256 << 20  # free memory above this much at the top of the heap goes back to the system

_done: bool | None = None


def reuse_freed_memory() -> bool:
    """Configure glibc malloc for reuse (once); True when it is in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("PIXBATCH_MALLOC", "reuse") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: leave them alone
            return False
        _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except OSError:
        pass
    return _done


def reuse_in_effect() -> bool:
    """Whether this process turned reuse on."""
    return bool(_done)
