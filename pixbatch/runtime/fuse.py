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


def fuse_upsamplers(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with its conv -> PixelShuffle pairs fused, and how many were fused."""
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
                                                residual=residual is not None))
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
