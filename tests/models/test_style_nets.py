"""Style nets: published checkpoint layouts load as they are, instance norm with fixed statistics,
receptive fields, and the Engstrom weights' outputs pinned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pixbatch.models import UnsupportedModelError, build_registered, create_model
from pixbatch.models.foreign.spandrel_loader import probe_receptive_field
from pixbatch.models.style.engstrom import LAYERS, same_padding, variable_name
from pixbatch.models.style.norm import InstanceNorm, fixed_stats, norm_layers
from tests.conftest import DATA, requires_data

STYLE_NETS = ["johnson_style", "engstrom_style", "mobilenet_style"]
ENGSTROM = DATA / "style_weights" / "ml5_lengstrom"


def run(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.eval()(x)


def test_instance_norm_matches_torch_and_fixed_stats_replace_the_tensors_own():
    torch.manual_seed(0)
    norm = InstanceNorm(5, eps=1e-3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 5, 7, 9) * 3 + 1
    ref = F.instance_norm(x, weight=norm.weight, bias=norm.bias, eps=1e-3)
    torch.testing.assert_close(norm(x), ref, rtol=1e-5, atol=1e-5)
    var, mean = torch.var_mean(x[:1], dim=(0, 2, 3), correction=0)
    with fixed_stats(norm, [(mean, var)]):
        # the first sample's own statistics, given from outside: same output for it, not for the other
        y = norm(x)
    torch.testing.assert_close(y[:1], ref[:1], rtol=1e-5, atol=1e-5)
    assert (y[1:] - ref[1:]).abs().max() > 0.1
    assert norm.stats is None  # released


@pytest.mark.parametrize("name", STYLE_NETS)
def test_norm_layers_are_listed_in_the_order_the_forward_pass_meets_them(name):
    model = build_registered(name)
    called = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: called.append(mod)) for m in norm_layers(model)]
    run(model, torch.rand(1, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert [id(m) for m in called] == [id(m) for m in norm_layers(model)]


@pytest.mark.parametrize("name", STYLE_NETS)
def test_declared_receptive_field_bounds_the_convolutions_reach(name):
    """With every norm's statistics fixed, an output pixel depends only on inputs within its reach."""
    torch.manual_seed(0)
    model = build_registered(name).eval()
    stats = [(torch.zeros(m.weight.shape[0]), torch.ones(m.weight.shape[0])) for m in norm_layers(model)]
    with fixed_stats(model, stats):
        measured = probe_receptive_field(model, 1, 4, start=160, limit=160)
    assert measured is not None and measured <= model.receptive_field <= measured + 8


def example_state(width: int = 32, *, old: bool = False, conv_name: str = "conv2d") -> dict:
    """A state dict laid out as PyTorch's fast_neural_style example saves it (random values)."""
    torch.manual_seed(1)
    state = {k.replace(".conv2d.", f".{conv_name}."): torch.randn_like(v) * 0.1
             for k, v in build_registered("johnson_style", width=width).state_dict().items()}
    if old:  # files written by older PyTorch carry instance-norm running statistics
        for k in [k for k in state if k.startswith("in") or ".in" in k]:
            if k.endswith(".weight"):
                base = k[: -len(".weight")]
                state[f"{base}.running_mean"] = torch.zeros(state[k].shape)
                state[f"{base}.running_var"] = torch.ones(state[k].shape)
    return state


@pytest.mark.parametrize("variant", [{}, {"old": True}, {"conv_name": "conv"}, {"width": 16}])
def test_pytorch_example_checkpoints_load_as_they_are(tmp_path, variant):
    state = example_state(**variant)
    path = tmp_path / "candy.pth"
    torch.save(state, path)
    loaded = create_model(path)
    info = loaded.info
    assert (info.arch, info.task, info.recognised_by, info.scale) == ("TransformerNet", "style", "pixbatch", 1)
    assert loaded.module.conv1.conv2d.weight.shape[0] == variant.get("width", 32)
    key = f"conv1.{variant.get('conv_name', 'conv2d')}.weight"
    torch.testing.assert_close(loaded.module.conv1.conv2d.weight, state[key])


def test_mobilenet_style_checkpoints_load_as_they_are(tmp_path):
    torch.manual_seed(2)
    state = {k: torch.randn_like(v) * 0.1 for k, v in build_registered("mobilenet_style").state_dict().items()}
    state["in1.running_mean"] = torch.zeros(32)  # an older file's extra entry
    path = tmp_path / "picasso.pth"
    torch.save(state, path)
    loaded = create_model(path)
    assert loaded.info.arch == "TransformerMobileNet" and loaded.info.task == "style"
    torch.testing.assert_close(loaded.module.res3.conv2.weight, state["res3.conv2.weight"])


def write_variables(folder: Path, seed: int = 0, *, shapes: dict | None = None) -> dict[str, np.ndarray]:
    """A TensorFlow variables export (manifest.json + raw float32 files) of Engstrom's net."""
    rng = np.random.default_rng(seed)
    net = build_registered("engstrom_style")
    arrays = {}
    for n, layer in enumerate(LAYERS):
        kernel = dict(net.named_parameters())[f"{layer}.weight"]
        co_or_ci, ci_or_co, kh, kw = kernel.shape
        shape = [kh, kw, ci_or_co, co_or_ci]  # TF: conv [kh, kw, in, out]; transposed [kh, kw, out, in]
        c = kernel.shape[1] if layer.startswith("conv_t") and layer != "conv_t3" else kernel.shape[0]
        arrays[variable_name(3 * n)] = rng.normal(0, 0.05, shape).astype("<f4")
        arrays[variable_name(3 * n + 1)] = rng.normal(0, 0.1, [c]).astype("<f4")  # shift
        arrays[variable_name(3 * n + 2)] = rng.uniform(0.5, 1.5, [c]).astype("<f4")  # scale
    folder.mkdir(parents=True)
    manifest = {}
    for name, a in arrays.items():
        a.tofile(folder / name)
        manifest[name] = {"filename": name, "shape": list((shapes or {}).get(name, a.shape))}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return arrays


def test_engstrom_variables_convert_from_tensorflow_layouts(tmp_path):
    arrays = write_variables(tmp_path / "style")
    loaded = create_model(tmp_path / "style")
    m = loaded.module
    assert loaded.info.arch == "EngstromNet" and loaded.info.task == "style"
    # conv1: [9, 9, 3, 32] -> [32, 3, 9, 9]; its shift is the norm's bias and its scale the norm's weight
    np.testing.assert_array_equal(m.conv1.weight.detach().numpy()[5, 2, 1, 7], arrays["Variable"][1, 7, 2, 5])
    np.testing.assert_array_equal(m.conv1.norm.bias.detach().numpy(), arrays["Variable_1"])
    np.testing.assert_array_equal(m.conv1.norm.weight.detach().numpy(), arrays["Variable_2"])
    # conv_t1 (layer 13): TF [3, 3, out=64, in=128] -> ConvTranspose2d [in, out, 3, 3]
    np.testing.assert_array_equal(m.conv_t1.weight.detach().numpy()[100, 60, 2, 0], arrays["Variable_39"][2, 0, 60, 100])
    assert m.res5.conv2.norm.eps == 1e-3


def test_tensorflow_same_padding_and_transposed_conv_follow_tensorflow():
    assert same_padding(8, 3, 2) == (0, 1) and same_padding(7, 3, 2) == (1, 1) and same_padding(8, 9, 1) == (4, 4)
    # TF's stride-2 "SAME" transposed conv of an h x w input: out[2i + ky, 2j + kx] += x[i, j] w[ky, kx],
    # 2h x 2w; checked through the layer with its norm made the identity
    from pixbatch.models.style.engstrom import ConvTransposeNorm

    torch.manual_seed(3)
    layer = ConvTransposeNorm(1, 1)
    x, w = torch.randn(1, 1, 3, 4), layer.weight.detach()[0, 0]
    expected = torch.zeros(8, 10)
    for i in range(3):
        for j in range(4):
            expected[2 * i:2 * i + 3, 2 * j:2 * j + 3] += x[0, 0, i, j] * w
    with fixed_stats(layer, [(torch.zeros(1), torch.ones(1) - 1e-3)]), torch.no_grad():
        got = layer(x)
    torch.testing.assert_close(got[0, 0], expected[:6, :8], rtol=1e-5, atol=1e-5)


def test_engstrom_net_converted_once_computes_every_size():
    """OpenVINO's conversion (a trace) at one size, run at others, odd ones among them: the padding and the
    transposed convs' crop follow the size (an int8 model is converted once, at its calibration size)."""
    pytest.importorskip("openvino")
    from pixbatch.runtime.openvino_backend import convert_module, shared_core

    torch.manual_seed(0)
    net = build_registered("engstrom_style").eval()
    model = convert_module(net, torch.rand(1, 3, 64, 64))
    for h, w in ((96, 128), (70, 54)):
        x = torch.rand(1, 3, h, w)
        static = model.clone()
        static.reshape({0: list(x.shape)})
        got = shared_core().compile_model(static, "CPU")(x.numpy())[0]
        torch.testing.assert_close(torch.from_numpy(got), run(net, x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("problem", ["traversal", "short", "missing", "not json"])
def test_a_bad_variables_folder_is_one_clear_error(tmp_path, problem):
    folder = tmp_path / "bad"
    write_variables(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if problem == "traversal":
        manifest["Variable"]["filename"] = "../../etc/passwd"
    elif problem == "short":
        manifest["Variable_3"]["shape"] = [3, 3, 32, 65]
    elif problem == "missing":
        (folder / "Variable_47").unlink()
    (folder / "manifest.json").write_text("{nope" if problem == "not json" else json.dumps(manifest))
    with pytest.raises(UnsupportedModelError, match="bad"):
        create_model(folder)


# Engstrom's released weights (research use only: read from the shared data, never shipped), pinned on a
# 64x64 crop of the example content photo; regenerate with tests/golden/regenerate.py --style.
@requires_data
@pytest.mark.parametrize("style", ["udnie", "wave"])
def test_engstrom_weights_match_their_golden_output(style):
    from tests.golden.regenerate import GOLDEN, style_golden_output

    expected = np.load(GOLDEN / f"engstrom_{style}.npy")
    got = style_golden_output(ENGSTROM / style)
    assert got.shape == expected.shape == (1, 3, 64, 64)
    assert np.abs(got - expected).max() <= 1e-4
    # visibly stylised: far from the input photo, and the two styles far from each other
    from tests.golden.regenerate import style_golden_input

    assert np.abs(got - style_golden_input().numpy()).mean() > 0.05
