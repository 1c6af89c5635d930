#!/usr/bin/env bash
# End-to-end training-step speed, llmtk next to PyTorch on the same CPU in the same run: the same
# model sizes, batch, sequence and step (forward, backward, AdamW), median of timed steps after a
# warm-up. Writes benchmarks/results/step.{md,json}.
#   benchmarks/step/run.sh [quick]     (quick: skip GPT-2 124M at batch 8 x seq 256)
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # faster, torch_peer
torch_peer  # the peer: Debian's PyTorch with OpenBLAS at its best
cmake --build build -j2 --target llmtk > /dev/null
threads=$(nproc)
configs=("llama-tiny 16 128 5 fp32" "gpt2 4 64 3 fp32")
[[ ${1:-} == quick ]] || configs+=("gpt2 8 256 2 fp32" "gpt2 8 256 2 bf16")
# A shared machine slows down for tens of seconds at a time, and noise only ever slows a run
# down: each side runs ROUNDS times, alternating with the other, and keeps its fastest run.
rounds=${ROUNDS:-2}
rows=()
for c in "${configs[@]}"; do
  read -r arch batch seq steps precision <<< "$c"
  ours='{"tokens_per_s": 0}'; peer='{"tokens_per_s": 0}'
  for ((r = 0; r < rounds; ++r)); do
    o=$(OMP_NUM_THREADS=$threads build/bin/llmtk bench step --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps" --precision "$precision" --json)
    p=$(/usr/bin/python3 benchmarks/step/torch_step.py --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps" --threads "$threads" --precision "$precision")
    echo "$o"; echo "$p"
    ours=$(faster "$ours" "$o"); peer=$(faster "$peer" "$p")
  done
  rows+=("$ours|$peer")
done
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
rows_file=$(mktemp)
printf '%s\n' "${rows[@]}" > "$rows_file"
python3 - "$cpu" "$threads" "$rows_file" "${OPENBLAS_CORETYPE:-auto}" "$rounds" <<'PY'
import json, sys
cpu, threads, rows_file, coretype, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rows = []
for line in open(rows_file):
    ours, peer = (json.loads(x) for x in line.strip().split("|"))
    rows.append({"llmtk": ours, "pytorch": peer, "ratio": ours["tokens_per_s"] / peer["tokens_per_s"]})
json.dump({"cpu": cpu, "threads": threads, "rows": rows}, open("benchmarks/results/step.json", "w"), indent=2)
md = [f"# Training step, llmtk vs PyTorch (CPU)\n\n{cpu}, {threads} threads, AdamW; median of timed steps after a warm-up; each side ran {rounds} times, alternating, and the faster run is shown.\nllmtk: {rows[0]['llmtk'].get('backend_info', '')}.\n",
      "| model | batch x seq | precision | llmtk tokens/s | llmtk GFLOP/s | matmul peak, GFLOP/s | llmtk MFU | PyTorch tokens/s | llmtk / PyTorch |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    o, p = r["llmtk"], r["pytorch"]
    md.append(f"| {o['arch']} ({o['params']/1e6:.1f}M) | {o['batch']} x {o['seq']} | {o['precision']} | {o['tokens_per_s']:.0f} | {o['achieved_gflops']:.0f} | {o['matmul_peak_gflops']:.0f} | {100*o['mfu']:.0f}% | {p['tokens_per_s']:.0f} | {r['ratio']:.2f}x |")
md.append("\nbf16: llmtk stores activations and their gradients in bf16 and runs the matmuls on a bf16 working copy of the weights (made once per step) with f32 accumulation; master weights, gradients and optimizer state stay f32 (docs/bf16.md). PyTorch uses bf16 autocast.")
md.append(f"\nMFU: achieved FLOP/s (6 x parameters + attention, per token) over the matmul peak measured in the same process and precision (oneDNN, 1024³, bf16 peak on bf16 inputs). PyTorch: {rows[0]['pytorch']['tool']} on OpenBLAS (OPENBLAS_CORETYPE={coretype}); attention written out, as torch 1.13 has no fused SDPA.")
md.append("\nCommand: `benchmarks/step/run.sh`")
open("benchmarks/results/step.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
