"""The Triton kernel compiles ahead of time for sm_80 and sm_90a on a machine without a GPU, every
autotune entry within those architectures' register and shared-memory limits (pixbatch.kernels.aot)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")


def test_every_autotune_entry_compiles_for_sm80_and_sm90a_within_limits(tmp_path):
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "pixbatch.kernels.aot", "--arch", "80", "90", "--dtypes", "bf16,fp32",
                           "--jobs", "2", "--out", str(out)], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    from pixbatch.kernels.conv_pixel_shuffle import AUTOTUNE_SPACE

    assert len(rows) == 2 * 2 * len(AUTOTUNE_SPACE)
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90a"}
    for row in rows:
        assert row["problems"] == [] and 0 < row["registers"] <= 255 and row["shared_bytes"] > 0
    # Autotuning always has a candidate that keeps everything in registers, on both architectures
    for arch in ("sm_80", "sm_90a"):
        for dtype in ("bf16", "fp32"):
            assert any(r["spill_store_bytes"] == 0 for r in rows if r["arch"] == arch and r["dtype"] == dtype), (arch, dtype)
