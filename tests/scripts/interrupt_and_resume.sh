#!/usr/bin/env bash
# Ctrl-C during training writes a checkpoint and exits with 130 (SIGTERM: 143), so that scripts
# chaining `train && export` stop; --resume continues from the checkpoint.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Exodus40:38 > "$work/text.txt"
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input "$work/text.txt" --out "$work/data" --vocab-size 512 > /dev/null
sets=(--set data.dir="$work/data" --set model.vocab=512 --set model.d_model=32 --set model.n_layers=1
      --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=64 --set train.batch=4 --set train.seq=32
      --set train.steps=100000 --set schedule.warmup=0 --set eval.every=0 --set checkpoint.every=0 --set log.every=1 --set log.sample_prompt=)
"$llmtk" train "$root/recipes/quickstart.toml" "${sets[@]}" --run-dir "$work/run" > "$work/log.txt" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "^step " "$work/log.txt" 2>/dev/null && break; sleep 0.2; done  # up to 2 minutes
kill -INT "$pid"
status=0
wait "$pid" || status=$?
[[ $status == 130 ]] || { echo "train exited with $status after SIGINT, expected 130:"; cat "$work/log.txt"; exit 1; }
grep -q "interrupted: checkpoint written to" "$work/log.txt" || { cat "$work/log.txt"; exit 1; }
ls "$work/run/checkpoints"/step_*/model.safetensors > /dev/null
step=$(ls -d "$work/run/checkpoints"/step_* | tail -1 | sed 's/.*step_0*//')
echo "interrupted at step $step"
"$llmtk" train "$root/recipes/quickstart.toml" "${sets[@]}" --set train.steps=$((step + 3)) --run-dir "$work/run" \
  --resume "$work/run" > "$work/log2.txt" 2>&1 || { cat "$work/log2.txt"; exit 1; }
grep -q "resumed from" "$work/log2.txt" && grep -q "step .*$((step + 3))/$((step + 3))" "$work/log2.txt" || { cat "$work/log2.txt"; exit 1; }
# SIGTERM (a scheduler's stop): the same checkpoint, and exit status 143.
"$llmtk" train "$root/recipes/quickstart.toml" "${sets[@]}" --run-dir "$work/run" --resume "$work/run" > "$work/log3.txt" 2>&1 &
pid=$!
for _ in $(seq 600); do grep -q "^step " "$work/log3.txt" 2>/dev/null && break; sleep 0.2; done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[[ $status == 143 ]] || { echo "train exited with $status after SIGTERM, expected 143:"; cat "$work/log3.txt"; exit 1; }
grep -q "interrupted: checkpoint written to" "$work/log3.txt" || { cat "$work/log3.txt"; exit 1; }
echo "SIGINT and SIGTERM write a checkpoint and exit 130 and 143; --resume continues: ok"
