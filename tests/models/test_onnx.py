"""ONNX in and out: exports verified against PyTorch, round trips through the engine, probing, and hostile
files refused in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pixbatch.cli import cli
from pixbatch.models import UnsupportedModelError, create_model
from tests.conftest import DATA, gradient_rgb, requires_data

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """edsr_tiny_x2 and unet_drive exported by `pixbatch export`."""
    folder = tmp_path_factory.mktemp("onnx")
    for name in ("edsr_tiny_x2", "unet_drive"):
        code, stdout, stderr = run("--json", "export", name, folder / f"{name}.onnx")
        assert code == 0, stderr
        assert json.loads(stdout)["max_abs_diff"] <= 1e-4
    return folder


def test_export_writes_the_convention_and_pixbatchs_metadata(exported):
    model = onnx.load(str(exported / "edsr_tiny_x2.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["pixbatch.task"], meta["pixbatch.scale"], meta["pixbatch.receptive_field"]) == ("sr", "2", "20")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]  # dynamic batch, height, width


def test_an_exported_model_is_described_as_its_original(exported):
    for name in ("edsr_tiny_x2", "unet_drive"):
        original, onnx_model = create_model(name).info, create_model(exported / f"{name}.onnx").info
        assert (onnx_model.task, onnx_model.scale, onnx_model.out_channels, onnx_model.size_multiple,
                onnx_model.receptive_field) == (original.task, original.scale, original.out_channels,
                                                original.size_multiple, original.receptive_field), name


def test_probing_finds_what_a_file_without_metadata_does(exported, tmp_path):
    """The metadata removed: scale, task and size multiple come from probes, the reach from an impulse."""
    for name in ("edsr_tiny_x2", "unet_drive"):
        model = onnx.load(str(exported / f"{name}.onnx"))
        del model.metadata_props[:]
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
        probed, original = create_model(tmp_path / f"{name}.onnx").info, create_model(name).info
        assert (probed.task, probed.scale, probed.out_channels) == (original.task, original.scale,
                                                                    original.out_channels), name
        assert probed.size_multiple == original.size_multiple, name
        assert probed.receptive_field is not None and probed.receptive_field <= original.receptive_field, name


@pytest.mark.parametrize(("command", "name"), [("upscale", "edsr_tiny_x2"), ("segment", "unet_drive")])
def test_round_trip_gives_the_original_outputs(exported, tmp_path, command, name):
    """`--model out.onnx` through the engine (tiled, batched) against the original model in fp32."""
    src = tmp_path / "in"
    src.mkdir()
    for i, size in enumerate(((40, 56), (70, 50))):
        Image.fromarray(gradient_rgb(*size)).save(src / f"{i}.png")
    common = ["--device", "cpu", command, src, "--precision", "fp32", "--tile", "32", "--workers", "0"]
    code, _, stderr = run(*common[:4], tmp_path / "torch", *common[4:], "--model", name, "--backend", "torch")
    assert code == 0, stderr
    code, _, stderr = run(*common[:4], tmp_path / "onnx", *common[4:], "--model", exported / f"{name}.onnx")
    assert code == 0, stderr
    for png in sorted((tmp_path / "torch").iterdir()):
        a = np.asarray(Image.open(png)).astype(int)
        b = np.asarray(Image.open(tmp_path / "onnx" / png.name)).astype(int)
        assert np.abs(a - b).max() <= 1, png.name


def test_backend_choices_for_onnx_and_pytorch_models(exported, tmp_path):
    Image.fromarray(gradient_rgb(16, 16)).save(tmp_path / "a.png")
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "o1", "--model",
                          "edsr_tiny_x2", "--backend", "onnxruntime")
    assert code == 1 and "pixbatch export" in stderr
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "o2", "--model",
                          exported / "edsr_tiny_x2.onnx", "--backend", "torch")
    assert code == 1 and "runs on ONNX Runtime or OpenVINO" in stderr
    code, stdout, stderr = run("--json", "--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "o3",
                               "--model", exported / "edsr_tiny_x2.onnx")
    assert code == 0, stderr
    assert json.loads(stdout)["settings"]["backend"] == "onnxruntime (CPU)"


def fixed_size_copy(exported, tmp_path, height: int, width: int):
    """The exported edsr_tiny_x2 declaring one input size (ONNX Runtime then refuses any other)."""
    model = onnx.load(str(exported / "edsr_tiny_x2.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = height, width
    path = tmp_path / f"fixed_{height}x{width}.onnx"
    onnx.save(model, str(path))
    return path


def test_a_fixed_size_file_runs_in_windows_of_its_size(exported, tmp_path):
    """Images larger than a fixed-size file's input are cut into windows of exactly that size (context
    capped at a quarter of it): the outputs are the dynamic model's, seams and borders included."""
    path = fixed_size_copy(exported, tmp_path, 48, 48)
    info = create_model(path).info
    assert (info.min_size, info.max_size, info.scale) == (48, 48, 2)
    assert "48 x 48 px only" in run("models", path)[1]
    src = tmp_path / "in"
    src.mkdir()
    for i, size in enumerate(((60, 100), (48, 48), (130, 49))):
        Image.fromarray(gradient_rgb(*size)).save(src / f"{i}.png")
    common = ["--device", "cpu", "upscale", src]
    code, _, stderr = run(*common, tmp_path / "torch", "--model", "edsr_tiny_x2", "--precision", "fp32",
                          "--backend", "torch")
    assert code == 0, stderr
    code, stdout, stderr = run("--json", *common, tmp_path / "onnx", "--model", path)
    assert code == 0, stderr
    settings = json.loads(stdout)["settings"]
    assert settings["tile"] + 2 * settings["overlap"] <= 48 and settings["overlap"] == 12
    for png in sorted((tmp_path / "torch").iterdir()):
        a = np.asarray(Image.open(png)).astype(int)
        b = np.asarray(Image.open(tmp_path / "onnx" / png.name)).astype(int)
        assert np.abs(a - b).max() <= 1, png.name


def test_a_fixed_size_that_is_not_square_is_refused(exported, tmp_path):
    path = fixed_size_copy(exported, tmp_path, 48, 64)
    Image.fromarray(gradient_rgb(16, 16)).save(tmp_path / "a.png")
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "out", "--model", path)
    assert code == 1 and stderr.count("\n") == 1 and "only square ones" in stderr, stderr


def test_openvino_runs_onnx_files_when_asked(exported, tmp_path):
    """--backend openvino computes the file as ONNX Runtime does (fp32); --precision bf16 runs it on OpenVINO
    in bf16; ONNX Runtime cannot compute a float32 file in bf16 (one line)."""
    pytest.importorskip("openvino")
    from pixbatch.runtime.device import cpu_has_native_bf16

    Image.fromarray(gradient_rgb(40, 56)).save(tmp_path / "a.png")
    model = exported / "edsr_tiny_x2.onnx"
    outputs = {}
    native = cpu_has_native_bf16()  # else OpenVINO computes f32, and the report says so
    for name, options, label in (("ort", [], "onnxruntime (CPU)"), ("ov", ["--backend", "openvino"], "openvino (f32)"),
                                 ("bf16", ["--precision", "bf16"], f"openvino ({'bf16' if native else 'f32'})")):
        code, stdout, stderr = run("--json", "--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / name,
                                   "--model", model, *options)
        assert code == 0, stderr
        assert json.loads(stdout)["settings"]["backend"] == label
        outputs[name] = np.asarray(Image.open(tmp_path / name / "a.png")).astype(int)
    assert np.abs(outputs["ov"] - outputs["ort"]).max() <= 1
    assert (0 if native else -1) < np.abs(outputs["bf16"] - outputs["ort"]).max() <= (8 if native else 1)
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "x", "--model", model,
                          "--backend", "onnxruntime", "--precision", "bf16")
    assert code == 1 and stderr.count("\n") == 1 and "OpenVINO" in stderr, stderr


@pytest.mark.parametrize("faster", ["openvino", "onnxruntime"])
def test_auto_picks_the_onnx_runtime_that_measures_faster(exported, monkeypatch, faster):
    """backend auto, on a large CPU job, times both runtimes on a probe and keeps the faster (the timings
    stand in for the machine's here, so that both outcomes are tested)."""
    pytest.importorskip("openvino")
    import pixbatch.runtime.backends as backends
    from pixbatch.runtime.prepare import prepare_model

    def timed(runner, x):
        label = runner.compiled.label
        return (1.0 if label.startswith(faster) else 2.0), runner(x)

    monkeypatch.setattr(backends, "median_ms", timed)
    runner = prepare_model(create_model(exported / "edsr_tiny_x2.onnx"), torch.device("cpu"), torch.float32,
                           backend="auto", job_pixels=backends.OPENVINO_MIN_PIXELS)
    if faster == "openvino":
        assert runner.backend == "openvino (f32; 2.00x ONNX Runtime's speed at 256 px)"
        assert torch.get_num_threads() == 1
    else:
        assert runner.backend == "onnxruntime (CPU)"
    torch.set_num_threads(backends.TORCH_THREADS)
    small = prepare_model(create_model(exported / "edsr_tiny_x2.onnx"), torch.device("cpu"), torch.float32,
                          backend="auto", job_pixels=backends.OPENVINO_MIN_PIXELS - 1)
    assert small.backend == "onnxruntime (CPU)"  # a small job is not worth the measurement


def hostile(tmp_path, name: str) -> object:
    """ONNX files that must be refused: each one line, nothing run."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])
    path = tmp_path / f"{name}.onnx"
    if name == "garbage":
        path.write_bytes(b"\x08\x07garbage that is not a protobuf" * 50)
        return path
    if name == "custom_op":
        node = helper.make_node("Explode", ["x"], ["y"], domain="com.evil")
        graph = helper.make_graph([node], "g", [x], [y])
    elif name == "outside_data":
        w = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
        w.data_location = TensorProto.EXTERNAL
        del w.float_data[:]
        for key, value in (("location", "../../etc/passwd"), ("length", "4")):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
        node = helper.make_node("Mul", ["x", "w"], ["y"])
        graph = helper.make_graph([node], "g", [x], [y], initializer=[w])
    elif name == "huge_weights":  # declares 8 GiB of weights (and holds none)
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 31])
        node = helper.make_node("Mul", ["x", "w"], ["y"])
        graph = helper.make_graph([node], "g", [x], [y], initializer=[w])
    elif name == "absurd_shape":
        big = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10**9, 10**9])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [big], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


@pytest.mark.parametrize("name", ["garbage", "custom_op", "outside_data", "absurd_shape", "huge_weights"])
def test_hostile_onnx_files_are_one_error_line_and_exit_1(tmp_path, name):
    path = hostile(tmp_path, name)
    with pytest.raises(UnsupportedModelError):
        create_model(path)
    Image.fromarray(gradient_rgb(16, 16)).save(tmp_path / "a.png")
    code, _, stderr = run("--device", "cpu", "upscale", tmp_path / "a.png", tmp_path / "out", "--model", path)
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error:"), stderr
    assert not (tmp_path / "out" / "a.png").exists()


def test_export_refuses_what_it_cannot_verify(tmp_path, monkeypatch):
    """An export whose ONNX Runtime output is not within the tolerance of PyTorch's is not written (here
    the tolerance is made impossible to meet)."""
    import pixbatch.models.onnx_export as export

    monkeypatch.setitem(export.TOLERANCE, "fp32", -1.0)
    monkeypatch.setattr(export, "CHECK_SHAPES", ((1, 24, 32),))
    code, _, stderr = run("export", "edsr_tiny_x2", tmp_path / "x.onnx")
    assert code == 1 and "not written" in stderr and not (tmp_path / "x.onnx").exists()


def test_eval_scores_an_onnx_model_as_its_original(exported, tmp_path):
    """eval sr keeps torch as its default backend; an ONNX model runs on ONNX Runtime and scores the same."""
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(gradient_rgb(48, 64)).save(hr / "a.png")
    scores = {}
    for model in ("edsr_tiny_x2", exported / "edsr_tiny_x2.onnx"):
        code, stdout, stderr = run("--json", "--device", "cpu", "eval", "sr", "--model", model, "--hr", hr)
        assert code == 0, stderr
        scores[str(model)] = json.loads(stdout)["mean"]["model"]["psnr_y"]
    a, b = scores.values()
    assert abs(a - b) < 0.01, scores
    if importlib.util.find_spec("openvino") is not None:  # bf16: OpenVINO computes it, close to fp32's score
        code, stdout, stderr = run("--json", "--device", "cpu", "eval", "sr", "--model", exported / "edsr_tiny_x2.onnx",
                                   "--hr", hr, "--precision", "bf16")
        assert code == 0, stderr
        assert abs(json.loads(stdout)["mean"]["model"]["psnr_y"] - a) < 0.1


def test_a_bgr_0_255_model_without_metadata_runs_with_the_options(tmp_path):
    """A file that takes BGR in 0-255 and says nothing: --input-order bgr --value-range 255 make it the
    original model (edsr_tiny_x2), and `pixbatch models` says which values came from where."""
    from torch import nn

    class BgrTimes255(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.flip(1) / 255).flip(1) * 255

    inner = create_model("edsr_tiny_x2").module.eval()
    x = torch.rand(1, 3, 32, 32)
    dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    torch.onnx.export(BgrTimes255(inner), (x,), str(tmp_path / "bgr.onnx"), dynamo=True, dynamic_shapes=(dims,),
                      verbose=False)
    Image.fromarray(gradient_rgb(30, 40)).save(tmp_path / "a.png")
    common = ["--device", "cpu", "upscale", tmp_path / "a.png"]
    code, _, stderr = run(*common, tmp_path / "torch", "--model", "edsr_tiny_x2", "--precision", "fp32",
                          "--backend", "torch")
    assert code == 0, stderr
    code, _, stderr = run(*common, tmp_path / "onnx", "--model", tmp_path / "bgr.onnx", "--input-order", "bgr",
                          "--value-range", "255")
    assert code == 0, stderr
    a = np.asarray(Image.open(tmp_path / "torch" / "a.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "onnx" / "a.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    code, stdout, _ = run("models", tmp_path / "bgr.onnx")
    assert code == 0 and "scale (probe)" in stdout and "task (probe)" in stdout
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(gradient_rgb(48, 64)).save(hr / "a.png")
    scores = []
    for model, options in (("edsr_tiny_x2", []), (tmp_path / "bgr.onnx", ["--input-order", "bgr", "--value-range", "255"])):
        code, stdout, stderr = run("--json", "--device", "cpu", "eval", "sr", "--model", model, "--hr", hr, *options)
        assert code == 0, stderr
        scores.append(json.loads(stdout)["mean"]["model"]["psnr_y"])
    assert abs(scores[0] - scores[1]) < 0.01, scores  # eval takes the same options


def test_the_command_names_the_task_where_the_file_cannot(tmp_path):
    """An image-to-image file without metadata (3 channels at 1x): stylize runs it as a style net, upscale at
    scale 1, and segment as 3 classes."""
    from torch import nn

    class Invert(nn.Module):
        def forward(self, x):
            return 1 - x

    dims = {0: torch.export.Dim("b"), 2: torch.export.Dim("h"), 3: torch.export.Dim("w")}
    torch.onnx.export(Invert(), (torch.rand(1, 3, 32, 32),), str(tmp_path / "invert.onnx"), dynamo=True,
                      dynamic_shapes=(dims,), verbose=False)
    Image.fromarray(gradient_rgb(20, 24)).save(tmp_path / "a.png")
    for command, flag in (("stylize", "--style"), ("upscale", "--model"), ("segment", "--model")):
        code, _, stderr = run("--device", "cpu", command, tmp_path / "a.png", tmp_path / command, flag,
                              tmp_path / "invert.onnx")
        assert code == 0, (command, stderr)
    inverted = np.asarray(Image.open(tmp_path / "stylize" / "a.png")).astype(int)
    assert np.abs(inverted - (255 - gradient_rgb(20, 24).astype(int))).max() <= 1


FAMILIES = ["carn_m_x2", "weights/imdn_x4.pth", "weights/realesr-animevideov3.pth",
            "weights/efficient_sr/team18_bsrn.pth", "weights/efficient_sr/team38_span_ch28_slim.pth",
            "weights/efficient_sr/team15_SAFMN.pth", "weights/efficient_sr/team24_smfan.pth",
            "weights/efficient_sr/team23_safmnpp.pth", "johnson_style"]


@pytest.mark.parametrize("name", FAMILIES)
def test_families_export_within_tolerance(tmp_path, name):
    """Built-in CARN-M and the foreign families in the shared data (IMDN, Real-ESRGAN compact through
    spandrel, BSRN, SPAN, and SAFMN, SMFAN and SAFMN++, whose pooling to a fraction of the input size exports
    with sizes declared multiples of 16 and 8), and the Johnson style net (traced at batch 2, which torch.export
    would otherwise fix at 1): each export is run by ONNX Runtime at two other sizes and batch 2, within 1e-3."""
    from pixbatch.models.onnx_export import export_onnx

    if name.startswith("weights/"):
        if not DATA.is_dir():
            pytest.skip(f"needs the shared data at {DATA}")
        name = DATA / name
    result = export_onnx(create_model(name), tmp_path / "m.onnx")
    assert result.max_abs_diff <= 1e-3 and (tmp_path / "m.onnx").is_file()
    multiple = {"team15_SAFMN.pth": 16, "team24_smfan.pth": 8, "team23_safmnpp.pth": 8}.get(Path(str(name)).name)
    if multiple:  # the file says so; the engine pads inputs up to it
        assert create_model(tmp_path / "m.onnx").info.size_multiple == multiple


@requires_data
def test_an_export_that_the_exporter_fixes_to_one_size_is_refused(tmp_path, monkeypatch):
    """SAFMN pools to a size derived from the input: torch's exporter fixes the input at the export's size.
    Without the second export (sizes declared multiples of 16, which SAFMN takes), such a file would take no
    other size, so it is refused, said in one line, and not written."""
    import pixbatch.models.onnx_export as export

    monkeypatch.setattr(export, "SIZE_STEPS", ())
    code, _, stderr = run("export", DATA / "weights" / "efficient_sr" / "team15_SAFMN.pth", tmp_path / "s.onnx")
    assert code == 1 and "fixed the input size" in stderr and not (tmp_path / "s.onnx").exists()



def test_the_checks_inputs_catch_a_wrong_pixel_shuffle_ordering(exported):
    """The verification runs image-like inputs (a trained SAFMN++ diverges on uniform noise); a depth-to-space
    of the wrong ordering (DCR for CRD), the known exporter pitfall, still moves outputs by far more than the
    tolerance on them."""
    import onnxruntime as ort

    from pixbatch.models.onnx_export import TOLERANCE, image_like

    model = onnx.load(str(exported / "edsr_tiny_x2.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    (mode,) = [a for a in node.attribute if a.name == "mode"]
    mode.s = b"DCR" if mode.s == b"CRD" else b"CRD"
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = image_like(1, 3, 56, 72, seed=1)
    with torch.no_grad():
        expected = create_model("edsr_tiny_x2").module.eval()(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() > 100 * TOLERANCE["fp32"]
