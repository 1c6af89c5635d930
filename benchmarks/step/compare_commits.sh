#!/usr/bin/env bash
# Training-step speed of this checkout next to another commit's, on the same CPU in the same run:
# a refactoring that should not change speed is measured against the commit before it.
#   benchmarks/step/compare_commits.sh BASE [NAME]
#   CONFIGS="gpt2 8 256 2 bf16;gpt2 8 256 2 fp32" benchmarks/step/compare_commits.sh BASE NAME
# (CONFIGS: "arch batch seq steps [precision]" entries separated by ';'.)
# builds `llmtk` at BASE in a temporary worktree (build-compare/), then times `llmtk bench step`
# for both builds, alternating, ROUNDS times each (the faster run counts: noise only slows a run
# down), and writes benchmarks/results/step_vs_NAME.{md,json} (NAME defaults to BASE's short hash).
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # faster, commit_tree
base=${1:?usage: benchmarks/step/compare_commits.sh BASE [NAME]}
base_sha=$(git rev-parse --short "$base")
name=${2:-$base_sha}
head_sha=$(git rev-parse --short HEAD)
tree=$(commit_tree "$base")
cmake -S "$tree" -B "$tree/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMTK_TESTS=OFF -DLLMTK_BENCHMARKS=OFF > /dev/null
cmake --build "$tree/build" -j2 --target llmtk > /dev/null
cmake --build build -j2 --target llmtk > /dev/null
threads=$(nproc)
configs=("llama-tiny 16 128 5" "gpt2-tiny 8 256 5" "parallel-tiny 8 128 5" "gpt2 4 64 3")
[[ -n ${CONFIGS:-} ]] && IFS=';' read -r -a configs <<< "$CONFIGS"
rounds=${ROUNDS:-3}
rows=()
for c in "${configs[@]}"; do
  read -r arch batch seq steps precision <<< "$c"
  precision=${precision:-fp32}
  # An architecture the base commit does not have is timed on this checkout only.
  has_base=1
  "$tree/build/bin/llmtk" arch show "$arch" > /dev/null 2>&1 || has_base=0
  new='{"tokens_per_s": 0}'; old='{"tokens_per_s": 0}'
  for ((r = 0; r < rounds; ++r)); do
    n=$(OMP_NUM_THREADS=$threads build/bin/llmtk bench step --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps" --precision "$precision" --json)
    new=$(faster "$new" "$n")
    if ((has_base)); then
      o=$(OMP_NUM_THREADS=$threads "$tree/build/bin/llmtk" bench step --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps" --precision "$precision" --json)
      old=$(faster "$old" "$o")
    fi
  done
  rows+=("$new|$old")
done
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
rows_file=$(mktemp)
printf '%s\n' "${rows[@]}" > "$rows_file"
python3 - "$cpu" "$threads" "$rows_file" "$rounds" "$base_sha" "$head_sha" "$name" "${CONFIGS:-}" <<'PY'
import json, sys
cpu, threads, rows_file, rounds, base, head, name = sys.argv[1:8]
rows = []
for line in open(rows_file):
    new, old = (json.loads(x) for x in line.strip().split("|"))
    rows.append({"head": new, "base": old, "ratio": new["tokens_per_s"] / old["tokens_per_s"] if old["tokens_per_s"] else None})
json.dump({"cpu": cpu, "threads": threads, "base": base, "head": head, "rows": rows}, open(f"benchmarks/results/step_vs_{name}.json", "w"), indent=2)
md = [f"# Training step: {head} against {base} (same CPU, same run)\n",
      f"{cpu}, {threads} threads, AdamW; `llmtk bench step` (median of timed steps after a warm-up); each build ran {rounds} times, alternating, and the faster run is shown. MFU against the matmul peak each build measured.\n",
      f"| model | batch x seq | precision | {head} tokens/s | {base} tokens/s | {head} / {base} | {head} MFU | {base} MFU |", "|---|---|---|---:|---:|---:|---:|---:|"]
for r in rows:
    n, o = r["head"], r["base"]
    ratio = f"{r['ratio']:.3f}" if r["ratio"] else "(not in the base)"
    base_tps = f"{o['tokens_per_s']:.0f}" if o["tokens_per_s"] else "-"
    base_mfu = f"{100 * o['mfu']:.0f}%" if o.get("mfu") else "-"
    md.append(f"| {n['arch']} ({n['params']/1e6:.1f}M) | {n['batch']} x {n['seq']} | {n.get('precision', 'fp32')} | {n['tokens_per_s']:.0f} | {base_tps} | {ratio} | {100 * n['mfu']:.0f}% | {base_mfu} |")
configs = sys.argv[8]
prefix = f'CONFIGS="{configs}" ' if configs else ""
md.append(f"\nCommand: `{prefix}benchmarks/step/compare_commits.sh {base} {name}`")
open(f"benchmarks/results/step_vs_{name}.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
