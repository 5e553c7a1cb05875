"""`pixbatch bench`: its lines arrive as each measurement finishes, and an efficiency over 100 % is explained."""

from pixbatch.bench.pipeline import bench_upscale, format_report
from pixbatch.runtime.spec import ComputeSpec
from tests.conftest import REPO


def test_lines_arrive_as_measured_and_match_the_report():
    lines = []
    result = bench_upscale("edsr_tiny_x2", [REPO / "examples"], images=2, size=24, compute=ComputeSpec(device="cpu"), on_line=lines.append)
    assert lines == format_report(result)
    labels = [" ".join(line.split()[:2]) for line in lines[2:]]
    ov = ["plain OpenVINO"] if "openvino_loop" in result else []  # with openvino installed (the engines extra)
    expected = ["decode", "compute", "encode", "plain eager", *ov, "pixbatch pipeline"]  # the order they are measured in
    assert [label if label.startswith(("plain", "pixbatch")) else label.split()[0] for label in labels[:len(expected)]] == expected
    closing = [line for line in lines if line.startswith("<- bottleneck: ")]
    assert len(closing) == 1 and closing[0].startswith(f"<- bottleneck: {result['bottleneck']} (")
    assert lines[-1].startswith("(over 100 %") == (result["efficiency"] > 1)


def test_an_efficiency_over_100_percent_is_explained():
    lines = []
    result = bench_upscale("edsr_tiny_x2", [REPO / "examples"], images=2, size=24, compute=ComputeSpec(device="cpu"), on_line=lines.append)
    result["efficiency"] = 1.15
    report = format_report(result)
    assert "reaches 115% of it" in report[-2] and report[-1].startswith("(over 100 %: each stage alone was timed")
    result["efficiency"] = 0.9
    assert "over 100 %" not in format_report(result)[-1]
