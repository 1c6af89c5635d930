#!/usr/bin/env bash
# Data parallel on this machine (docs/distributed.md): training steps of the same global batch as
# 1 process x all threads, and as 2 MPI ranks x half the threads each, with the gradient sums
# overlapped with the backward and after it; next to the peer, PyTorch the same two ways (one
# process, and DistributedDataParallel over gloo with 2 ranks launched by the same mpirun); and
# the 2 ranks with the optimizer state (ZeRO-1) and the gradients (ZeRO-2) sharded, with each
# process's memory (its arenas, and the largest resident set it reached). Median
# of timed steps after a warm-up; each way runs ROUNDS times, alternating, and keeps its fastest
# run. Writes benchmarks/results/distributed.{md,json}.
#   benchmarks/distributed/run.sh [quick]     (quick: skip GPT-2 124M at batch 8 x seq 256)
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # faster, torch_peer
cmake --build build -j2 --target llmtk > /dev/null
torch_peer  # the peer: Debian's PyTorch with OpenBLAS at its best
command -v mpirun > /dev/null || { echo "mpirun is not installed (tools/install-deps.sh installs openmpi-bin)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
threads=$(nproc)
half=$(( threads / 2 > 0 ? threads / 2 : 1 ))
configs=("llama-tiny 16 128 6")
[[ ${1:-} == quick ]] || configs+=("gpt2 8 256 3")
rounds=${ROUNDS:-2}
rows=()
for c in "${configs[@]}"; do
  read -r arch batch seq steps <<< "$c"
  one='{"tokens_per_s": 0}'; two='{"tokens_per_s": 0}'; two_after='{"tokens_per_s": 0}'; zero1='{"tokens_per_s": 0}'; zero2='{"tokens_per_s": 0}'
  peer_one='{"tokens_per_s": 0}'; peer_two='{"tokens_per_s": 0}'
  targs=(benchmarks/step/torch_step.py --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps")
  args=(bench step --arch "$arch" --batch "$batch" --seq "$seq" --steps "$steps" --json)
  for ((r = 0; r < rounds; ++r)); do
    a=$(OMP_NUM_THREADS=$threads build/bin/llmtk "${args[@]}")
    b=$(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=$half build/bin/llmtk "${args[@]}")
    d=$(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=$half build/bin/llmtk "${args[@]}" --no-overlap)
    z1=$(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=$half build/bin/llmtk "${args[@]}" --strategy zero1)
    z2=$(mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=$half build/bin/llmtk "${args[@]}" --strategy zero2)
    e=$(/usr/bin/python3 "${targs[@]}" --threads "$threads")
    f=$(mpirun -np 2 --oversubscribe -x OPENBLAS_CORETYPE /usr/bin/python3 "${targs[@]}" --threads "$half" --ddp)
    echo "$a"; echo "$b"; echo "$d"; echo "$z1"; echo "$z2"; echo "$e"; echo "$f"
    one=$(faster "$one" "$a"); two=$(faster "$two" "$b"); two_after=$(faster "$two_after" "$d")
    zero1=$(faster "$zero1" "$z1"); zero2=$(faster "$zero2" "$z2")
    peer_one=$(faster "$peer_one" "$e"); peer_two=$(faster "$peer_two" "$f")
  done
  rows+=("$one|$two|$two_after|$zero1|$zero2|$peer_one|$peer_two")
done
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
rows_file=$(mktemp)
printf '%s\n' "${rows[@]}" > "$rows_file"
python3 - "$cpu" "$threads" "$half" "$rows_file" "$rounds" <<'PY'
import json, sys
cpu, threads, half, rows_file, rounds = sys.argv[1:6]
rows = []
for line in open(rows_file):
    one, two, after, z1, z2, p1, p2 = (json.loads(x) for x in line.strip().split("|"))
    rows.append({"one_process": one, "two_ranks_overlap": two, "two_ranks_after": after, "two_ranks_zero1": z1,
                 "two_ranks_zero2": z2, "pytorch_one_process": p1, "pytorch_ddp_two_ranks": p2})
json.dump({"cpu": cpu, "threads": threads, "rows": rows}, open("benchmarks/results/distributed.json", "w"), indent=2)
md = [f"# Data parallel on one machine (CPU, MPI)\n\n{cpu}, {threads} cores. The same global batch as 1 process with {threads} threads, and as 2 ranks (`mpirun -np 2`) with {half} thread(s) each; AdamW; median of timed steps after a warm-up; each way ran {rounds} times, alternating, and the fastest run is shown. Command: `benchmarks/distributed/run.sh`.\n",
      "| model | batch x seq | way | tokens/s | ms/step | waiting for gradient sums, ms (share of the step) | vs its 1 process | gradients + optimizer state per process, MiB | largest resident set per process, MiB |",
      "|---|---|---|---:|---:|---:|---:|---:|---:|"]
ways = (("llmtk, 1 process", "one_process", "one_process"),
        ("llmtk, 2 ranks, sums overlapped with the backward", "two_ranks_overlap", "one_process"),
        ("llmtk, 2 ranks, sums after the backward", "two_ranks_after", "one_process"),
        ("llmtk, 2 ranks, ZeRO-1 (optimizer state sharded)", "two_ranks_zero1", "one_process"),
        ("llmtk, 2 ranks, ZeRO-2 (gradients sharded too)", "two_ranks_zero2", "one_process"),
        ("PyTorch, 1 process", "pytorch_one_process", "pytorch_one_process"),
        ("PyTorch DDP (gloo), 2 ranks", "pytorch_ddp_two_ranks", "pytorch_one_process"))
for r in rows:
    for name, key, base in ways:
        o = r[key]
        comm = o.get("comm_ms_per_step")
        waited = f"{comm:.1f} ({100 * comm / o['ms_per_step']:.0f}%)" if o.get("ranks", 1) > 1 and comm is not None else "–"
        m = o.get("memory_per_process")
        state = f"{m['grads_mib']:.0f} + {m['optimizer_mib']:.0f}" if m else "–"
        rss = f"{m['max_rss_mib_mean']:.0f}" if m else "–"
        md.append(f"| {o['arch']} ({o['params']/1e6:.1f}M) | {o['batch']} x {o['seq']} | {name} | {o['tokens_per_s']:.0f} | {o['ms_per_step']:.0f} | {waited} | {o['tokens_per_s'] / r[base]['tokens_per_s']:.2f}x | {state} | {rss} |")
open("benchmarks/results/distributed.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
