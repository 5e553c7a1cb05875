"""The benchmark scripts' variant code runs and agrees with the references (timings are not tested)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_kernel_benchmark_variants_check():
    env = {**os.environ}
    if "TRITON_INTERPRET" not in env:
        import torch

        if not torch.cuda.is_available():
            env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_conv_pixel_shuffle.py"), "--check"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok Layer(") >= 4


@pytest.mark.slow
def test_model_benchmark_variants_check():
    """Every model-level variant (channels-last, AMP, pixbatch default, ...) runs on every shipped model
    and agrees with the fp32 baseline."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_models.py"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "pixbatch default" in done.stdout and "check:" in done.stdout


def test_bench_command_reports_stages_and_the_plain_loop(tmp_path):
    import json

    from click.testing import CliRunner

    from pixbatch.cli import cli

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--images", "2", "--size", "32", "--photos", str(REPO / "examples"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "<- bottleneck" in result.output and "plain eager loop" in result.output
    figures = json.loads(out.read_text())
    assert {"decode", "compute", "encode"} <= set(figures["stages"]) and figures["bottleneck"] in figures["stages"]
    assert figures["pipeline"]["images_per_s"] > 0 and figures["efficiency"] > 0
