"""OpenVINO as the CPU backend: the model converted once, compiled per input shape, run by OpenVINO's CPU plugin.

On a CPU, the same oneDNN convolutions run faster under OpenVINO than under eager PyTorch because it
builds every primitive once, ahead of time, where PyTorch's oneDNN ops build a primitive descriptor
on every call (about 30 us each: measured 31 us per call for a 16->16 conv on 8x8 px whose kernel
takes 3 us), and because its graph compiler fuses what eager mode cannot (max-pool, concat, bias and
activation around each conv). For a U-Net at 256 px that is 3.4 ms per image against 5.5 ms for
PyTorch's best eager path on a 2-core Xeon (``python benchmarks/bench_cpu_engines.py --models unet_drive
--sizes 256 --batches 1``).

What this module adds to a plain ``openvino.convert_model`` + ``compile_model``:
- static shapes: the model is converted once with dynamic sizes (about 1 s) and compiled for each
  input shape it meets (about 0.07 s): the same speed as a model converted at that shape, where
  running the dynamic model costs OpenVINO 5-8%; no padding to size buckets, so outputs are those
  of the PyTorch model at every size, and the first batch of each shape is checked against it (a
  model whose Python branches on the input size is converted again at a shape where it disagrees);
- ``Convolution(Concat(a, b))`` rewritten as ``Convolution(a) + Convolution(b)`` with the weights
  split by input channel: the add becomes the second conv's sum post-op, so the skip connections of a
  U-Net decoder are never copied into a concatenated tensor (7% of a U-Net's time at 256 px);
- a batch runs as one request per image over OpenVINO's parallel streams (the throughput hint), a
  single image as one request over every core (the latency hint); inputs are shared, not copied;
- OpenVINO's threads and PyTorch's must not take turns on the same cores: PyTorch's OpenMP workers
  spin after each op and OpenVINO's after each inference, and on 2 cores either side then waits for
  a time slice (measured: the U-Net at 256 px, 3.6 ms alone, took 5.4 ms between PyTorch ops, while
  PyTorch's own path went from 5.9 to 9.1 ms beside OpenVINO). ``prepare_model`` therefore sets
  PyTorch's CPU threads to one when it hands a job to OpenVINO.

Used by ``prepare_model`` (backend "openvino", or "auto" where it measures faster); OpenVINO is the
optional ``openvino`` extra (pip install 'pixbatch[openvino]'). ONNX files need none of the above: OpenVINO
reads them as they are (``OpenVINOSession``).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

MAX_SHAPES = 16  # compiled input shapes kept per model (each holds a copy of the weights)
AGREEMENT_DB = 45.0  # OpenVINO's output against PyTorch's, as images in [0, 1]: below this, PyTorch runs


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


_cores: list = []


def shared_core():
    """The process's one ``openvino.Core``, never destroyed: a Core finalised while models it compiled are
    being finalised too (garbage collected in one pass, as before a decode worker forks) crashed the
    process, about one time in three in the test suite; one Core is also what OpenVINO recommends."""
    if not _cores:
        import openvino as ov

        _cores.append(ov.Core())
    return _cores[0]


def split_concat_convolutions(model) -> int:
    """Rewrite every ``Convolution`` that is the only consumer of a channel ``Concat`` as the sum of
    one convolution per concatenated input (weights split along input channels); in place on an
    ``openvino.Model``. Returns how many were rewritten."""
    import openvino.opset13 as ops

    rewritten = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Convolution":
            continue
        concat, weights = node.input_value(0).get_node(), node.input_value(1).get_node()
        if (concat.get_type_name() != "Concat" or weights.get_type_name() != "Constant"
                or len(concat.output(0).get_target_inputs()) != 1):
            continue
        rank = concat.get_output_partial_shape(0).rank.get_length()
        if concat.get_attributes()["axis"] % rank != 1:
            continue
        w, attrs = weights.get_data(), node.get_attributes()
        total, start = None, 0
        for source in (i.get_source_output() for i in concat.inputs()):
            channels = source.get_partial_shape()[1].get_length()
            part = ops.convolution(source, ops.constant(np.ascontiguousarray(w[:, start:start + channels])),
                                   attrs["strides"], attrs["pads_begin"], attrs["pads_end"], attrs["dilations"],
                                   attrs["auto_pad"])
            total = part if total is None else ops.add(total, part)
            start += channels
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(total.output(0))
        rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
    return rewritten


class OpenVINOModel(nn.Module):
    """Runs ``module`` (an eval-mode PyTorch model on the CPU, never modified) through OpenVINO.

    Called like the module on a float32 NCHW batch; returns float32 NCHW. ``precision`` is OpenVINO's
    inference precision ("bf16" or "f32"). The model is converted once, with dynamic sizes, and compiled
    for each input shape it meets (about 0.07 s; the ``max_shapes`` most recent are kept). The first
    batch of each shape also runs through ``fallback`` (the prepared PyTorch model): if the two disagree
    (a size branch in the model's Python that the conversion froze, such as TensorFlow-style "same"
    padding computed from the input size), the model is converted again at that shape (about 1 s), and
    if that still disagrees or fails, the shape stays with PyTorch. A ``model`` given converted already (an
    int8 model: runtime/int8.py) is only compiled, and checked at ``agreement`` dB, never converted again."""

    size_bucket, nchw, graph_compiled = 1, True, False  # a Backend (runtime/backends.py): exact sizes, NCHW

    def __init__(self, module: nn.Module, fallback: nn.Module, precision: str, *, task: str, in_channels: int,
                 max_shapes: int = MAX_SHAPES, label: str | None = None, model=None,
                 agreement: float = AGREEMENT_DB) -> None:
        super().__init__()
        self.label = label or f"openvino ({precision})"  # what the report says (the factory adds its speed)
        import openvino as ov

        self._ov, self._core = ov, shared_core()
        self.source, self.fallback = module, fallback
        self.precision, self.task, self.in_channels, self.max_shapes = precision, task, in_channels, max_shapes
        # the converted model (``model``: converted already, e.g. quantized to int8); False when conversion failed
        self._model, self._given = model, model is not None
        self.agreement = agreement  # dB against PyTorch's output below which a shape stays with PyTorch
        self._shapes: OrderedDict[tuple[int, ...], _Compiled | None] = OrderedDict()
        self.splits = 0  # concat convs rewritten in the conversion

    @property
    def note(self) -> str:
        return f"backend: {self.label}"

    def converted(self) -> bool:
        """Convert now (once) if not yet done; whether OpenVINO can run this model."""
        if self._model is None:
            try:
                self._model = self._convert(torch.rand(1, self.in_channels, 64, 64), dynamic=True)
            except Exception as exc:  # an op OpenVINO cannot convert: PyTorch runs the model
                warnings.warn(f"OpenVINO cannot convert this model ({type(exc).__name__}: {exc}); PyTorch runs it",
                              stacklevel=2)
                self._model = False
        return self._model is not False

    def _convert(self, example: torch.Tensor, *, dynamic: bool):
        """The source traced on ``example`` and converted, with dynamic sizes or at the example's shape."""
        model = convert_module(self.source, example, dynamic=dynamic)
        self.splits = split_concat_convolutions(model)
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.is_grad_enabled() or not self.converted():
            return self.fallback(x)
        shape = (1, *x.shape[1:])
        if shape in self._shapes:
            self._shapes.move_to_end(shape)
            compiled = self._shapes[shape]
            return self.fallback(x) if compiled is None else compiled(x)
        want = self.fallback(x[:1])
        # the dynamic model compiled at this shape; where a size branch in the model's Python was frozen
        # by the trace (it runs but computes another function), the model traced again at this shape
        y, compiled, reason = None, None, ""
        for dynamic in (True,) if self._given else (True, False):  # a given model is never converted again
            try:
                if dynamic:
                    model = self._model.clone()
                    model.reshape({0: list(shape)})
                else:
                    model = self._convert(x[:1].float().contiguous(), dynamic=False)
                compiled = _Compiled(self._ov, self._core, model, self.precision)
                y = compiled(x)
            except Exception as exc:  # a size the converted model cannot take
                compiled, reason = None, f"cannot run it ({type(exc).__name__}: {exc})"
                continue
            if y.shape[1:] == want.shape[1:] and agreement_db(y[:1], want, self.task) >= self.agreement:
                break
            compiled, reason = None, "differs from PyTorch's"
        if compiled is None:
            warnings.warn(f"OpenVINO's output at {list(x.shape[-2:])} px {reason}; PyTorch runs this size",
                          stacklevel=2)
        self._shapes[shape] = compiled
        if len(self._shapes) > self.max_shapes:
            self._shapes.popitem(last=False)
        return y if compiled is not None else self.fallback(x)

    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes OpenVINO runs (one image each), oldest first."""
        return [s for s, c in self._shapes.items() if c is not None]

    def pytorch_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes left to PyTorch (OpenVINO could not run them, or disagreed), oldest first."""
        return [s for s, c in self._shapes.items() if c is None]

    def batch_ways(self) -> dict[tuple[int, ...], dict[int, str]]:
        """Per input shape, how each batch size met so far runs: "batched" (one request) or "queue"."""
        return {s: dict(c.choices) for s, c in self._shapes.items() if c is not None and c.choices}

    def extra_repr(self) -> str:
        return f"precision={self.precision}, shapes={self.compiled_shapes()}"


def convert_module(module: nn.Module, example: torch.Tensor, *, dynamic: bool = True):
    """``module`` traced on ``example`` (NCHW) and converted to an ``openvino.Model`` whose input has dynamic
    batch, height and width (or the example's shape)."""
    import openvino as ov

    shape = [-1, example.shape[1], -1, -1] if dynamic else list(example.shape)
    # traced outside any caller's autocast: OpenVINO applies the precision itself
    with warnings.catch_warnings(), torch.no_grad(), torch.autocast("cpu", enabled=False):
        warnings.simplefilter("ignore")  # tracer warnings about size branches: checked per shape
        return ov.convert_model(module, example_input=example, input=shape)


def agreement_db(a: torch.Tensor, b: torch.Tensor, task: str) -> float:
    """PSNR in dB of output ``a`` against ``b`` as images in [0, 1]: clamped, or for segmentation
    logits, through a sigmoid (one channel) or a softmax (several)."""

    from pixbatch.ops.psnr import psnr

    def unit(t: torch.Tensor) -> np.ndarray:
        t = t.float()
        if task == "seg":
            return (torch.sigmoid(t) if t.shape[1] == 1 else torch.softmax(t, dim=1)).numpy()
        return t.clamp(0, 1).numpy()

    return psnr(unit(a), unit(b), max_val=1.0)


class _Compiled:
    """One input shape: a latency-hinted model for single images; for a batch of N images, whichever of
    two ways measures faster on the first such batch: N parallel requests of one image over OpenVINO's
    throughput streams, or one request of N images compiled at that batch size (measured at 128 px,
    batch 4: the U-Net 697 against 803 us per image, edsr_tiny_x4 7591 against 6310). Requests read the
    input where it is and write straight into the output tensor they return (no copy either way)."""

    def __init__(self, ov, core, model, precision: str) -> None:
        self._ov, self._core, self._model, self._precision = ov, core, model, precision
        compiled = self._compile(model, "LATENCY")
        self._out_shape = tuple(compiled.output(0).get_shape())[1:]
        self._single = compiled.create_infer_request()
        self._queue = None
        self._batched: dict[int, object] = {}  # batch size -> its one request, or None: the queue is faster
        self.choices: dict[int, str] = {}  # batch size -> "batched" or "queue", as measured

    def _compile(self, model, hint: str):
        return self._core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self._precision,
                                                       "PERFORMANCE_HINT": hint})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        data = np.ascontiguousarray(x.float().numpy())  # NCHW float32; a copy only if it was not
        n = len(data)
        out = torch.empty(n, *self._out_shape)
        if n == 1:
            self._infer(self._single, data, out)
            return out
        if n not in self._batched:
            self._batched[n] = self._choose(data, out)
            return out
        request = self._batched[n]
        if request is None:
            self._over_queue(data, out)
        else:
            self._infer(request, data, out)
        return out

    def _choose(self, data: np.ndarray, out: torch.Tensor):
        """Run the batch both ways, twice each (the first run of a request is slower), and keep the way
        whose second run was faster; ``out`` holds the batch's output either way."""
        model = self._model.clone()
        model.reshape({0: [len(data), *data.shape[1:]]})
        request = self._compile(model, "LATENCY").create_infer_request()
        times = {}
        for way in ("queue", "batched", "queue", "batched"):
            start = time.perf_counter()
            if way == "queue":
                self._over_queue(data, out)
            else:
                self._infer(request, data, out)
            times[way] = time.perf_counter() - start
        self.choices[len(data)] = min(times, key=times.get)
        return request if self.choices[len(data)] == "batched" else None

    def _over_queue(self, data: np.ndarray, out: torch.Tensor) -> None:
        if self._queue is None:
            compiled = self._compile(self._model, "THROUGHPUT")
            self._queue = self._ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        for i in range(len(data)):
            self._bind(self._queue[self._queue.get_idle_request_id()], data[i : i + 1], out[i : i + 1])
            self._queue.start_async()
        self._queue.wait_all()

    def _infer(self, request, data: np.ndarray, out: torch.Tensor) -> None:
        self._bind(request, data, out)
        request.infer()

    def _bind(self, request, data: np.ndarray, out: torch.Tensor) -> None:
        request.set_input_tensor(self._ov.Tensor(data, shared_memory=True))
        request.set_output_tensor(self._ov.Tensor(out.numpy(), shared_memory=True))


class OpenVINOSession:
    """An ONNX file run by OpenVINO's CPU plugin, called like an ONNX Runtime session (``run``), so the
    module that feeds a session (models/onnx_model.py) runs it unchanged. The file is read once (no
    tracing: ONNX is OpenVINO's own input) and compiled for each input shape it meets (the ``max_shapes``
    most recent are kept), latency-hinted: one request computes a whole batch over every core."""

    def __init__(self, path, precision: str, max_shapes: int = MAX_SHAPES) -> None:
        self._core, self.precision, self.max_shapes = shared_core(), precision, max_shapes
        self._model = self._core.read_model(str(path))
        self._requests: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def run(self, _names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import openvino as ov

        (data,) = feeds.values()
        if data.shape not in self._requests:
            model = self._model.clone()
            model.reshape({0: list(data.shape)})
            compiled = self._core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.precision,
                                                               "PERFORMANCE_HINT": "LATENCY"})
            output = compiled.output(0)
            self._requests[data.shape] = (compiled.create_infer_request(), tuple(output.get_shape()),
                                          output.get_element_type().to_dtype())
            if len(self._requests) > self.max_shapes:
                self._requests.popitem(last=False)
        self._requests.move_to_end(data.shape)
        request, shape, dtype = self._requests[data.shape]
        out = np.empty(shape, dtype)  # the request writes the output here: no copy out of its own buffer
        request.set_output_tensor(ov.Tensor(out, shared_memory=True))
        request.infer({0: data}, share_inputs=True)
        return [out]
