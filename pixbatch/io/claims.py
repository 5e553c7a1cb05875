"""Claims on outputs, so two runs into one destination split the work instead of both doing it.

Before an input is decoded, its output is claimed with a small lock file beside it. The file names
its owner: process id, the process's start time (so a reused pid is not mistaken for the owner) and
host. It is written whole under a temporary name and hard-linked into place, so a claim never exists
without its owner in it, and of two runs linking at once exactly one succeeds. A claim whose owner is
dead is taken over under an exclusive ``flock`` on that claim file (two runs that both find it dead
cannot delete each other's fresh claim); a claim from another host is honoured until it is
``FOREIGN_CLAIM_TTL`` seconds old, since its owner cannot be checked from here. Claims are released
when the output is written or has failed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from pixbatch.io.atomic import TEMP_MARK, temp_path

try:
    import fcntl
except ImportError:  # not POSIX: take-overs are not locked
    fcntl = None

CLAIM_SUFFIX = f"{TEMP_MARK}claim"
FOREIGN_CLAIM_TTL = 6 * 3600
UNWRITTEN_GRACE = 10.0  # s: an empty claim this young is being written (file systems without hard links)


def claim_path(dst: Path) -> Path:
    return dst.parent / f".{dst.name}{CLAIM_SUFFIX}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or "" where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def owner_token(pid: int | None = None) -> str:
    """Who holds a claim: ``pid start-time host``."""
    pid = os.getpid() if pid is None else pid
    return f"{pid} {_start_time(pid) or '-'} {socket.gethostname()}"


def _owner_alive(token: str, age: float) -> bool:
    try:
        pid_s, start, host = token.split()
        pid = int(pid_s)
    except ValueError:  # unreadable: being written (see _create's fallback) or its writer died mid-write
        return not token and age < UNWRITTEN_GRACE
    if host != socket.gethostname():
        return age < FOREIGN_CLAIM_TTL
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "-" or _start_time(pid) in ("", start)


def _write_new(path: Path, owner: str) -> None:
    """Create ``path`` (FileExistsError if it exists) holding ``owner``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, owner.encode())
    finally:
        os.close(fd)


def _create(path: Path, owner: str) -> bool:
    """Create the claim file holding ``owner``, atomically; False if it exists."""
    tmp = temp_path(path)
    try:
        _write_new(tmp, owner)
        try:
            os.link(tmp, path)  # appears whole or not at all; exactly one of two racing runs wins
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: exclusive create, then write
            pass
    finally:
        tmp.unlink(missing_ok=True)
    try:
        _write_new(path, owner)
    except FileExistsError:
        return False
    return True


def _remove_if_still(path: Path, held: str) -> bool:
    """Delete the claim at ``path`` if it is still the very file that held ``held``: checked and deleted
    under an exclusive lock on that file, so of two runs taking over one dead claim, the second finds
    the file replaced and leaves the first's fresh claim alone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone meanwhile
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same and os.read(fd, 4096).decode(errors="replace") == held:
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        os.close(fd)  # releases the lock


def claim(dst: Path, owner: str) -> bool:
    """Claim ``dst`` for ``owner``; False when another live run holds it. Raises OSError when the claim
    cannot be written (a full disk)."""
    path = claim_path(dst)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        if _create(path, owner):
            return True
        try:
            held = path.read_text()
            age = time.time() - path.stat().st_mtime
        except OSError:
            continue  # released meanwhile: try again
        if held == owner:
            return True
        if _owner_alive(held, age):
            return False
        _remove_if_still(path, held)  # a dead run's claim: take it over
    return False


def release(dst: Path, owner: str) -> None:
    """Drop our claim on ``dst`` (never another run's)."""
    path = claim_path(dst)
    try:
        if path.read_text() == owner:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale_claims(folder: Path) -> int:
    """Delete claims in ``folder`` whose owners are dead."""
    removed = 0
    for path in folder.glob(f".*{CLAIM_SUFFIX}"):
        try:
            held, age = path.read_text(), time.time() - path.stat().st_mtime
        except OSError:
            continue
        if not _owner_alive(held, age) and _remove_if_still(path, held):
            removed += 1
    return removed
