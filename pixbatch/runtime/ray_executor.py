"""Run a job on a Ray cluster with Ray Data: the same engine, spread over processes and machines.

The driver plans (discovery, resume: only missing outputs are scheduled) and keeps the report, the
error lines and the progress bar. Ray tasks claim each output and decode its input; an actor pool
(``map_batches`` with a callable class; one GPU per actor where asked, CPU actors otherwise) holds the
prepared model and runs each batch of decoded images through ``run_job`` — the one engine, so windows,
batching, post-processing, encoding and the atomic temp-file-then-rename writes into the mirrored
tree are those of a single-process run. A huge tiled TIFF is not decoded by a task: its whole job,
region reads and tiled writes included, is one unit of work on one actor.

Claims carry the driver's name, so the decode task that claims an output and the actor that writes
it act as one run; a killed worker's batch is retried by Ray (outputs already written are found and
kept), and a killed driver leaves only claims and temporary files that the next run removes."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pixbatch.io.discover import Job, Plan
from pixbatch.io.video_encoding import Span
from pixbatch.runtime.device import StartupError
from pixbatch.runtime.engine import split_jobs
from pixbatch.runtime.jobs import Report, begin_run, error_line, one_line
from pixbatch.runtime.sources import decode_job
from pixbatch.runtime.spec import JobSpec
from pixbatch.runtime.task import Task

RAY_MISSING = '--ray needs Ray: pip install "pixbatch[ray]"'


@dataclass(frozen=True)
class RaySettings:
    address: str = "auto"  # "auto" (RAY_ADDRESS or a running cluster), "local", or a cluster address
    workers: int | None = None  # model actors; None = one per GPU, else 1 per 2 CPUs
    gpus_per_worker: float | None = None  # None = 1 where the cluster has GPUs, else CPU workers
    batch_size: int = 4  # images per actor call (the engine batches windows within it)


def quiet_ray_logs() -> None:
    import logging

    for name in ("ray", "ray.data", "ray._private", "ray.data._internal"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        for handler in logger.handlers:
            handler.setLevel(logging.ERROR)


def reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a cluster address (Ray retries for long)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot connect to Ray at {address} ({exc.strerror if isinstance(exc, OSError) else exc}); "
                           "start a cluster with `ray start --head`, or use --ray local") from None


def require_ray():
    """The ray module, or a StartupError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise StartupError(RAY_MISSING) from None
    return ray


# Ray's own lines on the driver's stderr: its C++ core log ("[2026-12-06 04:45:43,671 I 11537 11537]
# logging.cc:303: ...", printed even to say that nothing below fatal level will be), and what it forwards
# from its processes, prefixed with their name ("(raylet) Task ... failed", often coloured).
RAY_NATIVE_LOG = re.compile(rb"^(\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] \S+:\d+: "
                            rb"|(\x1b\[[\d;]*m)?\((raylet|gcs_server|autoscaler|monitor|dashboard)\b"
                            rb"|(\x1b\[[\d;]*m)?\([^\n]*? pid=\d+[,)])")


@contextlib.contextmanager
def native_logs_shown(show: bool) -> Iterator[None]:
    """While Ray runs in this process, its own lines on stderr are shown only when ``show`` (-v); every
    other line (pixbatch's own) passes through in order. Processes Ray starts inherit the pipe, so the
    pump may outlive the block: it then goes on filtering into the real stderr until they end."""
    sys.stderr.flush()
    saved, (read, write) = os.dup(2), os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if show or not RAY_NATIVE_LOG.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="pixbatch-ray-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # this process no longer writes into the pipe
        thread.join(timeout=2)
        if not thread.is_alive():  # else the pump still writes to ``saved`` for Ray's processes
            os.close(saved)


def connect(settings: RaySettings) -> dict:
    """Join (or start) the cluster; its resources. Not installed, or not reachable: StartupError."""
    ray = require_ray()
    if not ray.is_initialized():
        # Ray's own notices (deprecations, actor-restart caveats, progress) are not the user's business here
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        quiet_ray_logs()
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if settings.address not in ("auto", "local"):
            reachable(settings.address)
        on_term = signal.getsignal(signal.SIGTERM)
        try:
            if settings.address == "local":
                ray.init(**kwargs)
            else:
                ray.init(address=settings.address, **kwargs)
        except Exception as exc:  # no cluster at that address, version mismatch, ...
            where = "RAY_ADDRESS or a running cluster" if settings.address == "auto" else settings.address
            raise StartupError(f"cannot connect to Ray ({where}): {one_line(exc)}; start one with "
                               "`ray start --head`, or use --ray local") from None
        finally:
            if on_term is not None and threading.current_thread() is threading.main_thread():
                # Ray's core installs a native SIGTERM handler that dumps a stack and aborts (exit 134):
                # SIGTERM unwinds like Ctrl-C again (writers finish, a summary, exit 130)
                signal.signal(signal.SIGTERM, on_term)
    from ray.data import DataContext

    context = DataContext.get_current()  # pixbatch draws its own progress bar and summary
    context.enable_progress_bars = context.print_on_execution_start = context.enable_auto_log_stats = False
    quiet_ray_logs()
    return ray.cluster_resources()


def split_videos(videos: list[Job], workers: int, spec: JobSpec, owner: str) -> dict[Job, list[Span]]:
    """The videos to split at keyframes, each into up to one part per worker (``split_at_keyframes``; parts
    of at least --segment-frames frames), and claimed here: the run holds a split video's claim until its
    parts are joined. Not split: a clip (--start/--duration), or a video whose claim is not ours."""
    from pixbatch.io import claims
    from pixbatch.io.video_parts import split_at_keyframes

    if workers < 2 or spec.video.start or spec.video.duration is not None:
        return {}
    split = {}
    for job in videos:
        try:
            spans = split_at_keyframes(job.src, workers, spec.video.segment_frames)
        except Exception:  # unreadable: run whole, by an actor that says why
            continue
        try:
            if spans and claims.claim(job.dst, owner):
                split[job] = spans
        except OSError:  # the claim cannot be written: run whole, by an actor that books why
            continue
    return split


def join_split(task: Task, job: Job, spans: list[Span], spec: JobSpec, *, failed: bool, report: Report,
               log: Callable[[str], None], info: Callable[[str], None]) -> None:
    """Book a split video once its parts have run: joined and committed (``join_spans``), or, when a part
    failed (its error line is out), its finished parts removed."""
    from pixbatch.io.atomic import OutputExistsError
    from pixbatch.io.video import VideoError
    from pixbatch.io.video_parts import remove_parts
    from pixbatch.runtime.video import join_spans

    if failed:
        remove_parts(job.dst)
        return
    try:
        notes = join_spans(task, job, spec, spans)
    except OutputExistsError:
        report.skipped += 1
        info(f"note: {job.src}: another run wrote its output first; it is kept")
        return
    except (VideoError, OSError) as exc:
        report.failed.append((str(job.src), f"cannot join its parts ({exc})"))
        log(error_line(job.src, f"cannot join its parts ({exc})"))
        return
    report.done += 1
    for note in dict.fromkeys(notes):
        info(f"note: {job.src}: {note}")


def decode_row(row: dict, max_pixels: int, owner: str, overwrite: bool) -> dict:
    """A Ray task: claim the output and decode the input (a streamed TIFF is left to its actor)."""
    job = Job(Path(row["src"]), Path(row["dst"]))
    if row["streamed"]:
        return {**row, "payload": b"", "error": ""}
    arr, meta, error = decode_job(job, max_pixels, owner, overwrite)
    return {**row, "payload": pickle.dumps((arr, meta), protocol=5) if arr is not None else b"", "error": error}


class EngineActor:
    """One model replica: builds the runner (``make_runner()``, as the driver built its own) and the task
    once, then runs batches through ``run_job``."""

    def __init__(self, make_runner: Callable, make_task: Callable, spec: JobSpec, owner: str, threads: int) -> None:
        import torch

        if threads:  # Ray pins OMP to the actor's CPU reservation; compute uses this node's share of cores
            torch.set_num_threads(threads)
        self.task = make_task(make_runner())
        self.spec, self.owner = spec, owner

    def __call__(self, batch: dict) -> dict:
        from pixbatch.runtime.engine import run_job

        spans = batch["span"] if "span" in batch else [""] * len(batch["src"])
        jobs = [Job(Path(s), Path(d), Span(**json.loads(span)) if span else None)
                for s, d, span in zip(batch["src"], batch["dst"], spans)]
        in_memory, _, _ = split_jobs(self.task, jobs)
        by_job = {Job(Path(s), Path(d)): (p, e) for s, d, p, e in
                  zip(batch["src"], batch["dst"], batch["payload"], batch["error"])}
        records = []
        for i, job in enumerate(in_memory):
            payload, error = by_job[job]
            arr, meta = pickle.loads(payload) if payload else (None, None)
            records.append((i, arr, meta, str(error)))
        report = run_job(self.task, Plan(todo=jobs, skipped=[], problems=[]), self.spec, log=lambda line: None,
                         decoded=records, owner=self.owner)
        return {"report": [json.dumps(report.as_dict())], "jobs": [len(jobs)]}


def run_on_ray(make_task: Callable, task: Task, make_runner: Callable, plan: Plan, spec: JobSpec,
               settings: RaySettings, *, progress: bool, log: Callable[[str], None],
               info: Callable[[str], None], report: Report, verbose: bool = False) -> Report:
    """Run a planned job on Ray; ``task`` (built on the driver) decides which inputs stream. Ray's own
    log lines show only when ``verbose``; a connection this call made (and a local cluster it started)
    is closed before it returns, also when interrupted."""
    ray = require_ray()
    started = not ray.is_initialized()
    with native_logs_shown(verbose):
        try:
            resources = connect(settings)
            return _run(make_task, task, make_runner, plan, spec, settings, resources, progress=progress, log=log,
                        info=info, report=report)
        finally:
            if started and ray.is_initialized():
                ray.shutdown()  # a local cluster's processes go with it


def _run(make_task: Callable, task: Task, make_runner: Callable, plan: Plan, spec: JobSpec, settings: RaySettings,
         resources: dict, *, progress: bool, log: Callable[[str], None], info: Callable[[str], None],
         report: Report) -> Report:
    import ray
    from tqdm import tqdm

    from pixbatch.io import claims

    start = time.perf_counter()
    begin_run(plan, report, log, info)
    owner = claims.owner_token()
    has_gpus = resources.get("GPU", 0) > 0
    gpus = settings.gpus_per_worker if settings.gpus_per_worker is not None else (1.0 if has_gpus else 0.0)
    workers = settings.workers or (max(1, int(resources.get("GPU", 0) // gpus)) if gpus
                                   else max(1, int(resources.get("CPU", 1)) // 2))
    info(f"ray: {workers} model worker(s) on {int(resources.get('CPU', 0))} CPU(s) and "
         f"{int(resources.get('GPU', 0))} GPU(s) of the cluster")
    _, streamed, videos = split_jobs(task, plan.todo)
    split = split_videos(videos, workers, spec, owner)
    streamed_set = set(streamed) | set(videos)  # read by the actor that runs them (a video: frame by frame)
    # absolute paths: workers do not share the driver's working directory
    rows = [{"src": os.path.abspath(j.src), "dst": os.path.abspath(j.dst), "streamed": j in streamed_set}
            for j in plan.todo if j not in split]
    span_rows = [{"src": os.path.abspath(j.src), "dst": os.path.abspath(j.dst), "streamed": True,
                  "span": json.dumps(asdict(span))} for j, spans in split.items() for span in spans]
    for job, spans in split.items():
        info(f"ray: {job.src}: split at keyframes into {len(spans)} parts of "
             f"{', '.join(str(s.frames) for s in spans)} frames")
    given_paths = {os.path.abspath(j.src): j.src for j in plan.todo}
    split_sources = {os.path.abspath(j.src) for j in split}
    failed_videos: set[str] = set()  # a split video's first failed part says why; the others do not repeat it
    cpus = int(resources.get("CPU", 2))
    threads = 0 if gpus else max(1, cpus // workers)
    # CPU reservations leave room for the decode tasks (the actors' threads are set apart)
    actor_cpus = 1.0 if gpus else min(1.0, 0.75 * cpus / workers)
    bar = tqdm(total=len(rows) + len(span_rows), unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    settings_seen: dict = {}

    def absorb(out: dict) -> None:
        nonlocal settings_seen
        part = json.loads(out["report"])
        for error in part["errors"]:  # paths as the user named them, as in one process
            if error["path"] in failed_videos:
                continue
            if error["path"] in split_sources:
                failed_videos.add(error["path"])
            given = str(given_paths.get(error["path"], error["path"]))
            report.failed.append((given, error["reason"]))
            log(error_line(given, error["reason"]))
        report.done += part["done"]
        report.skipped += part["skipped"]
        report.input_mp += part["input_mp"]
        report.output_mp += part["output_mp"]
        for key in ("fp32_reruns", "oom_retries", "multi_frame", "big_outputs"):
            setattr(report, key, getattr(report, key) + part[key])
        settings_seen = settings_seen or part["settings"]
        bar.update(int(out["jobs"]))

    def stream(items: list[dict], batch_size: int, one_each: bool) -> None:
        """Run ``items`` through the actor pool; ``one_each``: one item per actor at a time (the parts of a
        split video go to different actors)."""
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 200))
        ds = ds.map(decode_row, fn_kwargs={"max_pixels": spec.max_pixels, "owner": owner,
                                            "overwrite": spec.encode.overwrite}, num_cpus=0.25)
        pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1 if one_each else None)
        ds = ds.map_batches(
            EngineActor, batch_size=batch_size, compute=pool, num_gpus=gpus or None, num_cpus=actor_cpus,
            fn_constructor_kwargs={"make_runner": make_runner, "make_task": make_task, "spec": spec,
                                   "owner": owner, "threads": threads})
        results = iter(ds.iter_rows())  # a generator: closed below
        try:
            for out in results:
                absorb(out)
        finally:  # interrupted: Ray's iterator is closed while the cluster is up (collected after
            results.close()  # ray.shutdown, its clean-up printed a traceback and Ray's log lines)

    try:
        if rows:
            stream(rows, settings.batch_size, False)
        if span_rows:
            stream(span_rows, 1, True)
        for job, spans in split.items():
            join_split(task, job, spans, spec, failed=os.path.abspath(job.src) in failed_videos, report=report,
                       log=log, info=info)
    finally:
        bar.close()
        for job in plan.todo:
            claims.release(job.dst, owner)
    report.seconds = time.perf_counter() - start
    report.settings = {**settings_seen, "executor": "ray", "ray_workers": workers,
                       "ray_gpus_per_worker": gpus, "ray_address": settings.address, "workers": None}
    return report
