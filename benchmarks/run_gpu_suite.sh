#!/usr/bin/env bash
# Every GPU table the README promises, in one command, on a machine with a CUDA GPU:
#
#     bash benchmarks/run_gpu_suite.sh            # after: pip install -c constraints.txt -e '.[test,bench]'
#
# Results land in benchmarks/results/ under the GPU's name (cuda_h100_*.json, ...: device_tag in
# benchlib.py), next to the CPU ones; commit them. A script that fails is reported and the rest still
# run; the exit code says whether all of them passed. Needs the shared data beside the clone
# (../shared/data) for the Set5 frontier and the compact model; the rest runs without it.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')" || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
tag=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); import torch, benchlib; print(benchlib.device_tag(torch.device('cuda')))")
log="benchmarks/results/${tag}_suite.log"
failed=()
run() {  # run NAME CMD...: one table; its output goes to the terminal and the log
  echo "=== $1: ${*:2}" | tee -a "$log"
  if ! "${@:2}" 2>&1 | tee -a "$log"; then failed+=("$1"); fi
}
: > "$log"
# 1. The fused conv+PixelShuffle Triton kernel against cuDNN + pixel_shuffle and torch.compile, on the
#    real layer shapes (bf16, fp16, fp32); correctness first.
run kernel-check   python benchmarks/bench_conv_pixel_shuffle.py --check
run kernel         python benchmarks/bench_conv_pixel_shuffle.py --out "benchmarks/results/conv_pixel_shuffle_${tag}.json"
# 2. Model only: every shipped model and the compact one, eager -> channels-last -> bf16/fp16 ->
#    compile (default and max-autotune) -> fused kernel -> pixbatch default; % of peak, peak memory.
run models         python benchmarks/bench_models.py --device cuda --sizes 128,256,512 --batches 1,8 --compile --max-autotune
# 3. Quality per millisecond of every x4 model on this GPU (Set5 from the shared data).
run sr-frontier    python benchmarks/bench_sr_frontier.py
run sr-models      python benchmarks/bench_sr_models.py
# 4. End to end: decode -> model -> encode, pipeline against a plain eager loop (`pixbatch bench`).
run pipeline       python benchmarks/bench_pipeline.py --device cuda --images 96 --size 512
# 5. Many image sizes through torch.compile: size buckets against one graph per size.
run compile-shapes python benchmarks/bench_compile_shapes.py --device cuda
# 6. Style transfer, and one huge image per task streamed through tiles (time and peak memory).
run stylize        python benchmarks/bench_stylize.py --device cuda
run huge-upscale   python benchmarks/bench_huge.py --task upscale --size 10000 --device cuda
run huge-segment   python benchmarks/bench_huge.py --task segment --size 10000 --device cuda
# 7. The Triton kernel's registers, spills and shared memory as this GPU's driver reports them, next to
#    the ahead-of-time figures CI checks (tests/kernels/test_aot.py).
run kernel-resources python -m pixbatch.kernels.aot --arch native --out "benchmarks/results/triton_resources_${tag}.json"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]} (see $log)"
  exit 1
fi
echo "all GPU tables written to benchmarks/results/ (log: $log)"
