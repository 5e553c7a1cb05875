"""Which convolutions stay int8 (runtime/int8_select.py): groups taken by noise per FLOP within the bound, the
choice measured and undone while beyond it, the rest back in floating point with their own weights. The
models are two convolutions built with OpenVINO's ops, quantizers placed by hand (no NNCF in this process)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

import openvino as ov  # noqa: E402
import openvino.opset13 as ops  # noqa: E402

from pixbatch.runtime.int8_select import conv_flops, conv_groups, restored, select  # noqa: E402

RNG = np.random.default_rng(0)
WEIGHTS = {"big": RNG.standard_normal((4, 2, 3, 3)).astype(np.float32),
           "small": RNG.standard_normal((2, 4, 1, 1)).astype(np.float32)}


def two_convs(quantized: bool) -> ov.Model:
    """x (1x2x8x8) -> "big" (3x3, 2->4) -> "small" (1x1, 4->2); ``quantized``: each convolution's input
    through a FakeQuantize of its own, its weights rounded to a coarse grid."""
    x = ops.parameter([1, 2, 8, 8], np.float32, name="x")
    y = x.output(0)
    for name, w in WEIGHTS.items():
        if quantized:
            y = ops.fake_quantize(y, -4.0, 4.0, -4.0, 4.0, 256).output(0)
            w = np.round(w * 4) / 4
        conv = ops.convolution(y, ops.constant(w), [1, 1], [w.shape[2] // 2] * 2, [w.shape[2] // 2] * 2, [1, 1])
        conv.set_friendly_name(name)
        y = conv.output(0)
    return ov.Model([y], [x])


def int8_convs(model) -> set[str]:
    return {n.get_friendly_name() for n in model.get_ordered_ops() if n.get_type_name() == "Convolution"
            and n.input_value(0).get_node().get_type_name() == "FakeQuantize"}


def weights_of(model, name: str) -> np.ndarray:
    conv = next(n for n in model.get_ordered_ops() if n.get_friendly_name() == name)
    return conv.input_value(1).get_node().get_data()


def noise_of(per_conv: dict[str, float], together: float = 1.0):
    """Each int8 convolution's noise (a share of the peak's square, two held-out images), summed, times
    ``together`` when both are int8 (noise that does not add)."""
    def noise(model) -> np.ndarray:
        kept = int8_convs(model)
        total = sum(per_conv[n] for n in kept) * (together if len(kept) == 2 else 1.0)
        return np.full(2, total)
    return noise


def within(db: float):
    return lambda per_image: float(np.mean(np.minimum(-10 * np.log10(np.maximum(per_image, 1e-30)), 60))) >= db


def test_groups_flops_and_restoring_one_convolution():
    quantized, model = two_convs(True), two_convs(False)
    assert conv_groups(quantized) == [("big",), ("small",)]
    assert conv_flops(model, [1, 2, 8, 8]) == {"big": 4 * 2 * 9 * 64, "small": 2 * 4 * 64}
    half = restored(quantized, model, {"big"})
    assert int8_convs(half) == {"big"} and int8_convs(quantized) == {"big", "small"}  # a copy
    assert np.array_equal(weights_of(half, "small"), WEIGHTS["small"])
    assert np.array_equal(weights_of(half, "big"), np.round(WEIGHTS["big"] * 4) / 4)
    x = RNG.random((1, 2, 8, 8), dtype=np.float32)
    out = ov.Core().compile_model(half, "CPU")(x)[0]
    assert out.shape == (1, 2, 8, 8) and np.isfinite(out).all()


def test_the_convolution_that_saves_most_flops_for_its_noise_is_taken_first():
    quantized, model = two_convs(True), two_convs(False)
    # equal noise: the 3x3 convolution saves nine times the FLOPs; the bound takes one of the two
    chosen = select(quantized, model, noise_of({"big": 1e-6, "small": 1e-6}), within(59.0), [1, 2, 8, 8])
    assert int8_convs(chosen) == {"big"} and np.array_equal(weights_of(chosen, "small"), WEIGHTS["small"])
    # the small one's noise per FLOP is lower now: it is taken first, and the big one, which alone would
    # fit, no longer does
    noise = noise_of({"big": 1.15e-6, "small": 1e-7})
    assert within(59.0)(noise(restored(quantized, model, {"big"})) * 1.06)
    assert int8_convs(select(quantized, model, noise, within(59.0), [1, 2, 8, 8])) == {"small"}
    # both fit
    assert int8_convs(select(quantized, model, noise_of({"big": 1e-6, "small": 1e-6}), within(55.0),
                             [1, 2, 8, 8])) == {"big", "small"}


def test_a_choice_measured_beyond_the_bound_is_undone_and_nothing_within_it_leaves_every_layer_float():
    quantized, model = two_convs(True), two_convs(False)
    # predicted 57 dB, measured 47 (the noises do not add): the last taken goes back
    chosen = select(quantized, model, noise_of({"big": 1e-6, "small": 1e-6}, together=10.0), within(55.0),
                    [1, 2, 8, 8])
    assert int8_convs(chosen) == {"big"}
    chosen = select(quantized, model, noise_of({"big": 1e-4, "small": 1e-4}), within(52.0), [1, 2, 8, 8])
    assert int8_convs(chosen) == set()
    assert np.array_equal(weights_of(chosen, "big"), WEIGHTS["big"])


def test_a_quantizer_reaches_its_convolution_through_padding_and_one_feeding_anything_else_is_bypassed():
    # x -> FQ -> reflection Pad -> "padded" (its input's shape read too, as a dynamic model does) -> FQ ->
    # Add with itself: the first quantizer is the convolution's input quantizer, the second is bypassed
    from pixbatch.runtime.int8_select import convolution_inputs_only

    def build(quantized: bool) -> ov.Model:
        x = ops.parameter([1, 2, 8, 8], np.float32, name="x")
        y = ops.fake_quantize(x, -4.0, 4.0, -4.0, 4.0, 256) if quantized else x
        shape = ops.shape_of(y)
        padded = ops.pad(y, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), "reflect")
        conv = ops.convolution(padded, ops.constant(WEIGHTS["big"]), [1, 1], [0, 0], [0, 0], [1, 1])
        conv.set_friendly_name("padded")
        z = ops.fake_quantize(conv, -4.0, 4.0, -4.0, 4.0, 256) if quantized else conv
        return ov.Model([ops.add(z, z), shape], [x])

    model = build(False)
    quantized = convolution_inputs_only(build(True))
    kinds = [n.get_type_name() for n in quantized.get_ordered_ops()]
    assert kinds.count("FakeQuantize") == 1 and conv_groups(quantized) == [("padded",)]
    assert conv_groups(restored(quantized, model, set())) == []  # back in float: its quantizer bypassed
    assert conv_groups(restored(quantized, model, {"padded"})) == [("padded",)]
