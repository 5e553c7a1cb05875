"""Shared state of one invocation, the summary and the exit codes.

Exit codes: 0 all done; 1 could not start (one clear message); 2 usage error (Click);
123 some inputs failed (the rest were processed)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import click

EXIT_OK, EXIT_STARTUP, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 123


EXIT_INTERRUPTED = 130


def video_file_name(src, dst: Path, one_output: bool, masks: bool, encoding) -> str:
    """The name of a DST that names a video file (``out.mkv``): the output of one video given directly, in
    the container its suffix says, when the codec fits that container; else a usage error."""
    import os

    from pixbatch.io.discover import is_video_input
    from pixbatch.io.video_encoding import FITS, main_codec

    ctx = click.get_current_context(silent=True)
    if not one_output:
        raise click.UsageError(f"DST {dst} names a file, but this command writes several files per video: give a "
                               "folder", ctx)
    if encoding.frames:
        raise click.UsageError(f"DST {dst} names a video file, but --format writes a video's frames as images: "
                               "give a folder", ctx)
    if len(src) != 1 or os.path.isdir(src[0]) or not is_video_input(Path(src[0])):
        raise click.UsageError(f"DST {dst} names a video file: give one video as SRC, or a folder as DST", ctx)
    codec, fits = main_codec(masks, Path(src[0]).suffix, encoding), FITS.get(dst.suffix.lower(), set())
    if codec not in fits:
        fix = f"choose --codec {' or '.join(sorted(fits))}" if fits else f"pixbatch writes {', '.join(sorted(FITS))}"
        raise click.UsageError(f"DST {dst}: a {dst.suffix} file cannot hold {codec} video; name a .mkv file or {fix}",
                               ctx)
    return dst.name


@dataclass
class App:
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    device: str = "auto"
    as_json: bool = False
    report: Any = None  # the run's report while it runs, for a partial summary when interrupted
    ray: dict = field(default_factory=dict)  # --ray options, when given
    make_runner: Any = None  # builds the runner as start_runner did (on Ray workers)
    runner: Any = None
    loaded: Any = None  # the model, when planning had to load it (``model_scale``); start_runner takes it
    file_errors: list = field(default_factory=list)  # (path, reason) of inputs eval/train had to leave out

    current: ClassVar[App | None] = None  # this invocation's App, for main()

    @property
    def progress(self) -> bool:
        return self.verbosity >= 0 and sys.stderr.isatty()

    def log(self, message: str) -> None:
        """An error or note on stderr, shown even with -q."""
        click.echo(message, err=True)

    def notice(self, message: str) -> None:
        """A line on stderr unless -q (before a long wait, say)."""
        if self.verbosity >= 0:
            click.echo(message, err=True)

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            click.echo(message, err=True)

    def file_error(self, path, reason: str) -> None:
        """One input that a command outside the engine (eval, train) could not use: one line, and the
        command ends with exit code 123 (``exit_for_file_errors``)."""
        from pixbatch.runtime.jobs import error_line

        self.file_errors.append((str(path), reason))
        click.echo(error_line(path, reason), err=True)

    def exit_for_file_errors(self) -> None:
        if self.file_errors:
            sys.exit(EXIT_SOME_FAILED)

    def fail_start(self, message: str) -> None:
        from pixbatch.runtime.jobs import one_line

        click.echo(f"error: {one_line(message)}", err=True)
        if self.as_json:
            click.echo(json.dumps({"error": message, "exit_code": EXIT_STARTUP}, indent=2))
        sys.exit(EXIT_STARTUP)

    def plan(self, src, dst, *, one_output: bool = True, video=None, **kw):
        """(the job plan, the output folder), before torch or a model loads. A missing input is one
        start-up error, and nothing to find ends the command here, saying where it looked (exit 0). A DST
        that names an image file (``out.png``) is the output file of a single input file, for a command
        that writes one output per image (``one_output``); elsewhere it is a usage error, not a folder.
        ``video`` (masks?, VideoEncoding): a video's output takes its codec's container (io/video.py)."""
        import os

        from pixbatch.io.discover import OUTPUT_SUFFIX, output_file_suffix, plan_jobs
        from pixbatch.io.video import VIDEO_SUFFIXES
        from pixbatch.runtime.jobs import Report, one_line

        if video is not None:
            from pixbatch.io.video_encoding import main_suffix

            masks, encoding = video
            kw["video_suffix"] = lambda p: main_suffix(masks, p.suffix, encoding)
        dst_root, suffix_of = dst, kw.get("suffix_of")
        file_suffix = output_file_suffix(dst)
        if file_suffix is not None:
            ctx = click.get_current_context(silent=True)
            command = ctx.command_path if ctx is not None else "pixbatch"
            if not one_output:
                raise click.UsageError(f"DST {dst} names a file, but {command} writes several files per image: "
                                       "give a folder", ctx)
            if len(src) != 1 or os.path.isdir(src[0]):
                raise click.UsageError(f"DST {dst} names a file: give a folder for a folder or several inputs", ctx)
            writes = {".jpeg": ".jpg", ".tiff": ".tif"}.get(file_suffix, file_suffix)
            if writes not in OUTPUT_SUFFIX.values():
                raise click.UsageError(f"DST {dst}: pixbatch writes .png, .jpg, .webp or .tif files", ctx)
            fmt = kw.get("fmt", "same")
            if fmt != "same" and OUTPUT_SUFFIX[fmt] != writes:
                raise click.UsageError(f"--format {fmt} does not match DST {dst}", ctx)
            dst_root, kw["output_name"] = dst.parent, dst.name
        elif video is not None and dst.suffix.lower() in VIDEO_SUFFIXES and not os.path.isdir(dst):
            dst_root, kw["output_name"] = dst.parent, video_file_name(src, dst, one_output, *video)
        elif os.path.lexists(dst) and not os.path.isdir(dst):
            raise click.UsageError(f"DST {dst} is a file, not a folder", click.get_current_context(silent=True))
        try:
            plan = plan_jobs(list(src), dst_root, **kw)
        except FileNotFoundError as exc:
            self.fail_start(str(exc))
        if file_suffix not in (None, ".tif", ".tiff") and suffix_of is not None and suffix_of(src[0]) == ".tif":
            # an output too large for memory is written tile by tile, into a TIFF only
            from pixbatch.io.discover import Problem

            plan.problems += [Problem(job.src, "its output is above --max-pixels: name a .tif DST (written tile by "
                                               "tile) or raise --max-pixels") for job in plan.todo]
            plan.todo = []
        if not (plan.todo or plan.skipped or plan.problems):
            where = ", ".join(one_line(p) for p in src)
            self.log(f"no images found in {where}" + (f" (glob: {one_line(kw['glob'])})" if kw.get("glob") else ""))
            self.finish(Report())
        return plan, dst_root

    def huge_outputs(self, fmt: str, max_pixels: int, factor):
        """For ``plan``: each input's output suffix, ".tif" (written tile by tile) where the output, of
        ``factor()`` times the input's edges, is above ``max_pixels``; None when there is no limit.
        ``factor`` is asked once, when the first input is planned."""
        if not max_pixels:
            return None
        from functools import cache

        from pixbatch.io.discover import header_pixels, output_suffix

        area = cache(lambda: factor() ** 2)

        def suffix_of(path) -> str:
            pixels = header_pixels(path)
            return ".tif" if pixels is not None and pixels * area() > max_pixels else output_suffix(path, fmt)

        return suffix_of

    def model_scale(self, model) -> int:
        """The scale of the model a spec names, loading it only when neither the spec nor the task's
        defaults say (a checkpoint file); the loaded model is kept for ``start_runner``."""
        if model.scale is not None:
            return model.scale
        if model.name is None:
            from pixbatch.cli.session import TASK_DEFAULTS

            return TASK_DEFAULTS[model.task].scale
        from pixbatch.cli.session import load_model
        from pixbatch.runtime.device import StartupError

        try:
            self.loaded = load_model(model)
        except StartupError as exc:
            self.fail_start(str(exc))
        return self.loaded.info.scale

    def start_runner(self, plan, dst, spec):
        """The prepared model of a planned job (``spec``: a JobSpec), after checking DST is writable;
        else exit 1."""
        from pixbatch.cli.session import load_runner
        from pixbatch.io.discover import header_pixels
        from pixbatch.runtime.device import StartupError
        from pixbatch.runtime.sinks import check_destination

        if self.ray and "address" not in self.ray:
            raise click.UsageError("--ray-workers and --ray-gpus-per-worker need --ray")
        # input pixels, from headers planning has read already
        sizing = {"n_jobs": len(plan.todo), "job_pixels": sum(header_pixels(j.src) or 0 for j in plan.todo)}
        compute = spec.compute
        if compute.calibrate_on_input:  # int8 calibrated on the job's first images (Ray's workers too)
            from dataclasses import replace

            from pixbatch.io.discover import is_video_input
            from pixbatch.tasks.calibration import MAX_INPUTS

            images = [str(j.src) for j in plan.todo[: 4 * MAX_INPUTS] if not is_video_input(j.src)]
            compute = replace(compute, calibrate_on=tuple(images[:MAX_INPUTS]))
        self.make_runner = partial(load_runner, spec.model, compute, **sizing)
        try:
            if self.ray:  # before the model loads: a missing extra is an instant error
                from pixbatch.runtime.ray_executor import require_ray

                require_ray()
            loaded, self.loaded = self.loaded, None
            runner = load_runner(spec.model, compute, **sizing, info=self.info, loaded=loaded, notice=self.notice)
            check_destination(dst)
        except StartupError as exc:
            self.fail_start(str(exc))
        self.runner = runner
        return runner

    def run(self, make_task, plan, spec) -> None:
        """Run a planned job through the engine (here, or on Ray with --ray), print the summary and exit.
        ``make_task(runner)`` builds the task; Ray workers build it again around their own runner."""
        from pixbatch.runtime.engine import run_job
        from pixbatch.runtime.jobs import Report

        self.report = Report()
        self.info(f"{len(plan.todo)} to do, {len(plan.skipped)} already done, {len(plan.problems)} problem(s)")
        task = make_task(self.runner)
        if self.ray:  # start_runner made sure it names an address
            from pixbatch.runtime.device import StartupError
            from pixbatch.runtime.ray_executor import RaySettings, run_on_ray

            settings = RaySettings(**self.ray)
            try:
                run_on_ray(make_task, task, self.make_runner, plan, spec, settings, progress=self.progress,
                           log=self.log, info=self.info, report=self.report, verbose=self.verbosity >= 1)
            except StartupError as exc:
                self.fail_start(str(exc))
        else:
            run_job(task, plan, spec, progress=self.progress, log=self.log, info=self.info, report=self.report)
        self.info("settings: " + ", ".join(f"{k}={v}" for k, v in self.report.settings.items()))
        self.finish(self.report)

    def finish(self, report, *, interrupted: bool = False) -> None:
        """Print the summary (stdout) and exit with the report's code (130 when interrupted)."""
        if self.as_json:
            click.echo(json.dumps({**report.as_dict(), "interrupted": interrupted}, indent=2))
        elif self.verbosity >= 0:
            d = report.as_dict()
            line = (f"{'interrupted: ' if interrupted else ''}done {d['done']}, skipped {d['skipped']}, "
                    f"failed {d['failed']} in {d['seconds']:.1f} s"
                    f" ({d['images_per_s']:.2f} images/s, {d['output_mp_per_s']:.2f} MP/s out)")
            click.echo(line)
            if report.fp32_reruns:
                click.echo(f"{report.fp32_reruns} tile(s) were not finite in reduced precision and ran again in fp32")
            if report.big_outputs:
                click.echo(f"note: {report.big_outputs} output(s) above --max-pixels were written tile by tile as "
                           "tiled BigTIFFs (.tif), never whole in memory")
            if report.multi_frame:
                click.echo(f"note: {report.multi_frame} input(s) had several frames or pages (animated GIF/PNG/WebP, "
                           "multi-page TIFF): only the first was processed")
        sys.exit(EXIT_INTERRUPTED if interrupted else report.exit_code)
