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
