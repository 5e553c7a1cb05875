"""Which convolutions of an image-output model compute in int8: the accuracy control of super-resolution and
style models (runtime/int8_quantize.py's recipe "controlled" for them).

NNCF's accuracy-aware restorer ranks its quantizer groups by their effect on the metric alone: on rlfn_x4
(an AVX2-only EPYC) it returned 25 of 39 convolutions to floating point, 56.5 dB against fp32's output where
52 was asked, and the int8 model ran no faster than f32. Here instead:

1. Every convolution is quantized (``quantize_convolutions``: per-channel weights, activations with
   histogram ranges, asymmetric for the MIXED preset) and only convolutions: a quantizer on a residual add,
   an attention product or the image the upsampler hands to its pixel shuffle puts 8-bit steps straight into
   the output, for no speed (rlfn_x4 with its 7 cheapest-to-quantize convolutions in int8: 45.2 dB with
   NNCF's quantizers on those ops, 52.2 without).
2. Convolutions that share an input quantizer form a group. Each group's noise is measured alone (only its
   convolutions in int8) on the held-out inputs, per image, as mean squared error against fp32's output.
3. Groups are taken into int8 in order of noise per FLOP, while the summed noise predicts a score within the
   bound with ``MARGIN`` to spare; the model so made is then measured, and while it is beyond the bound the
   last group taken goes back to floating point.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONVOLUTIONS = ("Convolution", "GroupConvolution")
PASSED = ("Pad",)  # ops between a quantizer and the convolutions it feeds (``_users``)
# ops NNCF would put quantizers on for OpenVINO's int8 kernels; for images, only convolutions are quantized
# and transposed convolutions: OpenVINO 2026.4 ran udnie's in f32 given int8 inputs and weights (an AVX2-only
# EPYC), and their int8 weights cost 1 dB of its output
NOT_QUANTIZED = ("Add", "Multiply", "Subtract", "Divide", "Interpolate", "Sigmoid", "MaxPool", "AvgPool",
                 "DepthToSpace", "Concat", "MVN", "ConvolutionBackpropData")
MARGIN = 0.25  # dB the predicted score keeps above the bound: noise from separate layers adds only nearly
MARGIN_SHARE = 10 ** (MARGIN / 10) - 1  # MARGIN dB as a share of each group's noise


def quantize_convolutions(nncf, model, calibration: list, overflow_fix: str):
    """Every convolution of ``model`` (an ``openvino.Model``) quantized by NNCF, nothing else."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    quantized = nncf.quantize(
        model, nncf.Dataset(calibration), subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED,
        ignored_scope=nncf.IgnoredScope(types=list(NOT_QUANTIZED), validate=False),
        advanced_parameters=AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix(overflow_fix),
            activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM))
    return convolution_inputs_only(quantized)


def convolution_inputs_only(quantized):
    """``quantized`` with every quantizer that feeds anything but convolutions bypassed, in place: e.g. the
    upsampler's output, before a pixel shuffle NNCF sees as reshapes, or an instance norm's statistics.
    A quantizer that reaches its convolutions through a Pad (udnie's TensorFlow-style padding) stays: without that
    look-through no style-net quantizer did, and udnie was refused with all 14 convolutions in f32."""
    for fq in [n for n in quantized.get_ordered_ops() if n.get_type_name() == "FakeQuantize"]:
        if not all(u.get_type_name() in CONVOLUTIONS for u in _users(fq)):
            _bypass(fq)
    return quantized


def select(quantized, model, noise: Callable[[object], np.ndarray], bound_noise: Callable[[np.ndarray], bool],
           shape: list[int]):
    """``quantized`` (from ``quantize_convolutions``) with only the groups chosen (module docstring) left in int8,
    the others' weights back from ``model``. ``noise(m)``: per held-out image, mean squared error of model
    ``m``'s output against fp32's; ``bound_noise(per_image)``: whether that noise is within the bound;
    ``shape``: an input shape the FLOPs are counted at."""
    groups = conv_groups(quantized)
    flops = conv_flops(model, shape)
    base = noise(restored(quantized, model, set()))  # the float layers' own (bf16 where native)
    own = {g: np.maximum(noise(restored(quantized, model, set(g))) - base, 0.0) for g in groups}
    cost = {g: sum(flops.get(name, 0) for name in g) for g in groups}
    order = sorted(groups, key=lambda g: float(own[g].mean()) / max(cost[g], 1))
    chosen: list[tuple[str, ...]] = []
    total = base.copy()
    for g in order:
        if bound_noise(total + own[g] * (1 + MARGIN_SHARE)):
            chosen.append(g)
            total = total + own[g]
    while chosen:
        candidate = restored(quantized, model, {name for g in chosen for name in g})
        if bound_noise(noise(candidate)):
            return candidate
        chosen.pop()
    return restored(quantized, model, set())


def conv_groups(quantized) -> list[tuple[str, ...]]:
    """Convolutions (friendly names) that share an input quantizer, as groups; a convolution whose input has
    no quantizer is in none."""
    groups = []
    for fq in quantized.get_ordered_ops():
        if fq.get_type_name() == "FakeQuantize":
            groups.append(tuple(sorted(u.get_friendly_name() for u in _users(fq) if u.get_type_name() in CONVOLUTIONS)))
    return [g for g in dict.fromkeys(groups) if g]


def conv_flops(model, shape: list[int]) -> dict[str, int]:
    """Multiply-adds of each convolution of ``model`` for an input of ``shape``."""
    static = model.clone()
    static.reshape({0: shape})
    out = {}
    for node in static.get_ordered_ops():
        if node.get_type_name() in CONVOLUTIONS:
            weights = node.get_input_partial_shape(1).to_shape()
            spatial = node.get_output_partial_shape(0).to_shape()[2:]
            per_out = int(np.prod(list(weights)))
            out[node.get_friendly_name()] = per_out * int(np.prod(list(spatial)))
    return out


def restored(quantized, model, keep: set[str]):
    """A copy of ``quantized`` with every convolution not named in ``keep`` back in floating point: its input
    quantizer bypassed (when no kept convolution shares it) and its weights ``model``'s."""
    copy = quantized.clone()
    originals = {n.get_friendly_name(): n for n in model.get_ordered_ops() if n.get_type_name() in CONVOLUTIONS}
    from openvino import op

    for conv in copy.get_ordered_ops():
        name = conv.get_friendly_name()
        if conv.get_type_name() not in CONVOLUTIONS or name in keep or name not in originals:
            continue
        source = conv.input_value(0).get_node()
        while source.get_type_name() in PASSED:
            source = source.input_value(0).get_node()
        if source.get_type_name() == "FakeQuantize" and not any(u.get_friendly_name() in keep for u in _users(source)):
            _bypass(source)
        weights = originals[name].input_value(1).get_node()
        if weights.get_type_name() == "Constant":
            conv.input(1).replace_source_output(op.Constant(weights.get_data().copy()).output(0))
    copy.validate_nodes_and_infer_types()
    return copy


def _users(node) -> list:
    """The nodes reading ``node``'s output, looked through the ops in PASSED; those that read only its shape
    (ShapeOf, where the model takes any input size) are none."""
    out = []
    for target in node.output(0).get_target_inputs():
        user = target.get_node()
        if user.get_type_name() != "ShapeOf":
            out.extend(_users(user) if user.get_type_name() in PASSED else [user])
    return out


def _bypass(fq) -> None:
    """Every user of quantizer ``fq``'s output reads its input instead."""
    source = fq.input_value(0)
    for target in list(fq.output(0).get_target_inputs()):
        target.replace_source_output(source)
