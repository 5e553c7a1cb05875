"""The job spec: typed choices, built once from the flags, each default declared once."""

import dataclasses

import pytest
from click.testing import CliRunner

from pixbatch.cli import cli
from pixbatch.runtime.spec import BackendChoice, ComputeSpec, JobSpec, KernelChoice, ModelSpec, Precision


def test_words_from_the_command_line_become_members_and_unknown_ones_are_refused():
    compute = ComputeSpec(precision="bf16", backend="openvino", kernels="torch")
    assert compute.precision is Precision.BF16 and compute.backend is BackendChoice.OPENVINO
    assert compute.kernels is KernelChoice.TORCH
    assert compute.precision == "bf16" and str(compute.precision) == "bf16"  # still the word a user typed
    with pytest.raises(ValueError):
        ComputeSpec(precision="fp8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        compute.precision = Precision.FP32


def test_the_spec_a_command_builds_reaches_the_engine_unchanged(monkeypatch, tmp_path):
    """upscale builds one JobSpec; start_runner and run receive that very object, its parts from the flags."""
    from PIL import Image

    from pixbatch.cli.report import App
    from tests.conftest import gradient_rgb

    Image.fromarray(gradient_rgb(20, 16)).save(tmp_path / "a.png")
    seen = []

    def start_runner(self, plan, dst, spec):
        seen.append(spec)
        raise SystemExit(0)

    monkeypatch.setattr(App, "start_runner", start_runner)
    result = CliRunner().invoke(cli, ["--device", "cpu", "upscale", str(tmp_path / "a.png"), str(tmp_path / "out"),
                                      "--scale", "2", "--precision", "fp32", "--backend", "torch", "--tile", "64",
                                      "--workers", "0", "--quality", "80", "--no-channels-last"])
    assert result.exit_code == 0, result.output
    (spec,) = seen
    assert isinstance(spec, JobSpec)
    assert spec.model == ModelSpec(None, 2, task="sr")
    assert spec.compute == ComputeSpec(device="cpu", precision=Precision.FP32, channels_last=False,
                                       backend=BackendChoice.TORCH)
    assert (spec.windowing.tile, spec.windowing.overlap, spec.windowing.mirror_borders) == (64, None, False)
    assert (spec.workers, spec.encode.quality) == (0, 80)
