"""Replace every ``Conv2d(3x3) -> PixelShuffle(r)`` in a model by the fused ConvPixelShuffle op.

The model is traced with torch.fx, so the pattern is found in our models and in foreign ones alike
(e.g. Real-ESRGAN's compact model, whose forward is a loop over a ModuleList). A following activation
(ReLU, PReLU, LeakyReLU) and a following ``+ nearest_upsample(t, r)`` are folded into the epilogue.
Models that cannot be traced are returned unchanged.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn
from torch.nn import functional as F

from pixbatch.ops.conv_pixel_shuffle import ConvPixelShuffle, is_fusable_conv

_ADDS = (operator.add, operator.iadd, torch.add)


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _nearest_upsample_source(node: fx.Node, r: int, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The tensor ``node`` upsamples by exactly r with nearest-neighbour, else None."""
    if node.op == "call_function" and node.target is F.interpolate:
        kwargs = dict(node.kwargs)
        scale = kwargs.get("scale_factor", node.args[2] if len(node.args) > 2 else None)
        mode = kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
        size = kwargs.get("size", node.args[1] if len(node.args) > 1 else None)
        if size is None and scale in (r, float(r)) and mode == "nearest":
            return node.args[0]
    if node.op == "call_module":
        mod = modules.get(node.target)
        if isinstance(mod, nn.Upsample) and mod.mode == "nearest" and mod.scale_factor in (r, float(r)):
            return node.args[0]
    return None


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, torch.Tensor | None, float] | None:
    if node.op != "call_module":
        return None
    mod = modules.get(node.target)
    if type(mod) is nn.ReLU:
        return "relu", None, 0.0
    if type(mod) is nn.PReLU:
        return "prelu", mod.weight, 0.0
    if type(mod) is nn.LeakyReLU:
        return "leaky_relu", None, float(mod.negative_slope)
    return None


def fuse_upsamplers(model: nn.Module, cpu_path: bool = False) -> tuple[nn.Module, int]:
    """A copy of ``model`` with its conv -> PixelShuffle pairs fused, and how many were fused. With
    ``cpu_path`` the fused modules run CPU tensors through the op's channels-last CPU path."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # dynamic control flow etc.: leave the model as it is
        return model, 0
    modules = dict(gm.named_modules())
    fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.PixelShuffle):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module"
                and is_fusable_conv(modules.get(conv_node.target)) and len(conv_node.users) == 1):
            continue
        r = modules[node.target].upscale_factor
        chain = [conv_node, node]
        act, alpha, slope = "none", None, 0.01
        nxt = _only_user(node)
        found = _activation(nxt, modules) if nxt is not None else None
        if found is not None:
            act, alpha, slope = found
            chain.append(nxt)
            nxt = _only_user(nxt)
        residual = None
        if nxt is not None and nxt.op == "call_function" and nxt.target in _ADDS and len(nxt.args) == 2 and not nxt.kwargs:
            other = nxt.args[1] if nxt.args[0] is chain[-1] else nxt.args[0]
            if isinstance(other, fx.Node) and other is not chain[-1] and len(other.users) == 1:
                source = _nearest_upsample_source(other, r, modules)
                if source is not None:
                    residual = source
                    chain += [nxt, other]
        name = f"fused_conv_pixel_shuffle_{fused}"
        gm.add_submodule(name, ConvPixelShuffle(modules[conv_node.target], r, act, alpha, slope,
                                                residual=residual is not None, cpu_path=cpu_path))
        value = chain[-2] if residual is not None else chain[-1]  # the node whose result the fused op gives
        with gm.graph.inserting_after(value):
            new = gm.graph.call_module(name, (conv_node.args[0],) + ((residual,) if residual is not None else ()))
        value.replace_all_uses_with(new)
        pending = list(chain)
        while pending:  # erase the replaced nodes, users before what they use
            dead = next(n for n in pending if not n.users)
            gm.graph.erase_node(dead)
            pending.remove(dead)
        fused += 1
    if not fused:
        return model, 0
    gm.graph.lint()
    gm.recompile()
    return gm, fused


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` in an ``nn.Sequential``
    into that conv's weight and bias (the BN becomes Identity), in place; returns how many. Inference
    then runs one conv instead of conv + a normalisation pass in fp32 (autocast keeps batch norm in
    fp32, so each one also cost two dtype conversions)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and not bn.training
                    and bn.track_running_stats and bn.num_features == conv.out_channels):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                folded += 1
    return folded


def pack_convolutions(model: nn.Module) -> int:
    """Replace every plain ``Conv2d`` by a ``OneDNNConv2d`` (weights packed once, CPU), folding the
    activation that directly follows it in an ``nn.Sequential`` into it as a post-op; in place.
    Returns how many convolutions were replaced."""
    from pixbatch.ops.onednn_conv import OneDNNConv2d, fusable_activation, is_packable_conv, onednn_available

    if not onednn_available():
        return 0
    packed = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq)):
            j = i + 1  # the next layer that does something (a folded batch norm left an Identity)
            while j < len(seq) and type(seq[j]) is nn.Identity:
                j += 1
            if is_packable_conv(seq[i]) and j < len(seq) and fusable_activation(seq[j]):
                seq[i], seq[j] = OneDNNConv2d(seq[i], seq[j]), nn.Identity()
                packed += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_packable_conv(child):
                setattr(parent, name, OneDNNConv2d(child))
                packed += 1
    return packed
