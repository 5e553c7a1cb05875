"""The Triton kernel compiles ahead of time for sm_80 and sm_90a on a machine without a GPU, every
autotune entry within those architectures' register and shared-memory limits (pixbatch.kernels.aot)."""

import json

import pytest

pytest.importorskip("triton")


def test_every_autotune_entry_compiles_for_sm80_and_sm90a_within_limits(aot_run):
    run = aot_run  # started in the background when the session collected this test (conftest.py)
    returncode = run["proc"].wait(timeout=1200)
    run["log"].close()
    assert returncode == 0, run["log_path"].read_text()[-6000:]
    out = run["out"]
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
