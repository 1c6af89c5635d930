#!/usr/bin/env bash
# Faults a training run must survive (docs/reliability.md), each injected for real:
# - a full disk: the file size limit (ulimit -f, RLIMIT_FSIZE) set below a checkpoint's size. The
#   checkpoint write fails with a message naming the file and the cause; the previous checkpoint
#   stays byte for byte as it was and no partial one is left; checkpoint.on_error = "stop" ends the
#   run with an error naming its newest complete checkpoint, "continue" trains on to the end.
# - NaN and Inf (LLMTK_FAULTS): a NaN gradient, an activation overflow and a NaN loss at chosen
#   steps are each skipped, counted and logged, the run continues, and the final weights and
#   optimizer state are finite; max_bad_steps bad steps in a row stop the run with a checkpoint of
#   the last good state.
# - pre-flight: a run whose plan needs more memory than the machine has is refused before it
#   allocates, with both figures and the keys that reduce it.
set -euo pipefail
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
command -v bible > /dev/null || { echo "bible (Debian's bible-kjv) is needed: ./setup.sh installs it" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export LLMTK_MATMUL_PEAK_GFLOPS=100
bible -l 1000 Genesis1:1-Genesis12:20 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
recipe=(train "$root/recipes/quickstart.toml" --set data.dir="$work/data" --set model.vocab=300 --set model.d_model=32
        --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq=32
        --set train.batch=4 --set train.seq=32 --set schedule.warmup=2 --set eval.every=0 --set eval.batches=1
        --set log.sample_prompt= --set log.every=1 --set train.threads=1)

# ---- a full disk --------------------------------------------------------------------------
"$llmtk" "${recipe[@]}" --set train.steps=10 --run-dir disk > disk-1.txt || { cat disk-1.txt; exit 1; }
ckpt=disk/checkpoints/step_00000010
tree_sum() { (cd disk/checkpoints && find . -type f | sort | xargs sha256sum | sha256sum); }
sum_before=$(tree_sum)
size=$(stat -c %s "$ckpt/model.safetensors")
limit_kb=$((size / 1024 / 2))  # half a model file: the run's small files fit, a checkpoint does not
for policy in stop continue; do
  rc=0
  (ulimit -f "$limit_kb"; exec "$llmtk" "${recipe[@]}" --set train.steps=20 --set checkpoint.every=5 \
     --set checkpoint.on_error="$policy" --resume disk --run-dir "disk-$policy") > "disk-$policy.txt" 2>&1 || rc=$?
  echo "== on_error = $policy: exit $rc"
  grep -E "could not be written" "disk-$policy.txt" | head -2
  grep -q "file size limit was reached" "disk-$policy.txt" || { echo "no message naming the cause"; cat "disk-$policy.txt"; exit 1; }
  grep -q "model.safetensors" "disk-$policy.txt" || { echo "the message does not name the file"; exit 1; }
  if compgen -G "disk-$policy/checkpoints/*" > /dev/null; then
    echo "a partial checkpoint was left:"; ls -R "disk-$policy/checkpoints"; exit 1
  fi
  if [[ $policy == stop ]]; then
    ((rc == 2)) || { echo "on_error = stop: exit $rc, want 2 (an error)"; cat disk-stop.txt; exit 1; }
    grep -q "The run stopped at step 15 (checkpoint.on_error = \"stop\"); no checkpoint of this run was written" disk-stop.txt ||
      { cat disk-stop.txt; exit 1; }
  else
    ((rc == 0)) || { echo "on_error = continue: exit $rc, want 0"; cat disk-continue.txt; exit 1; }
    grep -q "training continues without it" disk-continue.txt || { cat disk-continue.txt; exit 1; }
    grep -q '"step":20' "disk-continue/metrics.jsonl" || { echo "the run did not reach step 20"; exit 1; }
  fi
done
# Into the run's own directory: the failed write leaves the previous checkpoint exactly as it was.
rc=0
(ulimit -f "$limit_kb"; exec "$llmtk" "${recipe[@]}" --set train.steps=20 --set checkpoint.every=5 --resume disk) > disk-own.txt 2>&1 || rc=$?
((rc == 2)) || { echo "exit $rc, want 2 (an error)"; cat disk-own.txt; exit 1; }
grep -q "the newest complete checkpoint is disk/checkpoints/step_00000010" disk-own.txt || { cat disk-own.txt; exit 1; }
[[ $(tree_sum) == "$sum_before" ]] || { echo "the checkpoints changed: $(ls disk/checkpoints)"; exit 1; }
"$llmtk" "${recipe[@]}" --set train.steps=20 --resume disk > disk-2.txt || { cat disk-2.txt; exit 1; }
echo "disk full: the write failed naming the file and the cause; step_00000010 intact; --resume continued once there was room"

# ---- NaN and Inf -------------------------------------------------------------------------
LLMTK_FAULTS=nan_grad@5,inf_act@9,nan_loss@13 "$llmtk" "${recipe[@]}" --set train.steps=20 --run-dir nan > nan.txt 2>&1 ||
  { cat nan.txt; exit 1; }
grep -q "LLMTK_FAULTS=nan_grad@5,inf_act@9,nan_loss@13: injecting faults" nan.txt || { cat nan.txt; exit 1; }
for want in "step 5 has a non-finite gradient; skipped (1 in a row)" "step 9 has a non-finite loss; skipped (1 in a row)" \
            "step 13 has a non-finite loss; skipped (1 in a row)"; do
  grep -q "$want" nan.txt || { echo "missing: $want"; cat nan.txt; exit 1; }
done
/usr/bin/python3 - nan <<'PY'
import json, os, struct, sys
import numpy as np
run = sys.argv[1]
m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
steps = [x for x in m if "loss" in x]
assert [x["step"] for x in steps] == list(range(1, 21)), [x["step"] for x in steps]
assert all(np.isfinite(x["loss"]) for x in steps)
assert steps[-1].get("skipped_steps") == 3, steps[-1]
d = os.path.join(run, "checkpoints", "step_00000020")
for f in sorted(os.listdir(d)):
    if not f.endswith(".safetensors"):
        continue
    raw = open(os.path.join(d, f), "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        v = np.frombuffer(raw[8 + n + a:8 + n + b], dtype="<f4")
        assert np.all(np.isfinite(v)), f"{f}: {name} is not finite"
print("NaN/Inf: 3 faults skipped and counted; 20 good steps; weights and optimizer state finite")
PY
# Bad steps in a row: max_bad_steps (3) stop the run with the last good state. (Each fault fires
# once, and a skipped step is tried again with the next batch: three faults at step 4 are three
# bad tries in a row.)
rc=0
LLMTK_FAULTS=nan_loss@4,nan_loss@4,nan_loss@4 "$llmtk" "${recipe[@]}" --set train.steps=20 --run-dir bad > bad.txt 2>&1 || rc=$?
((rc != 0)) || { echo "3 bad steps in a row did not stop the run"; cat bad.txt; exit 1; }
grep -q "the last good state (step 3) is saved in bad/checkpoints/step_00000003" bad.txt || { cat bad.txt; exit 1; }
"$llmtk" eval bad --data data/val_000.bin --batches 1 > /dev/null || { echo "the last good state does not load"; exit 1; }
echo "max_bad_steps: stopped with the last good state (step 3), which loads"

# ---- pre-flight memory ----------------------------------------------------------------------
rc=0
# 8.6 billion parameters (2 layers of 16384, d_ff 65536): 137 GB with gradients and AdamW's state.
"$llmtk" "${recipe[@]}" --set model.d_model=16384 --set model.d_ff=65536 --set model.n_heads=128 --set model.n_kv_heads=128 \
  --set train.steps=10 --run-dir big > big.txt 2>&1 || rc=$?
((rc == 2)) || { echo "a run far larger than memory was not refused (exit $rc)"; cat big.txt; exit 1; }
grep -q "needs .* GiB .* but .* GiB .* available" big.txt || { cat big.txt; exit 1; }
grep -q "train.batch" big.txt && grep -q "train.recompute" big.txt || { cat big.txt; exit 1; }
[[ ! -e big ]] || { echo "the refused run left a directory"; exit 1; }
echo "pre-flight: $(grep -o 'needs .*available' big.txt | head -1)"
