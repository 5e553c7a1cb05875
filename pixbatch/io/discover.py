"""Walk the inputs, map each to its output path (mirroring the tree), skip finished outputs."""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pixbatch.io.atomic import FOREIGN_TEMP_TTL, HOST_ID, TEMP_MARK, remove
from pixbatch.io.video import VIDEO_SUFFIXES, sniff_video
from pixbatch.io.video_encoding import Span, VideoEncoding, main_suffix

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm",
                            ".pgm", ".pnm", ".tga"})
# Formats we write; anything else read in "same" mode is written as PNG.
OUTPUT_SUFFIX = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    span: Span | None = None  # a video split at keyframes (--ray): the part of its frames this job runs


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


@dataclass
class Plan:
    todo: list[Job]
    skipped: list[Job]
    problems: list[Problem]
    notes: list[str] = field(default_factory=list)  # what discovery left out on purpose, for -v


def is_video_input(path: Path) -> bool:
    """A video file: by its suffix, or (no image or video suffix) by its first bytes."""
    suffix = path.suffix.lower()
    return suffix in VIDEO_SUFFIXES or (suffix not in IMAGE_SUFFIXES and sniff_video(path))


def output_suffix(src: Path, fmt: str) -> str:
    """An image's output suffix for --format (a video's is its codec's container: io/video.py)."""
    if fmt == "same":
        suffix = src.suffix.lower()
        return suffix if suffix in SAME_SUFFIXES else ".png"
    return OUTPUT_SUFFIX[fmt]


def check_suffix(suffix: str) -> str:
    """An output-name suffix is part of a file name: no folder separators, no NUL."""
    if any(c in suffix for c in ("/", "\\", os.sep, os.altsep or "/", "\0")):
        raise ValueError(f"{suffix!r} cannot be part of a file name (no '/', backslash or NUL)")
    return suffix


def _stat_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as an input file, or None when it is a regular file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return "broken symbolic link (its target does not exist)"
        return exc.strerror or str(exc)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, socket or device is never read)"
    return None


def header_pixels(path: Path) -> int | None:
    """Width x height from the file's header (no decoding), None when it cannot be read."""
    return _header(path)[0]


def carries_output_mark(path: Path) -> bool:
    """Whether a file holds pixbatch's output mark (an earlier output of any pixbatch job). A file
    that cannot be opened has no mark (the decoder reports it properly)."""
    return path.suffix.lower() in SAME_SUFFIXES and _header(path)[1]


def _header(path: Path) -> tuple[int | None, bool]:
    """(pixels, output mark) of a file, from its header only; one read per file version, however
    often planning asks (``pixbatch upscale`` plans again once the model's scale is known)."""
    try:
        st = os.stat(path)
    except OSError:
        return None, False
    return _read_header(os.path.realpath(path), path.suffix.lower(), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _read_header(path: str, suffix: str, size: int, mtime_ns: int) -> tuple[int | None, bool]:
    from PIL import Image

    from pixbatch.io.decode import captured_messages
    from pixbatch.io.encode import OUTPUT_MARK

    mark = OUTPUT_MARK.encode()
    try:
        with captured_messages():  # a damaged file's complaints (Pillow warnings, tifffile logs) stay off stderr
            if suffix in (".tif", ".tiff"):  # tifffile reads any TIFF layout we write
                import tifffile

                with tifffile.TiffFile(path) as tf:
                    page = tf.pages[0]
                    tag = page.tags.get(305)
                    return page.imagelength * page.imagewidth, tag is not None and tag.value == OUTPUT_MARK
            with Image.open(path) as im:
                info = im.info
                return im.width * im.height, (info.get("pixbatch") == "output" or info.get("comment") == mark
                                              or mark in (info.get("xmp") or b""))
    except Exception:
        return None, False


def _walk(folder: Path, pattern: str | None, exclude: set[str], plan: Plan) -> list[Path]:
    """Image and video files under ``folder`` (sorted, hidden names skipped), never descending into a folder in
    ``exclude`` (real paths: the destination)."""
    found = []

    def unreadable(exc: OSError) -> None:
        plan.problems.append(Problem(Path(exc.filename or folder), f"cannot list folder ({exc.strerror or exc})"))

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        kept = []
        for d in sorted(dirs):
            sub = os.path.join(root, d)
            if d.startswith("."):
                continue
            if os.path.islink(sub):
                plan.notes.append(f"{sub}: a symbolic link to a folder, not followed (name it as an input to "
                                  "read it)")
                continue
            if os.path.realpath(sub) in exclude:
                plan.notes.append(f"{sub}: the destination folder, not read as input")
                continue
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if pattern is not None:
                if not (fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(name, pattern)):
                    continue
            elif path.suffix.lower() not in IMAGE_SUFFIXES and not is_video_input(path):
                continue
            found.append(path)
    return found


def output_file_suffix(dst: Path) -> str | None:
    """The suffix of a DST that names an image file rather than a folder (``out.png``), else None."""
    suffix = dst.suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES and not os.path.isdir(dst) else None


def plan_jobs(sources: list[Path], dst_root: Path, *, fmt: str = "same", suffix: str = "",
              glob: str | None = None, overwrite: bool = False,
              suffix_of: Callable[[Path], str] | None = None, output_name: str | None = None,
              video_suffix: Callable[[Path], str] | None = None) -> Plan:
    """Map every input to ``dst_root/<path relative to its source folder>`` and sort out what to do.

    A file given directly goes to ``dst_root/<name>``. Never read as inputs: the destination folder
    (when it lies inside a source folder), files that are this job's own outputs (``a_x2.png`` when
    ``a.png`` maps to it), and files in a folder that carry pixbatch's output mark (earlier outputs of
    any job; a marked file given directly is read). Problems, never silent
    overwrites or crashes: two inputs with one output, an output that would replace an input or land
    outside ``dst_root``, unreadable files (symbolic link loops, broken links, FIFOs, permissions).
    ``suffix_of`` chooses the output file type per input (default: from ``fmt``); ``output_name``
    names the output of a single file given directly (``upscale a.jpg out/b.png``); ``video_suffix``
    chooses a video's (default: its container, io/video.py)."""
    check_suffix(suffix)
    if sources and not any(os.path.lexists(s) for s in sources):
        raise FileNotFoundError(f"no such file or folder: {', '.join(map(str, sources))}")
    plan = Plan([], [], [])
    root_real = os.path.realpath(dst_root)
    pairs: list[tuple[Path, Path]] = []
    for src in sources:
        if os.path.isdir(src):
            pairs += [(p, p.relative_to(src)) for p in _walk(src, glob, {root_real}, plan)]
        elif os.path.lexists(src):
            pairs.append((src, Path(src.name)))
        else:
            plan.problems.append(Problem(src, "no such file or folder"))
    readable = []
    given = {os.path.realpath(s) for s in sources if not os.path.isdir(s)}
    for src, rel in pairs:
        reason = _stat_problem(src)
        if reason is not None:
            plan.problems.append(Problem(src, reason))
        elif os.path.realpath(src) not in given and carries_output_mark(src):
            plan.notes.append(f"{src}: written by pixbatch (an earlier output), not read as input; "
                              "name the file itself to process it")
        else:
            readable.append((src, rel))
    planned, folders = [], set()  # folders: outputs that are folders (a video's frames as images)
    for src, rel in readable:
        if is_video_input(src):
            ext = video_suffix(src) if video_suffix is not None else main_suffix(False, src.suffix, VideoEncoding())
        else:
            ext = suffix_of(src) if suffix_of is not None else output_suffix(src, fmt)
        planned.append((src, dst_root / rel.parent / (output_name or f"{rel.stem}{suffix}{ext}")))
        if not ext:
            folders.add(planned[-1][1])
    # An input that is the planned output of another input (and is not mapped onto itself) is this
    # job's own earlier output: ``a_x2.png`` beside ``a.png`` with --suffix _x2.
    outputs = {os.path.realpath(dst): src for src, dst in planned}
    jobs = []
    for src, dst in planned:
        src_real, key = os.path.realpath(src), os.path.realpath(dst)
        if src_real in outputs and key != src_real:
            plan.notes.append(f"{src}: the output of {outputs[src_real]}, not read as input")
        else:
            jobs.append((src, dst, key))
    inputs = {os.path.realpath(src) for src, _, _ in jobs}
    claimed: dict[str, Path] = {}
    hint = "rename one of them" if suffix_of is not None else "rename one or use --format same"
    for src, dst, key in jobs:
        if key in inputs:
            plan.problems.append(Problem(src, f"output {dst} would replace an input; use another "
                                              "destination or --suffix"))
        elif key in claimed:
            plan.problems.append(Problem(src, f"output {dst} is also the output of {claimed[key]}; {hint}"))
        elif os.path.commonpath([root_real, key]) != root_real:
            plan.problems.append(Problem(src, f"output {dst} would be written outside {dst_root} "
                                              "(through a symbolic link)"))
        elif os.path.islink(dst) and not os.path.exists(dst) and not overwrite:
            plan.problems.append(Problem(src, f"output {dst} is a broken symbolic link; remove it "
                                              "(or --overwrite replaces the link)"))
        elif os.path.isdir(dst) and dst not in folders:
            plan.problems.append(Problem(src, f"output {dst} is a folder"))
        else:
            claimed[key] = src
            job = Job(src, dst)
            (plan.skipped if os.path.exists(dst) and not overwrite else plan.todo).append(job)
    return plan


def remove_stale_temps(folders: set[Path]) -> int:
    """Delete temporary files left in these folders by pixbatch runs that were killed."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{TEMP_MARK}*.tmp"):
            parts = path.name.rsplit(TEMP_MARK, 1)[1].removesuffix(".tmp").split("-")
            pid, host = parts[0], parts[1] if len(parts) == 3 else HOST_ID
            try:
                if host != HOST_ID and time.time() - path.stat().st_mtime < FOREIGN_TEMP_TTL:
                    continue  # another host's run may still be writing it
            except OSError:
                continue
            if host == HOST_ID and pid.isdigit() and _alive(int(pid)):
                continue
            remove(path)  # a file, or a folder of video frames being joined
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


def read_names(path: Path) -> list[str]:
    """A list file: one image file name per line; blank lines and ``#`` comments skipped (``train sr
    --holdout`` and ``eval sr --only`` read them)."""
    names = [line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines()]
    return [n for n in names if n]


def image_paths(folders: list[Path]) -> list[Path]:
    """Every image file under the folders (recursively, by suffix), in a fixed order: the training sets of
    ``train sr`` and ``train style``."""
    return [p for folder in folders for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
