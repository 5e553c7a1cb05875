#!/usr/bin/env bash
# `pixbatch bench` of two installs, interleaved A B B A per round on one machine (drift falls on both sides),
# then the medians of the pipeline's images/s. Each install is a Python whose pixbatch is the code to compare
# (e.g. two virtual environments with `pip install --no-deps <tree>`).
#   bash benchmarks/compare_bench.sh OLD_PYTHON NEW_PYTHON [ROUNDS=3] [OUT=compare_bench.json]
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} out=${4:-compare_bench.json}
dir=$(mktemp -d)
for r in $(seq "$rounds"); do
  for side in old new new old; do
    py=$old; [ "$side" = new ] && py=$new
    (cd "$dir" && "$py" -m pixbatch --device cpu --json bench > "$dir/$r-$side-$(date +%s%N).json")
  done
done
python3 - "$dir" "$out" <<'PY'
import json, pathlib, statistics, sys
runs = {"old": [], "new": []}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json"), key=lambda p: p.name.split("-")[-1]):
    runs[f.name.split("-")[1]].append(json.loads(f.read_text())["pipeline"]["images_per_s"])
result = {side: {"images_per_s": v, "median": statistics.median(v)} for side, v in runs.items()}
result["new_over_old"] = result["new"]["median"] / result["old"]["median"]
pathlib.Path(sys.argv[2]).write_text(json.dumps(result, indent=2) + "\n")
print(f"old median {result['old']['median']:.2f}, new median {result['new']['median']:.2f} images/s: "
      f"new/old {result['new_over_old']:.3f}")
PY
