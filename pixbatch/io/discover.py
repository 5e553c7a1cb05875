"""Walk the inputs, map each to its output path (mirroring the tree), skip finished outputs."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pixbatch.io.atomic import TEMP_MARK

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm",
                            ".pgm", ".pnm", ".tga"})
# Formats we write; anything else read in "same" mode is written as PNG.
OUTPUT_SUFFIX = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


@dataclass
class Plan:
    todo: list[Job]
    skipped: list[Job]
    problems: list[Problem]


def output_suffix(src: Path, fmt: str) -> str:
    if fmt == "same":
        suffix = src.suffix.lower()
        return suffix if suffix in SAME_SUFFIXES else ".png"
    return OUTPUT_SUFFIX[fmt]


def _walk(folder: Path, pattern: str | None) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if pattern is not None:
                if not (fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(name, pattern)):
                    continue
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found.append(path)
    return found


def plan_jobs(sources: list[Path], dst_root: Path, *, fmt: str = "same", suffix: str = "",
              glob: str | None = None, overwrite: bool = False,
              suffix_of: Callable[[Path], str] | None = None) -> Plan:
    """Map every input to ``dst_root/<path relative to its source folder>`` and sort out what to do.

    A file given directly goes to ``dst_root/<name>``. Two inputs that would write the same output,
    or an output that would replace an input, are problems, never silent overwrites. ``suffix_of``
    chooses the output file type per input (default: from ``fmt``)."""
    plan = Plan([], [], [])
    pairs: list[tuple[Path, Path]] = []
    for src in sources:
        if src.is_dir():
            pairs += [(p, p.relative_to(src)) for p in _walk(src, glob)]
        elif src.is_file():
            pairs.append((src, Path(src.name)))
        else:
            plan.problems.append(Problem(src, "no such file or folder"))
    inputs = {p.resolve() for p, _ in pairs}
    claimed: dict[Path, Path] = {}
    for src, rel in pairs:
        ext = suffix_of(src) if suffix_of is not None else output_suffix(src, fmt)
        dst = dst_root / rel.parent / f"{rel.stem}{suffix}{ext}"
        key = dst.resolve()
        if key in inputs:
            plan.problems.append(Problem(src, f"output {dst} would replace an input; use another "
                                              "destination or --suffix"))
        elif key in claimed:
            plan.problems.append(Problem(src, f"output {dst} is also the output of {claimed[key]}; "
                                              "rename one or use --format same"))
        else:
            claimed[key] = src
            job = Job(src, dst)
            (plan.skipped if dst.exists() and not overwrite else plan.todo).append(job)
    return plan


def remove_stale_temps(folders: set[Path]) -> int:
    """Delete temporary files left in these folders by pixbatch runs that were killed."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{TEMP_MARK}*.tmp"):
            pid = path.name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
