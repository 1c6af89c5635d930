#!/usr/bin/env bash
# Mixture of experts against dense feed-forwards, in the same run on the same CPU: training steps
# (forward, backward, AdamW) of moe-tiny (8 SwiGLU experts of 344, top-2) next to llama-tiny, the
# dense model with the same parameters per token (d_ff 688), and llama-tiny 4x wider (d_ff 2752),
# the dense model with about the same parameters in all; and the other new presets at the same width,
# gemma-tiny (local/global attention) and hybrid-tiny (minGRU and attention, 6 layers). Median of timed steps after a warm-up;
# each model runs ROUNDS times, alternating, keeping its fastest. Writes benchmarks/results/moe.{md,json}.
#   benchmarks/moe/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # faster
cmake --build build -j2 --target llmtk > /dev/null
threads=$(nproc)
batch=${BATCH:-16} seq=${SEQ:-128} steps=${STEPS:-6}
configs=("moe-tiny" "llama-tiny" "llama-tiny --set model.d_ff=2752" "gemma-tiny" "hybrid-tiny")
rounds=${ROUNDS:-2}
best=()
for i in "${!configs[@]}"; do best[$i]='{"tokens_per_s": 0}'; done
for ((r = 0; r < rounds; ++r)); do
  for i in "${!configs[@]}"; do
    read -r -a args <<< "${configs[$i]}"
    o=$(OMP_NUM_THREADS=$threads build/bin/llmtk bench step --arch "${args[@]}" --batch "$batch" --seq "$seq" --steps "$steps" --json)
    echo "$o"
    best[$i]=$(faster "${best[$i]}" "$o")
  done
done
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
rows_file=$(mktemp)
for i in "${!configs[@]}"; do printf '%s|%s\n' "${configs[$i]}" "${best[$i]}"; done > "$rows_file"
python3 - "$cpu" "$threads" "$rows_file" "$rounds" <<'PY'
import json, sys
cpu, threads, rows_file, rounds = sys.argv[1:5]
rows = []
for line in open(rows_file):
    name, result = line.rstrip("\n").split("|", 1)
    rows.append({"model": name, "result": json.loads(result)})
json.dump({"cpu": cpu, "threads": threads, "rows": rows}, open("benchmarks/results/moe.json", "w"), indent=2)
dense = rows[1]["result"]["tokens_per_s"]
md = [f"# Mixture of experts vs dense, training step (CPU)\n\n{cpu}, {threads} threads, AdamW, fp32, "
      f"batch {rows[0]['result']['batch']} x seq {rows[0]['result']['seq']}; median of timed steps after a warm-up, "
      f"the fastest of {rounds} alternating runs.\nllmtk: {rows[0]['result'].get('backend_info', '')}.\n",
      "| model | params | active per token | training GFLOP per token | tokens/s | vs llama-tiny |",
      "|---|---:|---:|---:|---:|---:|"]
for r in rows:
    o = r["result"]
    md.append(f"| `{r['model']}` | {o['params']/1e6:.2f}M | {o['active_params']/1e6:.2f}M | {o['flops_per_token']/1e9:.3f} "
              f"| {o['tokens_per_s']:.0f} | {o['tokens_per_s']/dense:.2f}x |")
md.append("\ngemma-tiny: 4 layers, local (64-token window) and global attention alternating, sandwich norms, GeGLU; "
          "hybrid-tiny: 6 layers, two minGRU layers per attention layer (docs/hybrid.md).")
md.append("\nActive per token: the parameters one token's forward reads (the router, its 2 experts, attention, "
          "embeddings). The MoE model groups each expert's tokens and runs one product per expert "
          "(docs/moe.md), plus the router, its softmax and top-k, the gather and the weighted combine.")
md.append("\nCommand: `benchmarks/moe/run.sh`")
open("benchmarks/results/moe.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
