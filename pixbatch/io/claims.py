"""Claims on outputs, so two runs into one destination split the work instead of both doing it.

Before an input is decoded, its output is claimed with a small lock file beside it, created
exclusively (``O_EXCL``). The file names its owner: process id, the process's start time (so a
reused pid is not mistaken for the owner) and host. A claim whose owner is dead is taken over; a
claim from another host is honoured until it is ``FOREIGN_CLAIM_TTL`` seconds old, since its owner
cannot be checked from here. Claims are released when the output is written or has failed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from pixbatch.io.atomic import TEMP_MARK

CLAIM_SUFFIX = f"{TEMP_MARK}claim"
FOREIGN_CLAIM_TTL = 6 * 3600


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
    except ValueError:
        return False  # unreadable: a claim written by a process that died mid-write
    if host != socket.gethostname():
        return age < FOREIGN_CLAIM_TTL
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start == "-" or _start_time(pid) in ("", start)


def claim(dst: Path, owner: str) -> bool:
    """Claim ``dst`` for ``owner``; False when another live run holds it."""
    path = claim_path(dst)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                held = path.read_text()
                age = time.time() - path.stat().st_mtime
            except OSError:
                continue  # released meanwhile: try again
            if held == owner:
                return True
            if _owner_alive(held, age):
                return False
            path.unlink(missing_ok=True)  # a dead run's claim: take it over
            continue
        try:
            os.write(fd, owner.encode())
        finally:
            os.close(fd)
        return True
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
        if not _owner_alive(held, age):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
