"""Bookkeeping of a job: the report, the progress bar, per-file errors, and a
bounded pool of writer threads (back-pressure: a few encoded-but-unwritten images at most)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pixbatch.io import claims
from pixbatch.io.atomic import OutputExistsError
from pixbatch.io.discover import Plan, remove_stale_temps

CLAIMED_ELSEWHERE = "\0claimed"  # a decode record's error: another run is making this output


def claim_output(dst: Path, owner: str, overwrite: bool) -> str:
    """Claim a job's output before its input is decoded: "" when it is this run's to make,
    ``CLAIMED_ELSEWHERE`` when another live run holds it or has written it since planning (unless
    ``overwrite``), else why it cannot be claimed (a full disk fails that image, not the run)."""
    try:
        if not claims.claim(dst, owner):
            return CLAIMED_ELSEWHERE
    except OSError as exc:
        return f"cannot claim its output in {dst.parent} ({exc.strerror or exc})"
    if not overwrite and os.path.lexists(dst):  # another run finished it after this one planned
        claims.release(dst, owner)
        return CLAIMED_ELSEWHERE
    return ""


@dataclass
class Report:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    input_mp: float = 0.0
    output_mp: float = 0.0
    fp32_reruns: int = 0
    oom_retries: int = 0
    multi_frame: int = 0  # inputs with several frames or pages, of which the first was processed
    big_outputs: int = 0  # outputs above --max-pixels, written tile by tile as tiled BigTIFFs
    settings: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 123 if self.failed else 0

    def as_dict(self) -> dict:
        t = max(self.seconds, 1e-9)
        return {
            "done": self.done, "skipped": self.skipped, "failed": len(self.failed),
            "errors": [{"path": p, "reason": r} for p, r in self.failed],
            "seconds": round(self.seconds, 3), "images_per_s": round(self.done / t, 3),
            "input_mp": round(self.input_mp, 3), "output_mp": round(self.output_mp, 3),
            "output_mp_per_s": round(self.output_mp / t, 3),
            "fp32_reruns": self.fp32_reruns, "oom_retries": self.oom_retries, "multi_frame": self.multi_frame,
            "big_outputs": self.big_outputs,
            "settings": self.settings,
        }


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}


def one_line(text: object) -> str:
    """A path or reason as it goes into a line of the report: control characters (a newline in a
    file name, a multi-line exception) are escaped, so every error stays exactly one line."""
    return str(text).translate(_CONTROL)


def error_line(path: object, reason: str) -> str:
    """The one form every rejected input is reported in: ``error: PATH: reason``, on one line."""
    return f"error: {one_line(path)}: {one_line(reason)}"


def begin_run(plan: Plan, report: Report, log: Callable[[str], None], info: Callable[[str], None]) -> None:
    """What every executor does before any work: count what is already done, report the plan's
    problems (one line each) and notes, and remove what killed runs left in the output folders
    (temporary files, claims)."""
    report.skipped = len(plan.skipped)
    for problem in plan.problems:
        report.failed.append((str(problem.path), problem.reason))
        log(error_line(problem.path, problem.reason))
    for note in plan.notes:
        info(f"note: {one_line(note)}")
    folders = {j.dst.parent for j in plan.todo + plan.skipped}  # finished folders too
    remove_stale_temps(folders)
    for folder in folders:
        if folder.is_dir():
            claims.remove_stale_claims(folder)


class JobBook:
    """Starts a run from its plan (known problems reported, stale temporary files removed) and keeps
    its report; ``write`` runs an encoder in the pool and turns its outcome into done/skipped/failed."""

    def __init__(self, plan: Plan, report: Report, *, writers: int | None, progress: bool,
                 log: Callable[[str], None], info: Callable[[str], None] | None = None,
                 owner: str | None = None) -> None:
        from tqdm import tqdm

        self.report, self.log, self.info = report, log, info or (lambda message: None)
        self.start = time.perf_counter()
        begin_run(plan, report, log, self.info)
        self.todo = plan.todo
        self.owner = owner or claims.owner_token()  # this run's name on the outputs it claims
        self.writers = writers or max(2, min(8, os.cpu_count() or 2))
        self.bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1)
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(2 * self.writers + 2)
        self.pool = ThreadPoolExecutor(max_workers=self.writers, thread_name_prefix="pixbatch-writer")
        self.futures: list[Future] = []

    def fail(self, path: Path, reason: str) -> None:
        with self.lock:
            self.report.failed.append((str(path), reason))
            self.log(error_line(path, reason))
            self.bar.update(1)

    def accept(self, path: Path, error: str, meta) -> bool:
        """Book one decode record (``error`` empty when ``meta`` holds the decoded image's metadata);
        True when the image goes on to the model."""
        if error == CLAIMED_ELSEWHERE:
            self.elsewhere(path)
        elif error:
            self.fail(path, error)
        else:
            self.decoded(path, meta.frames, meta.notes)
        return not error

    def decoded(self, path: Path, frames: int, notes: tuple[str, ...] = ()) -> None:
        """An input was read: count multi-frame files (only their first frame is processed) and pass
        the decoder's own warnings on to the verbose log."""
        with self.lock:
            if frames > 1:
                self.report.multi_frame += 1
            for note in notes:
                self.info(f"note: {one_line(path)}: {one_line(note)}")

    def claim(self, job, overwrite: bool) -> bool:
        """Claim a job's output before its work starts; False when it is not this run's to make (booked
        as another run's, or as failed when the claim cannot be written)."""
        reason = claim_output(job.dst, self.owner, overwrite)
        if reason == CLAIMED_ELSEWHERE:
            self.elsewhere(job.src)
        elif reason:
            self.fail(job.src, reason)
        return not reason

    def elsewhere(self, path: Path) -> None:
        """Another run holds the claim on this input's output: it is that run's work, not ours."""
        with self.lock:
            self.report.skipped += 1
            self.info(f"note: {one_line(path)}: its output is being written by another run")
            self.bar.update(1)

    def skipped(self, path: Path) -> None:
        """The output appeared meanwhile (another run wrote it): it is kept."""
        with self.lock:
            self.report.skipped += 1
            self.info(f"note: {one_line(path)}: another run wrote its output first; it is kept")
            self.bar.update(1)

    def done(self, input_mp: float, output_mp: float) -> None:
        with self.lock:
            self.report.done += 1
            self.report.input_mp += input_mp
            self.report.output_mp += output_mp
            elapsed = time.perf_counter() - self.start
            self.bar.set_postfix_str(f"{self.report.output_mp / max(elapsed, 1e-9):.1f} MP/s out", refresh=False)
            self.bar.update(1)

    def progressed(self, input_mp: float, output_mp: float) -> None:
        """Part of an input is done (a span of a split video): its megapixels count, the input not yet."""
        with self.lock:
            self.report.input_mp += input_mp
            self.report.output_mp += output_mp

    def write(self, src: Path, dst: Path, encode: Callable[[], tuple[float, float]]) -> None:
        """Run ``encode`` (returns input and output MP) in the writer pool, waiting for a free slot."""
        self.slots.acquire()
        self.futures.append(self.pool.submit(self._write, src, dst, encode))

    def _write(self, src: Path, dst: Path, encode: Callable[[], tuple[float, float]]) -> None:
        try:
            input_mp, output_mp = encode()
        except OutputExistsError:
            self.skipped(src)
            return
        except Exception as exc:
            self.fail(src, f"cannot write {dst}: {exc}")
            return
        finally:
            self.slots.release()
            claims.release(dst, self.owner)
        self.done(input_mp, output_mp)

    def wait(self) -> None:
        """Wait for every write (re-raising a writer's unexpected error)."""
        for f in self.futures:
            f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in self.todo:  # claims of images that failed or were interrupted
            claims.release(job.dst, self.owner)
        self.bar.close()
        self.report.seconds = time.perf_counter() - self.start
