#!/usr/bin/env bash
# A recurrent mixer against attention as the sequence grows, in the same run on the same CPU:
# training steps (forward, backward, AdamW, batch 1) of the same small model with every mixer GQA
# with RoPE ("mixer[mixer=gqa]") or minGRU ("mixer[mixer=mingru]", experiments/architectures.hpp),
# at 256 ... 8192 tokens. Attention's work grows with T² and the recurrence's with T, so the time
# per token of the first grows with T and of the second stays flat. Each point runs ROUNDS times,
# alternating, keeping the fastest. Writes benchmarks/results/recurrence.{md,json}.
#   benchmarks/recurrence/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # faster
cmake --build build -j2 --target llmtk > /dev/null
threads=$(nproc)
seqs=(${SEQS:-256 512 1024 2048 4096 8192})
rounds=${ROUNDS:-2}
rows_file=$(mktemp)
for T in "${seqs[@]}"; do
  best_a='{"tokens_per_s": 0}'; best_r='{"tokens_per_s": 0}'
  for ((r = 0; r < rounds; ++r)); do
    for mixer in gqa mingru; do
      o=$(OMP_NUM_THREADS=$threads build/bin/llmtk bench step --arch "mixer[mixer=$mixer]" --set model.max_seq="$T" \
            --batch 1 --seq "$T" --steps "${STEPS:-3}" --json)
      echo "$o"
      if [[ $mixer == gqa ]]; then best_a=$(faster "$best_a" "$o"); else best_r=$(faster "$best_r" "$o"); fi
    done
  done
  printf '%s|%s|%s\n' "$T" "$best_a" "$best_r" >> "$rows_file"
done
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
python3 - "$cpu" "$threads" "$rows_file" "$rounds" <<'PY'
import json, sys
cpu, threads, rows_file, rounds = sys.argv[1:5]
rows = []
for line in open(rows_file):
    T, a, r = line.rstrip("\n").split("|")
    rows.append({"seq": int(T), "gqa": json.loads(a), "mingru": json.loads(r)})
json.dump({"cpu": cpu, "threads": threads, "rows": rows}, open("benchmarks/results/recurrence.json", "w"), indent=2)
md = [f"# A recurrent mixer against attention as the sequence grows (CPU)\n\n{cpu}, {threads} threads, fp32, batch 1, "
      f"training steps (forward, backward, AdamW) of the 4-layer, 128-wide ablation model; median of timed steps, "
      f"the fastest of {rounds} alternating runs.\nllmtk: {rows[0]['gqa'].get('backend_info', '')}.\n",
      "| seq | GQA ms/step | minGRU ms/step | GQA µs/token | minGRU µs/token | GQA / minGRU |",
      "|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    a, m = r["gqa"], r["mingru"]
    md.append(f"| {r['seq']} | {a['ms_per_step']:.1f} | {m['ms_per_step']:.1f} | {1000 * a['ms_per_step'] / r['seq']:.1f} "
              f"| {1000 * m['ms_per_step'] / r['seq']:.1f} | {a['ms_per_step'] / m['ms_per_step']:.2f}x |")
md.append("\nµs/token: the step's time divided by its tokens. Attention's grows with the sequence (its scores are "
          "T x T); the recurrence's stays flat (a scan over T).")
md.append("\nCommand: `benchmarks/recurrence/run.sh`")
open("benchmarks/results/recurrence.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
