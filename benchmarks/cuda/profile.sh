#!/usr/bin/env bash
# Where a training step's GPU time goes, llmtk next to PyTorch, on a GPU machine (with the
# programs of benchmarks/cuda/bundle.sh, or of run.sh's build, in build-gpu/):
#   1. llmtk's time per op (LLMTK_PROFILE=1: each op waited for) for GPT-2 (f32 activations, the
#      default, and bf16 activations) and the Llama-style model
#   2. PyTorch eager's GPU time per kernel for the same GPT-2 step (torch.profiler)
#   3. the GPU time of every kernel of one llmtk GPT-2 step, summed by kernel name (Nsight Compute)
# Batch 16 x seq 1024, bf16, as in run.sh. Output on stdout and, when $OUT is set (a folder to
# collect results in), in $OUT/profile.log with Nsight Compute's per-launch CSV.
#   benchmarks/cuda/profile.sh [--no-ncu]
set -euo pipefail
cd "$(dirname "$0")/../.."
ncu_on=1
[[ ${1:-} == --no-ncu ]] && ncu_on=0
py=python3
out_dir=${OUT:-/tmp}
[[ -n ${OUT:-} ]] && exec > >(tee "$OUT/profile.log") 2>&1
source benchmarks/cuda/libs.sh
step=(--device cuda --precision bf16 --batch 16 --seq 1024)
t0=$SECONDS
say() { printf '\n[%4ds] ---- %s\n' $((SECONDS - t0)) "$*"; }

say "llmtk gpt2, time per op"
LLMTK_PROFILE=1 timeout 60 "${llmtk_env[@]}" "$bin/llmtk" bench step --arch gpt2 "${step[@]}" --steps 5 --warmup 2 || true
say "llmtk gpt2 with bf16 activations (LLMTK_BF16_ACTIVATIONS=1), time per op"
LLMTK_BF16_ACTIVATIONS=1 LLMTK_PROFILE=1 timeout 60 "${llmtk_env[@]}" "$bin/llmtk" bench step --arch gpt2 "${step[@]}" \
  --steps 5 --warmup 2 || true
say "PyTorch eager gpt2, GPU time per kernel"
timeout 60 $py benchmarks/cuda/torch_gpu_step.py --arch gpt2 --steps 3 --warmup 2 --profile || true
say "llmtk llama-124m, time per op"
LLMTK_PROFILE=1 timeout 60 "${llmtk_env[@]}" "$bin/llmtk" bench step --arch llama-tiny "${llama_sets[@]}" "${step[@]}" \
  --steps 5 --warmup 2 || true
if ((ncu_on)); then
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2> /dev/null | head -1 || true)
  if [[ -z $ncu ]]; then
    echo "no ncu (Nsight Compute) here: kernel table skipped"
  else
    say "llmtk gpt2, one step, GPU time per kernel ($ncu)"
    # One step without warm-up (the kernels are the same each step); the matmul peak is not measured.
    LLMTK_MATMUL_PEAK_GFLOPS=800000 timeout 240 "${llmtk_env[@]}" "$ncu" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv "$bin/llmtk" bench step --arch gpt2 "${step[@]}" --steps 1 --warmup 0 \
      > "$out_dir/ncu_gpt2.csv" 2> "$out_dir/ncu_gpt2.err" || { echo "ncu failed:"; tail -5 "$out_dir/ncu_gpt2.err"; }
    $py - "$out_dir/ncu_gpt2.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
if not rows:
    sys.exit("no kernel rows")
head = rows[0]
name_i, val_i, unit_i = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
tot, cnt = collections.Counter(), collections.Counter()
scale = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}
for r in rows[1:]:
    try:
        ms = float(r[val_i].replace(",", "")) * scale.get(r[unit_i], 1e-6)
    except ValueError:
        continue
    tot[r[name_i]] += ms
    cnt[r[name_i]] += 1
all_ms = sum(tot.values())
print(f"{sum(cnt.values())} launches, {all_ms:.2f} ms of GPU time (includes model init)")
for name, ms in tot.most_common(40):
    print(f"{ms:9.3f} ms {100 * ms / all_ms:5.1f}% {cnt[name]:5d}x  {name[:150]}")
PY
  fi
fi
say "done"
