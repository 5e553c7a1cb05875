"""Atomic, verified writes: an output is complete on disk or absent.

Bytes go to a hidden temporary file beside the destination, are checked to be all there (every
short write resumed, every error raised, ``fsync``, then the size on disk compared with the size the
encoder produced), and only then become the destination in one step. Without ``overwrite`` that step
is a hard link, which fails rather than replace a file that appeared meanwhile.

Encoders that write to a file descriptor themselves (Pillow's C encoders) can lose a short write
on a full disk, so every encoder here writes to memory and this module writes the bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".pixbatch-"
# Temporary files name their process and host, so a run cleaning up after killed runs never removes a
# live one's: on a shared file system (a Ray cluster), another host's are removed only when this old.
HOST_ID = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
FOREIGN_TEMP_TTL = 6 * 3600


class OutputExistsError(FileExistsError):
    pass


class IncompleteWriteError(OSError):
    """The file on disk is not what was written (a full disk or a failing device)."""


def temp_path(dst: Path) -> Path:
    """A fresh temporary name beside ``dst`` (hidden; removed by later runs if this process dies)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst.parent / f".{dst.name}{TEMP_MARK}{os.getpid()}-{HOST_ID}-{secrets.token_hex(4)}.tmp"


def commit(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place (hard link: never replaces a file unless ``overwrite``);
    the temporary name is gone afterwards."""
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # atomic and never replaces an existing file
        os.unlink(tmp)  # the output is in place: the temporary name goes
    except FileExistsError:
        raise OutputExistsError(f"{dst} already exists (use --overwrite to replace it)") from None
    except OSError:  # file systems without hard links: check, then rename
        if os.path.lexists(dst):
            raise OutputExistsError(f"{dst} already exists (use --overwrite to replace it)") from None
        os.replace(tmp, dst)


def remove(path: Path) -> None:
    """Delete a file, a link or a folder with what it holds; nothing when it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def commit_folder(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Move a finished temporary folder into place in one rename; an existing ``dst`` is replaced only with
    ``overwrite`` (moved aside, the new folder renamed in, the old one removed)."""
    if not os.path.lexists(dst):
        os.rename(tmp, dst)
        return
    if not overwrite:
        raise OutputExistsError(f"{dst} already exists (use --overwrite to replace it)")
    old = temp_path(dst)
    os.rename(dst, old)
    os.rename(tmp, dst)
    remove(old)


@contextlib.contextmanager
def atomic_path(dst: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``dst``; when the block completes it becomes ``dst`` in one step
    (never clobbering an existing file unless ``overwrite``); on any error it is deleted. The block
    must leave the file complete and synced (``write_file`` or ``sync_and_check``)."""
    tmp = temp_path(dst)
    try:
        yield tmp
        commit(tmp, dst, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


def write_file(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Create ``path`` (it must not exist) holding exactly ``data``, synced to the device; raises
    OSError if any byte did not make it."""
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        done = 0
        while done < len(view):
            n = os.write(fd, view[done:])  # a short write is resumed; the next call reports the error
            if n <= 0:
                raise IncompleteWriteError(errno.EIO, f"write stopped after {done} of {len(view)} bytes")
            done += n
        os.fsync(fd)
        size = os.fstat(fd).st_size
        if size != len(view):
            raise IncompleteWriteError(errno.EIO, f"{size} of {len(view)} bytes reached the disk")
    finally:
        os.close(fd)  # may raise too (network file systems report write errors here)


def write_bytes(data: bytes | bytearray | memoryview, dst: Path, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``dst`` atomically and verified (see the module docstring)."""
    with atomic_path(dst, overwrite) as tmp:
        write_file(tmp, data)


def sync_and_check(path: Path, expected_size: int | None = None) -> None:
    """For files written by a library through its own file object: flush them to the device and,
    when the writer knows it, compare the size on disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if expected_size is not None and size != expected_size:
        raise IncompleteWriteError(errno.EIO, f"{size} of {expected_size} bytes reached the disk")


def check_tiff_complete(path: Path) -> None:
    """A TIFF written by streaming (tifffile) is synced, and every page's every tile or strip lies
    inside the file: a file cut short by a full disk fails here, before it is committed."""
    import tifffile

    sync_and_check(path)
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tf:
            for page in tf.pages:
                ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
                if ends and max(ends) > size:
                    raise IncompleteWriteError(errno.EIO, f"TIFF data ends at byte {max(ends)} but the "
                                                          f"file has {size} bytes")
    except IncompleteWriteError:
        raise
    except Exception as exc:  # a header or IFD that did not make it to disk
        raise IncompleteWriteError(errno.EIO, f"written TIFF is unreadable ({exc})") from None
