"""pixbatch's CPU path against the engines a speed-minded user would pick instead, model only.

    python benchmarks/bench_cpu_engines.py [--models edsr_tiny_x4,unet_drive] [--sizes 128,256,512]
                                           [--batches 1,pipeline] [--no-compile] [--out FILE]

Every shipped model, the foreign compact model and Engstrom's udnie style net (shared data), at each
size (input px) and batch ("pipeline" = the batch `pixbatch upscale/segment` forms at that size), with
rows for: eager fp32 NCHW (the baseline of every ratio), pixbatch default (what the command line
prepares for a job of 64 MP of input or more: backend auto, which hands the model to OpenVINO where
that measures faster with the same outputs, with the host-memory reuse the CLI turns on for the whole
process, this one included), the PyTorch backend (channels-last, bf16 where the CPU computes it
natively, batch norms folded, convs packed for oneDNN with their activations as post-ops, fused
channels-last upsamplers) with and without those rewrites (kernels=torch), torch.compile with inductor
freezing (oneDNN weights pre-packed at compile time; compile seconds reported apart), ONNX Runtime fp32
(all graph optimisations, one thread per core), and OpenVINO (converted from the PyTorch module; f32 and
bf16 inference-precision hints, each with the latency hint and, batch 1, the throughput hint driving an
async request queue; bf16 also converted at the exact input shape), and the model as `pixbatch export`
writes it, run by pixbatch's ONNX backends (ONNX Runtime; OpenVINO f32 and bf16; auto, which measures the
two; the auto row's setup includes the export and its verification).

Per row: output MP/s, ratio to eager, PSNR of the output against the eager fp32 output (images
clamped to [0, 1]; segmentation logits through sigmoid/softmax), and achieved GFLOP/s (conv/matmul
FLOPs from torch's FlopCounterMode) against this CPU's peak for the row's dtype. The peak is derived
from the ISA and clock: cores x GHz x FLOP per cycle per core, where AVX-512 with two FMA ports gives
64 fp32 FLOP/cycle, AVX512-BF16 (vdpbf16ps) 128 bf16 FLOP/cycle and AMX-BF16 1024 bf16 FLOP/cycle.
Writes benchmarks/results/cpu_engines_cpu.json and .png. ONNX Runtime and OpenVINO come from the
``engines`` extra: pip install -e '.[engines]'.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from benchlib import COMPACT, RESULTS, SHARED_DATA, count_flops, environment, median_seconds, write_result

UDNIE = SHARED_DATA / "style_weights" / "ml5_lengstrom" / "udnie"
DEFAULT_MODELS = "edsr_tiny_x2,edsr_tiny_x3,edsr_tiny_x4,rlfn_x4,unet_drive,compact,udnie"


def cpu_peak_gflops() -> dict:
    """Peak GFLOP/s per dtype from the ISA flags and the clock in /proc/cpuinfo (how: module docstring)."""
    flags, mhz = set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    except OSError:
        return {}
    cores = os.cpu_count() or 1
    ghz = (mhz or 0) / 1000
    fp32 = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    bf16 = 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    return {"cores": cores, "ghz": ghz, "fp32_flop_per_cycle": fp32, "bf16_flop_per_cycle": bf16,
            "fp32": cores * ghz * fp32, "bf16": cores * ghz * bf16,
            "isa": sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))}


def load(name: str):
    from pixbatch.models import create_model

    return create_model({"compact": COMPACT, "udnie": UDNIE}.get(name, name))


def variants(name: str, x: torch.Tensor, compile_models: bool):
    """(label, dtype, callable(x) -> output tensor, setup seconds) for each way of running the model."""
    from pixbatch.runtime.backends import OPENVINO_MIN_PIXELS
    from pixbatch.runtime.device import resolve_precision
    from pixbatch.runtime.prepare import prepare_model

    cpu = torch.device("cpu")
    eager = load(name)
    yield "eager fp32 NCHW", "fp32", prepare_model(eager, cpu, torch.float32, channels_last=False, kernels="torch"), 0.0
    dtype = resolve_precision("auto", cpu, eager.info)
    label = "bf16" if dtype == torch.bfloat16 else "fp32"
    t0 = time.perf_counter()
    default = prepare_model(load(name), cpu, dtype, backend="auto", job_pixels=OPENVINO_MIN_PIXELS)
    yield (f"pixbatch default ({default.backend}; {default.kernels})", label, default, time.perf_counter() - t0)
    if default.backend_note:  # not the PyTorch path: that one too
        yield f"pixbatch PyTorch backend ({default.kernels})", label, prepare_model(load(name), cpu, dtype), 0.0
    yield "pixbatch PyTorch backend without its CPU rewrites", label, prepare_model(load(name), cpu, dtype,
                                                                                   kernels="torch"), 0.0
    if compile_models:
        import torch._inductor.config as inductor

        inductor.freezing = True
        module = load(name).module.eval().to(memory_format=torch.channels_last)
        compiled = torch.compile(module)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run_compiled(x, compiled=compiled):
            with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                return compiled(x.contiguous(memory_format=torch.channels_last))

        t0 = time.perf_counter()
        try:
            run_compiled(xc)
        except Exception as exc:  # inductor cannot compile every model: a row that says so
            yield f"torch.compile + inductor freezing (failed: {type(exc).__name__})", label, None, 0.0
        else:
            yield "torch.compile + inductor freezing", label, run_compiled, time.perf_counter() - t0
        finally:
            inductor.freezing = False
    yield from onnxruntime_variant(name, x)
    yield from openvino_variants(name, x)
    yield from pixbatch_onnx_variants(name)
    yield from int8_variants(name, dtype)


def int8_variants(name: str, dtype: torch.dtype):
    """`--precision int8` (NNCF under accuracy control, on the shipped calibration set; made once per run and
    cached, its making time as the setup) and plain NNCF default int8 on the same calibration inputs. Their
    quality on held-out public data (Set5, DRIVE) is benchmarks/bench_int8.py's."""
    from pixbatch.runtime.int8 import Int8Refused, int8_available
    from pixbatch.runtime.prepare import prepare_model
    from pixbatch.tasks.calibration import int8_for

    if not int8_available():
        return
    from bench_int8 import nncf_default

    cpu = torch.device("cpu")
    t0 = time.perf_counter()
    try:
        made = int8_for(load(name), (), dtype)
    except Int8Refused as exc:
        yield f"pixbatch int8 (refused: {str(exc)[:70]})", "int8", None, 0.0
    else:
        kept = len(made.entry["float_convolutions"])
        yield (f"pixbatch int8 ({kept} of {made.entry['convolutions']} convs in floating point)", "int8",
               prepare_model(load(name), cpu, dtype, int8=made), time.perf_counter() - t0)
    t0 = time.perf_counter()
    plain = nncf_default(load(name), dtype)
    yield "NNCF default int8", "int8", prepare_model(load(name), cpu, dtype, int8=plain), time.perf_counter() - t0


def pixbatch_onnx_variants(name: str):
    """The model as `pixbatch export` writes it, run by pixbatch's ONNX backends: --backend auto (for a job
    of 64 MP: it measures ONNX Runtime against OpenVINO f32), onnxruntime, openvino, and --precision bf16
    (OpenVINO)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    import tempfile

    from pixbatch.models import create_model
    from pixbatch.models.onnx_export import export_onnx
    from pixbatch.runtime.backends import OPENVINO_MIN_PIXELS
    from pixbatch.runtime.prepare import prepare_model

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        t0 = time.perf_counter()
        try:
            export_onnx(load(name), path)
        except Exception as exc:  # pixbatch export refuses it (said in the row)
            yield f"pixbatch ONNX (export refused: {str(exc)[:60]})", "fp32", None, 0.0
            return
        exported = time.perf_counter() - t0
        for backend, dtype in (("auto", torch.float32), ("onnxruntime", torch.float32), ("openvino", torch.float32),
                               ("openvino", torch.bfloat16)):
            t0 = time.perf_counter()
            runner = prepare_model(create_model(path), cpu, dtype, backend=backend, job_pixels=OPENVINO_MIN_PIXELS)
            label = "bf16" if dtype == torch.bfloat16 else "fp32"
            yield (f"pixbatch ONNX --backend {backend} {label} ({runner.backend})", label, runner,
                   time.perf_counter() - t0 + (exported if backend == "auto" else 0.0))


def onnxruntime_variant(name: str, x: torch.Tensor):
    try:
        import onnxruntime as ort
    except ImportError:
        return
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(load(name).module.eval(), (x,), str(path), input_names=["x"], output_names=["y"],
                              opset_version=17, dynamo=False)
        except Exception as exc:  # an op the exporter does not know: a row that says so
            yield f"onnxruntime fp32 (export failed: {type(exc).__name__})", "fp32", None, 0.0
            return
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = os.cpu_count() or 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(x, session=session):
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])

    yield "onnxruntime fp32", "fp32", run, time.perf_counter() - t0


def openvino_variants(name: str, x: torch.Tensor):
    try:
        import openvino as ov
    except ImportError:
        return
    core = ov.Core()
    t0 = time.perf_counter()
    try:
        converted = ov.convert_model(load(name).module.eval(), example_input=x)
    except Exception as exc:
        yield f"openvino (conversion failed: {type(exc).__name__})", "fp32", None, 0.0
        return
    convert_s = time.perf_counter() - t0
    for precision in ("f32", "bf16"):
        for hint in ("LATENCY", "THROUGHPUT"):
            if hint == "THROUGHPUT" and x.shape[0] > 1:
                continue
            t0 = time.perf_counter()
            compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "PERFORMANCE_HINT": hint})
            setup = convert_s + time.perf_counter() - t0
            label = f"openvino {precision} {hint.lower()}"
            dtype = "bf16" if precision == "bf16" else "fp32"
            if hint == "LATENCY":
                request = compiled.create_infer_request()

                def run(x, request=request):
                    request.infer({0: x.numpy()})
                    return torch.from_numpy(request.get_output_tensor(0).data.copy())

                yield label, dtype, run, setup
            else:
                yield label + " (async queue)", dtype, AsyncQueue(ov, compiled), setup
    t0 = time.perf_counter()  # the same at this exact input shape: OpenVINO plans every buffer ahead
    static = ov.convert_model(load(name).module.eval(), example_input=x, input=[list(x.shape)])
    compiled = core.compile_model(static, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()

    def run_static(x, request=request):
        request.infer({0: x.numpy()}, share_inputs=True)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    yield "openvino bf16 latency, static shape", "bf16", run_static, time.perf_counter() - t0


class AsyncQueue:
    """OpenVINO's throughput mode as it is meant to be used: as many requests in flight as the plugin
    asks for. Calling it runs one batch of ``jobs`` inferences and returns the last output; the timing
    loop divides by ``jobs``."""

    def __init__(self, ov, compiled) -> None:
        self.jobs = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.queue = ov.AsyncInferQueue(compiled, self.jobs)
        self.out = None

        def done(request, _):
            self.out = request.get_output_tensor(0).data.copy()

        self.queue.set_callback(done)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        data = x.numpy()
        for _ in range(self.jobs):
            self.queue.start_async({0: data})
        self.queue.wait_all()
        return torch.from_numpy(self.out)


def partial(rows: list[dict], malloc_reuse: bool, peak: dict) -> dict:
    """The result record: environment, engine versions, and the rows so far."""
    versions = {}
    for module in ("onnxruntime", "openvino"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = None
    return {**environment(torch.device("cpu")), **versions, "malloc_reuse": malloc_reuse, "peak_gflops": peak,
            "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--sizes", default="128,256,512")
    p.add_argument("--batches", default="1,pipeline")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per row")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--summary", type=Path, default=None, metavar="JSON",
                   help="print the standings of a result written before, measuring nothing")
    args = p.parse_args()
    if args.summary is not None:
        for line in standings(json.loads(args.summary.read_text())["rows"]):
            print(line)
        return

    from pixbatch.runtime.backends import TORCH_THREADS
    from pixbatch.runtime.batcher import CPU_BATCH_PIXELS
    from pixbatch.runtime.host_memory import reuse_freed_memory
    from pixbatch.runtime.openvino_backend import agreement_db
    from pixbatch.runtime.prepare import Runner

    malloc_reuse = reuse_freed_memory()  # as the command line does, for every row of this process
    cpu = torch.device("cpu")
    peak = cpu_peak_gflops()
    rows = []
    models = [m for m in args.models.split(",") if m != "compact" or COMPACT.exists()]
    models = [m for m in models if m != "udnie" or UDNIE.exists()]
    for name in models:
        info = load(name).info
        for size in map(int, args.sizes.split(",")):
            batches = sorted({max(1, CPU_BATCH_PIXELS // (size * size)) if b == "pipeline" else int(b)
                              for b in args.batches.split(",")})
            for batch in batches:
                torch.manual_seed(0)
                x = torch.rand(batch, 3, size, size)
                scale = info.scale if info.task == "sr" else 1
                out_mp = batch * (size * scale) ** 2 / 1e6
                flops = count_flops(load(name).module.eval(), x)
                reference = None
                for label, dtype, fn, setup in variants(name, x, args.compile):
                    row = {"model": name, "task": info.task, "size": size, "batch": batch, "variant": label,
                           "dtype": dtype, "setup_seconds": round(setup, 2)}
                    if fn is None:
                        rows.append(row)
                        print(f"{name:<14} {size:>4} b{batch:<2} {label}", flush=True)
                        continue
                    # a job on OpenVINO runs with one PyTorch thread (prepare_model sets it); every other row with all
                    on_openvino = isinstance(fn, Runner) and fn.backend.startswith("openvino")
                    torch.set_num_threads(1 if on_openvino else TORCH_THREADS)
                    with torch.no_grad():
                        y = fn(x)
                    if reference is None:
                        reference = y
                    per_call = median_seconds(lambda fn=fn, x=x: fn(x), cpu, args.min_time)
                    jobs = getattr(fn, "jobs", 1)
                    seconds = per_call / jobs
                    row.update(seconds=seconds, output_mp_per_s=out_mp / seconds,
                               psnr_vs_fp32_db=agreement_db(y, reference, info.task),
                               gflops=flops / seconds / 1e9)
                    if peak.get(dtype):
                        row["pct_of_peak"] = 100 * row["gflops"] / peak[dtype]
                    rows.append(row)
                base = next(r for r in rows if r["model"] == name and r["size"] == size and r["batch"] == batch
                            and r["variant"] == "eager fp32 NCHW")
                for r in rows:
                    if r["model"] == name and r["size"] == size and r["batch"] == batch and "seconds" in r:
                        r["ratio_to_eager"] = base["seconds"] / r["seconds"]
                        print(f"{name:<14} {size:>4} b{batch:<2} {r['variant']:<58} {r['output_mp_per_s']:7.2f} MP/s "
                              f"{r['ratio_to_eager']:5.2f}x  PSNR {r['psnr_vs_fp32_db']:6.1f}  "
                              f"{r['gflops']:6.0f} GFLOP/s ({r.get('pct_of_peak', 0):4.1f}% of {r['dtype']} peak)"
                              f"  setup {r['setup_seconds']:.1f}s", flush=True)
                write_result(partial(rows, malloc_reuse, peak), "cpu_engines_cpu", args.out)  # a crash keeps the rest
    out = write_result(partial(rows, malloc_reuse, peak), "cpu_engines_cpu", args.out)
    for line in standings(rows):
        print(line)
    print(f"wrote {out}")
    draw(rows, (args.out or RESULTS / "cpu_engines_cpu.json").with_suffix(".png"))


def standings(rows: list[dict]) -> list[str]:
    """Per model, size and batch: pixbatch default against the best OpenVINO bf16 row and against the
    fastest other row (its ratio and name), then how many cells the default leads."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if "output_mp_per_s" in r:
            cells.setdefault((r["model"], r["size"], r["batch"]), []).append(r)
    lines, fastest, over_openvino = [], 0, 0
    for (name, size, batch), measured in cells.items():
        default = next((r for r in measured if r["variant"].startswith("pixbatch default")), None)
        if default is None:
            continue
        others = [r for r in measured if r is not default]
        openvino = max((r for r in others if r["variant"].startswith("openvino bf16")),
                       key=lambda r: r["output_mp_per_s"], default=None)
        best = max(others, key=lambda r: r["output_mp_per_s"])
        mp = default["output_mp_per_s"]
        fastest += mp >= best["output_mp_per_s"]
        line = f"{name:<14} {size:>4} b{batch:<2} pixbatch default {mp:6.2f} MP/s (PSNR {default['psnr_vs_fp32_db']:.1f})"
        if openvino is not None:
            over_openvino += mp >= openvino["output_mp_per_s"]
            line += f"  {mp / openvino['output_mp_per_s']:.2f}x the best OpenVINO bf16 row ({openvino['variant']})"
        line += f"  {mp / best['output_mp_per_s']:.2f}x the fastest other row ({best['variant'].split(' (')[0]})"
        lines.append(line)
    lines.append(f"pixbatch default is the fastest row in {fastest} of {len(lines)} cells and at least the best "
                 f"OpenVINO bf16 row in {over_openvino}")
    return lines


def draw(rows: list[dict], path: Path, size: int = 256) -> None:
    """Output MP/s of each variant, per model, at ``size`` px and batch 1."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [r for r in rows if r["size"] == size and r["batch"] == 1 and "seconds" in r]
    models = list(dict.fromkeys(r["model"] for r in picked))
    labels = list(dict.fromkeys(r["variant"].split(" (")[0] for r in picked))
    fig, ax = plt.subplots(figsize=(12, 5.5))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        values = [next((r["output_mp_per_s"] for r in picked if r["model"] == m and r["variant"].split(" (")[0] == label), 0)
                  for m in models]
        ax.bar([j + i * width for j in range(len(models))], values, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models)
    ax.set_ylabel(f"output MP/s ({size} px input, batch 1)")
    ax.set_title("pixbatch default against ONNX Runtime and OpenVINO on this CPU (higher is better)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
