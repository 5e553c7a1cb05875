"""The ahead-of-time compile of every kernel autotune entry takes about 100 s of one core. It starts in
the background as soon as the session has collected its test, which then runs last, so the compile
overlaps the rest of the suite (which keeps about one of two cores busy on average) instead of adding to
its time. It runs at the lowest priority, so it takes only what the tests leave idle."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

AOT_TEST = "test_every_autotune_entry_compiles_for_sm80_and_sm90a_within_limits"


def start_aot(config: pytest.Config) -> dict:
    """The background compile (started once per session): its process, JSON result and log paths."""
    if not hasattr(config, "pixbatch_aot"):
        folder = Path(tempfile.mkdtemp(prefix="pixbatch-aot-"))
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled, not interpreted
        log = open(folder / "log.txt", "w")  # closed when the test collects the result
        proc = subprocess.Popen([sys.executable, "-m", "pixbatch.kernels.aot", "--arch", "80", "90",
                                 "--dtypes", "bf16,fp32", "--jobs", "1", "--out", str(folder / "aot.json")],
                                stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.nice(19))
        config.pixbatch_aot = {"proc": proc, "out": folder / "aot.json", "log": log, "log_path": folder / "log.txt"}
    return config.pixbatch_aot


def pytest_collection_modifyitems(session, config, items) -> None:
    """Start the compile, and move its test to the end of the run, so the whole suite overlaps it."""
    aot = [item for item in items if item.name == AOT_TEST]
    if aot:
        start_aot(config)
        items[:] = [item for item in items if item.name != AOT_TEST] + aot


@pytest.fixture()
def aot_run(request) -> dict:
    return start_aot(request.config)


def pytest_sessionfinish(session, exitstatus) -> None:
    proc = getattr(session.config, "pixbatch_aot", {}).get("proc")
    if proc is not None and proc.poll() is None:  # its test was not reached (-x, interrupted)
        proc.kill()
        proc.wait()
