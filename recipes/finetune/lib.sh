# Shared by recipes/finetune/run.sh and recipes/finetune/domain.sh (sourced, not run).

# run_stats RUN TRAIN_LOG: "tokens/s peak_MiB seconds trainable" of a finished run — the median
# logged rate, the peak resident memory and the elapsed time from RUN/metrics.jsonl, and
# "N of M" trainable parameters from the start-up line of TRAIN_LOG.
run_stats() {
  local run=$1 log=$2 trainable
  trainable=$(sed -n 's/^model [^:]*: \([0-9]*\) parameters (\([0-9]*\) trainable.*/\2 of \1/p; s/^model [^:]*: \([0-9]*\) parameters,.*/\1 of \1/p' "$log" | head -1)
  python3 - "$run/metrics.jsonl" "$trainable" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in rows if "tokens_per_s" in r]
tps = sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2]
print(f"{tps:.0f} {max(r['peak_memory_bytes'] for r in steps) / 2**20:.0f} {steps[-1]['elapsed_s']:.0f} {sys.argv[2]}")
PY
}
