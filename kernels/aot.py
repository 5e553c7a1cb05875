"""Compile the Triton kernels ahead of time for a GPU architecture, without a GPU, and check what the
compiler allocates (registers, spills, shared memory) against that architecture's limits.

    python -m pixbatch.kernels.aot [--arch 80 90] [--dtypes bf16,fp32] [--jobs 2] [--out FILE.json]
    python -m pixbatch.kernels.aot --arch native      # on a GPU: also the driver's own figures

Each entry of the conv+PixelShuffle kernel's autotune space is compiled by ``triton.compile`` for a
``GPUTarget`` (ptxas ships with triton), specialised as a real launch on channels-last tensors is
(channel strides of 1, 16-byte-aligned pointers). ``ptxas -v`` reports registers per thread, spilled
bytes and stack; triton reports the shared memory the kernel needs. Run it as a module: it needs the
kernels compiled, not interpreted, so it turns ``TRITON_INTERPRET`` off for its own process.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "0"  # before triton and the kernel module are imported

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

# Per-architecture hardware limits (CUDA C Programming Guide, "Technical Specifications per Compute
# Capability"): registers per thread, 32-bit registers per SM, shared memory per block (opt-in maximum).
LIMITS = {
    80: {"name": "sm_80 (A100)", "regs_per_thread": 255, "regs_per_sm": 65536, "shared_per_block": 163 * 1024},
    90: {"name": "sm_90a (H100/H200)", "regs_per_thread": 255, "regs_per_sm": 65536, "shared_per_block": 227 * 1024},
}
SPECIALISED = {"stride_xc": 1, "stride_wn": 1, "stride_rc": 1, "stride_oc": 1}  # channels-last launches
POINTER_DTYPES = {"x_ptr", "w_ptr", "res_ptr", "out_ptr"}  # in the compute dtype; bias/alpha stay fp32


def _kernel():
    import triton
    from pixbatch.kernels import conv_pixel_shuffle as module

    fn = getattr(module.conv3x3_pixel_shuffle_kernel, "fn", None)
    if not isinstance(fn, triton.runtime.jit.JITFunction):
        raise RuntimeError("the kernel module was imported in interpreter mode; run `python -m pixbatch.kernels.aot`")
    return module, fn


def compile_config(config: tuple, dtype: str, arch: int | str, r: int = 4) -> dict:
    """Compile one autotune entry; registers, spills, stack and shared memory, checked against LIMITS."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    _, fn = _kernel()
    bm, bn, bk, warps, stages = config
    consts = {"R": r, "ACT": 0, "HAS_BIAS": True, "HAS_RES": False, "UPCAST_DOT": False,
              "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32", "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk,
              **SPECIALISED}
    signature = {}
    for p in fn.params:
        if p.name in consts:
            signature[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            signature[p.name] = f"*{dtype}" if p.name in POINTER_DTYPES else "*fp32"
        else:
            signature[p.name] = "fp32" if p.name == "slope" else "i32"
    attrs = {(fn.arg_names.index(p.name),): [["tt.divisibility", 16]] for p in fn.params if p.name.endswith("_ptr")}
    source = ASTSource(fn=fn, signature=signature, attrs=attrs,
                       constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    if arch == "native":
        import torch

        major, minor = torch.cuda.get_device_capability()
        arch = major * 10 + minor
    kernel = triton.compile(source, target=GPUTarget("cuda", int(arch), 32),
                            options={"num_warps": warps, "num_stages": stages})
    ptx = kernel.asm["ptx"]
    target = re.search(r"^\.target\s+(\S+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        info = subprocess.run([get_ptxas(int(arch)).path, "-v", "--gpu-name", target, str(path), "-o", os.devnull],
                              capture_output=True, text=True, check=True).stderr
    row = {"config": {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": warps, "num_stages": stages},
           "dtype": dtype, "arch": target, "R": r,
           "registers": int(re.search(r"Used (\d+) registers", info).group(1)),
           "spill_store_bytes": int(re.search(r"(\d+) bytes spill stores", info).group(1)),
           "spill_load_bytes": int(re.search(r"(\d+) bytes spill loads", info).group(1)),
           "stack_bytes": int(re.search(r"(\d+) bytes stack frame", info).group(1)),
           "shared_bytes": int(kernel.metadata.shared)}
    limits = LIMITS.get(int(arch) // 10 * 10)
    if limits:
        threads = 32 * warps
        row["problems"] = [text for bad, text in (
            (row["registers"] > limits["regs_per_thread"], f"{row['registers']} registers per thread"),
            (row["registers"] * threads > limits["regs_per_sm"], f"{row['registers'] * threads} registers per block"),
            (row["shared_bytes"] > limits["shared_per_block"], f"{row['shared_bytes']} B of shared memory per block"),
        ) if bad]
    if os.environ.get("PIXBATCH_AOT_NATIVE") == "1":  # on a real GPU: the driver's view too
        kernel._init_handles()
        row.update(driver_registers=kernel.n_regs, driver_spills=kernel.n_spills)
    return row


def _one(job: tuple) -> dict:
    return compile_config(*job)


def check(archs: list, dtypes: list[str], jobs: int = 2, r: int = 4) -> list[dict]:
    module, _ = _kernel()
    work = [(config, dtype, arch, r) for arch in archs for dtype in dtypes for config in module.AUTOTUNE_SPACE]
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(_one, work))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=["80", "90"], help="compute capabilities, or 'native'")
    p.add_argument("--dtypes", default="bf16,fp32")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if "native" in args.arch:
        os.environ["PIXBATCH_AOT_NATIVE"] = "1"
    archs = [a if a == "native" else int(a) for a in args.arch]
    rows = check(archs, args.dtypes.split(","), args.jobs)
    for row in rows:
        c = row["config"]
        print(f"{row['arch']:<7} {row['dtype']:<5} {c['BLOCK_M']:>3}x{c['BLOCK_N']:<3}x{c['BLOCK_K']:<3} "
              f"w{c['num_warps']} s{c['num_stages']}  {row['registers']:>3} regs  spills {row['spill_store_bytes']:>5} B  "
              f"shared {row['shared_bytes']:>6} B  {'; '.join(row.get('problems', [])) or 'within limits'}", flush=True)
    if args.out:
        import triton

        args.out.write_text(json.dumps({"triton": triton.__version__, "limits": LIMITS, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")
    if any(row.get("problems") for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
