"""Shared state of one invocation, the summary and the exit codes.

Exit codes: 0 all done; 1 could not start (one clear message); 2 usage error (Click);
123 some inputs failed (the rest were processed)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import click

EXIT_OK, EXIT_STARTUP, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 123


EXIT_INTERRUPTED = 130


@dataclass
class App:
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    device: str = "auto"
    as_json: bool = False
    report: Any = None  # the run's report while it runs, for a partial summary when interrupted

    current: ClassVar[App | None] = None  # this invocation's App, for main()

    @property
    def progress(self) -> bool:
        return self.verbosity >= 0 and sys.stderr.isatty()

    def log(self, message: str) -> None:
        """An error or note on stderr, shown even with -q."""
        click.echo(message, err=True)

    def info(self, message: str) -> None:
        if self.verbosity >= 1:
            click.echo(message, err=True)

    def fail_start(self, message: str) -> None:
        from pixbatch.runtime.jobs import one_line

        click.echo(f"error: {one_line(message)}", err=True)
        if self.as_json:
            click.echo(json.dumps({"error": message, "exit_code": EXIT_STARTUP}, indent=2))
        sys.exit(EXIT_STARTUP)

    def start_runner(self, plan, dst, model_name: str | None, scale: int | None, precision: str,
                     compile_: bool | None, channels_last: bool, *, kernels: str = "torch", task: str = "sr"):
        """The prepared model for a planned job, after checking DST is writable; else exit 1."""
        from pixbatch.runtime.device import StartupError
        from pixbatch.runtime.engine import check_destination
        from pixbatch.runtime.session import load_runner

        try:
            runner = load_runner(self.device, model_name, scale, precision, compile_, channels_last,
                                 n_jobs=len(plan.todo), kernels=kernels, task=task, info=self.info)
            check_destination(dst)
        except StartupError as exc:
            self.fail_start(str(exc))
        return runner

    def run(self, task, plan, opts) -> None:
        """Run a task's planned job through the engine, print the summary and exit."""
        from pixbatch.runtime.engine import run_job
        from pixbatch.runtime.jobs import Report

        self.report = Report()
        self.info(f"{len(plan.todo)} to do, {len(plan.skipped)} already done, {len(plan.problems)} problem(s)")
        run_job(task, plan, opts, progress=self.progress, log=self.log, info=self.info, report=self.report)
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
