"""Parity of the fused conv3x3 + PixelShuffle kernel with an fp64 reference.

Runs the Triton kernel on a GPU when there is one, else in Triton's CPU interpreter. In the
interpreter, bf16 dot products are computed from bf16 inputs in fp32 (its bf16 dot is broken), so
there the bf16 case checks indexing, masks, epilogue and bf16 loads/stores, not tensor-core maths."""

import pytest
import torch
from torch import nn

from pixbatch.ops.conv_pixel_shuffle import (
    ConvPixelShuffle,
    conv_pixel_shuffle,
    conv_pixel_shuffle_ref,
    pack_weight,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Max abs error allowed, relative to max(1, max |reference|): one table for every test.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 2e-2}


def _inputs(n, c_in, c, r, h, w, dtype, channels_last=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=g)
    weight = torch.randn(c * r * r, c_in, 3, 3, generator=g) / (9 * c_in) ** 0.5
    bias = torch.randn(c * r * r, generator=g) * 0.1
    x, weight, bias = (t.to(DEVICE, dtype) for t in (x, weight, bias))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, weight, bias


def _check(out, ref, dtype):
    assert out.shape == ref.shape and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    err = (out.double() - ref).abs().max().item()
    assert err <= TOLERANCE[dtype] * max(1.0, ref.abs().max().item()), err


def _fused(x, weight, bias, r, **kw):
    from pixbatch.kernels.conv_pixel_shuffle import conv3x3_pixel_shuffle

    w_packed, b_packed = pack_weight(weight, bias, r)
    return conv3x3_pixel_shuffle(x, w_packed, b_packed, r, **kw)


def _ref64(x, weight, bias, r, **kw):
    kw = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return conv_pixel_shuffle_ref(x.double(), weight.double(), None if bias is None else bias.double(), r, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("r", [1, 2, 3, 4])
@pytest.mark.parametrize("c_in", [3, 48, 64])
def test_matches_fp64_reference(c_in, r, dtype):
    x, weight, bias = _inputs(2, c_in, 3, r, 7, 11, dtype)
    _check(_fused(x, weight, bias, r), _ref64(x, weight, bias, r), dtype)


@pytest.mark.parametrize(("h", "w"), [(1, 1), (13, 5), (2, 17)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_odd_shapes_and_layouts(h, w, channels_last):
    x, weight, bias = _inputs(3, 5, 7, 2, h, w, torch.float32, channels_last=channels_last)
    _check(_fused(x, weight, bias, 2), _ref64(x, weight, bias, 2), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "epilogue",
    ["none", "relu", "prelu_per_channel", "prelu_single", "leaky_relu", "residual", "prelu_residual", "no_bias"],
)
def test_epilogues(epilogue, dtype):
    r, c = 2, 6
    x, weight, bias = _inputs(2, 16, c, r, 5, 9, dtype, seed=1)
    kw = {}
    if epilogue.startswith("prelu"):
        n = 1 if epilogue == "prelu_single" else c
        kw.update(act="prelu", alpha=torch.linspace(-0.5, 0.7, n, device=DEVICE, dtype=dtype))
    elif epilogue in ("relu", "leaky_relu"):
        kw.update(act=epilogue, slope=0.2) if epilogue == "leaky_relu" else kw.update(act="relu")
    if "residual" in epilogue:
        kw["residual"] = torch.randn(2, c, 5, 9, device=DEVICE, dtype=dtype)
    if epilogue == "no_bias":
        bias = None
    _check(_fused(x, weight, bias, r, **kw), _ref64(x, weight, bias, r, **kw), dtype)


def test_functional_dispatch_and_fallback(monkeypatch):
    x, weight, bias = _inputs(1, 4, 3, 2, 6, 6, torch.float32)
    ref = conv_pixel_shuffle_ref(x, weight, bias, 2)
    torch.testing.assert_close(conv_pixel_shuffle(x, weight, bias, 2), ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("PIXBATCH_TRITON", "0")  # kernels off: the reference, exactly
    torch.testing.assert_close(conv_pixel_shuffle(x, weight, bias, 2), ref.contiguous(memory_format=torch.channels_last),
                               rtol=0, atol=0)


def test_unsupported_case_falls_back_to_the_reference():
    x, weight, bias = _inputs(1, 4, 3, 2, 6, 6, torch.float64)  # no fp64 kernel
    out = conv_pixel_shuffle(x, weight, bias, 2)
    torch.testing.assert_close(out, conv_pixel_shuffle_ref(x, weight, bias, 2))


def test_module_matches_the_layers_it_replaces():
    conv = torch.nn.Conv2d(8, 3 * 9, 3, padding=1).to(DEVICE)
    prelu = torch.nn.PReLU(3).to(DEVICE)
    fused = ConvPixelShuffle(conv, 3, act="prelu", alpha=prelu.weight)
    x = torch.randn(2, 8, 5, 6, device=DEVICE)
    with torch.no_grad():
        expected = prelu(torch.nn.functional.pixel_shuffle(conv(x), 3))
        torch.testing.assert_close(fused(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="only 3x3 convolutions"):
        ConvPixelShuffle(torch.nn.Conv2d(8, 12, 5, padding=2), 2)


def test_torch_compile_keeps_the_op_in_one_graph():
    conv = torch.nn.Conv2d(4, 12, 3, padding=1)
    fused = ConvPixelShuffle(conv, 2, act="relu")

    def f(x):
        return fused(x * 2) + 1

    x = torch.randn(1, 4, 5, 5)
    explanation = torch._dynamo.explain(f)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    graph = explanation.graphs[0]
    assert any("pixbatch.conv_pixel_shuffle" in str(n.target) for n in graph.graph.nodes)
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), f(x))


def test_module_follows_autocast_like_the_layers_it_replaces():
    conv = torch.nn.Conv2d(8, 12, 3, padding=1).to(DEVICE)
    fused = ConvPixelShuffle(conv, 2, act="relu")
    x = torch.randn(1, 8, 5, 6, device=DEVICE)
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = fused(x)
        expected = torch.relu(torch.nn.functional.pixel_shuffle(conv(x), 2))
    assert got.dtype == expected.dtype == torch.bfloat16
    _check(got, expected.double(), torch.bfloat16)
    assert list(fused._packed_as) == [torch.bfloat16]  # weights converted once, then reused


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("act,residual", [("none", False), ("relu", True), ("prelu", False), ("leaky_relu", True)])
def test_cpu_channels_last_path_matches_the_reference(dtype, r, act, residual):
    """The CPU path (conv to (i, j, c) channels, shuffle as one copy) against the fp32 reference."""
    from pixbatch.ops.conv_pixel_shuffle import conv_pixel_shuffle_nhwc

    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    w, b, a = torch.randn(3 * r * r, 8, 3, 3).to(dtype), torch.randn(3 * r * r).to(dtype), torch.rand(3).to(dtype)
    res = torch.randn(2, 3, 7, 5).to(dtype).contiguous(memory_format=torch.channels_last) if residual else None
    want = conv_pixel_shuffle_ref(x.double(), w.double(), b.double(), r, act, a.double(), 0.2,
                                  None if res is None else res.double())
    got = conv_pixel_shuffle_nhwc(x, w, b, r, act, a, 0.2, res)
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    tol = 1e-4 if dtype == torch.float32 else 0.35  # bf16: rounding of the inputs, then of a 72-term sum
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("r", [2, 3])
@pytest.mark.parametrize("act,residual", [("none", False), ("prelu", True), ("leaky_relu", False)])
def test_blocks_first_form_matches_the_reference_and_is_what_a_trace_sees(r, act, residual):
    """The plain-op form a graph compiler converts (ijc-ordered conv, blocks-first depth-to-space)
    computes PixelShuffle's result, and tracing the module records it instead of the custom op."""
    from pixbatch.ops.conv_pixel_shuffle import ConvPixelShuffle, conv_pixel_shuffle_blocks_first

    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 5)
    w, b, a = torch.randn(3 * r * r, 8, 3, 3), torch.randn(3 * r * r), torch.rand(3)
    res = torch.randn(2, 3, 7, 5) if residual else None
    want = conv_pixel_shuffle_ref(x.double(), w.double(), b.double(), r, act, a.double(), 0.2,
                                  None if res is None else res.double())
    got = conv_pixel_shuffle_blocks_first(x, w, b, r, act, a, 0.2, res)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    conv = nn.Conv2d(8, 3 * r * r, 3, padding=1)
    module = ConvPixelShuffle(conv, r, act, a if act == "prelu" else None, 0.2, residual=residual).eval()
    args = (x,) if res is None else (x, res)
    with torch.no_grad():
        traced = torch.jit.trace(module, args)
        assert "pixbatch::conv_pixel_shuffle" not in str(traced.graph)
        torch.testing.assert_close(traced(*args), module(*args), rtol=1e-4, atol=1e-4)
