#!/usr/bin/env bash
# llmtk experiment: a 2 x 2 experiment with 2 seeds of tiny models runs; interrupted in the middle
# of a run it stops with a checkpoint (exit 130), and run again it skips the finished runs and
# resumes the interrupted one, which ends exactly where an uninterrupted `llmtk train` with the
# same settings ends; results.jsonl holds each run's metrics; bad experiment files fail before
# any run with the error they should. The report renders in Chromium when it is installed.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LLMTK_MATMUL_PEAK_GFLOPS=100  # no peak measurement at each run's start
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Exodus40:38 > "$work/text.txt"
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input "$work/text.txt" --out "$work/data" --vocab-size 512 > /dev/null
cat > "$work/base.toml" <<TOML
[model]
arch = "llama-tiny"
vocab = 512
[data]
dir = "$work/data"
[train]
batch = 4
seq = 32
steps = 10
[schedule]
warmup = 0
[eval]
every = 1000
batches = 4
[checkpoint]
every = 0
[log]
every = 100
sample_prompt = ""
TOML
cat > "$work/exp.toml" <<'TOML'
[experiment]
name = "tiny"
recipe = "base.toml"
seeds = [1, 2]

[budget]
steps = 3000

[set]
"model.d_model" = 32
"model.n_layers" = 1
"model.d_ff" = 64

[axes]
"model.arch" = "ffn[ffn=relu]"
"optim.lr" = [1e-3, 3e-3]
TOML
# The ablation axis: two variants of the shipped ffn ablation.
sed -i 's/"model.arch" = "ffn\[ffn=relu\]"/"model.arch" = ["ffn[ffn=relu]", "ffn[ffn=swiglu]"]/' "$work/exp.toml"
out=$work/out

# ---- interrupted in the middle of the third run ----
"$llmtk" experiment "$work/exp.toml" --out "$out" > "$work/log1.txt" 2>&1 &
pid=$!
# Wait for progress, not for a fixed time: under the sanitizers, sharing two cores with another
# test, the first two runs take minutes. 15 minutes at most, and not past the experiment's end.
for _ in $(seq 9000); do
  [[ -f $out/results.jsonl ]] && (( $(wc -l < "$out/results.jsonl") >= 2 )) && grep -q "^step" "$out/logs/p01-s1.log" 2>/dev/null && break
  kill -0 "$pid" 2> /dev/null || break
  sleep 0.1
done
[[ -f $out/results.jsonl ]] || { echo "no run finished while waiting (results.jsonl missing):"; kill -INT "$pid" 2> /dev/null; wait "$pid" || true; cat "$work/log1.txt"; exit 1; }
kill -INT "$pid"
status=0
wait "$pid" || status=$?
[[ $status == 130 ]] || { echo "experiment exited with $status after SIGINT, expected 130:"; cat "$work/log1.txt"; exit 1; }
finished=$(wc -l < "$out/results.jsonl")
(( finished == 2 )) || { echo "expected 2 finished runs, results.jsonl has $finished"; cat "$work/log1.txt"; exit 1; }
ls "$out/runs/p01-s1/checkpoints"/step_* > /dev/null || { echo "the interrupted run has no checkpoint"; cat "$work/log1.txt"; exit 1; }
grep -q "p01-s1 stopped with a checkpoint" "$work/log1.txt" || { cat "$work/log1.txt"; exit 1; }

# ---- run again: nothing finished is re-run, the interrupted run resumes ----
"$llmtk" experiment "$work/exp.toml" --out "$out" > "$work/log2.txt" 2>&1 || { cat "$work/log2.txt"; exit 1; }
grep -q "6 to run" "$work/log2.txt" || { echo "expected 6 runs left:"; cat "$work/log2.txt"; exit 1; }
! grep -Eq "p00-s[12] (started|resumed)" "$work/log2.txt" || { echo "a finished run ran again:"; cat "$work/log2.txt"; exit 1; }
grep -q "p01-s1 resumed" "$work/log2.txt" || { echo "the interrupted run did not resume:"; cat "$work/log2.txt"; exit 1; }
grep -q "resumed from" "$out/logs/p01-s1.log"
(( $(wc -l < "$out/results.jsonl") == 8 )) || { echo "results.jsonl should have 8 lines"; cat "$out/results.jsonl"; exit 1; }
grep -q "~ (within seed spread)\|best" "$out/results.md"
cat "$out/results.md"

# ---- results.jsonl against the runs themselves, and the resumed run against one never stopped ----
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
lines = [json.loads(l) for l in open(os.path.join(out, "results.jsonl"))]
assert sorted(l["id"] for l in lines) == sorted(f"p{p:02d}-s{s}" for p in range(4) for s in (1, 2)), [l["id"] for l in lines]
for l in lines:
    metrics = [json.loads(m) for m in open(os.path.join(l["run_dir"], "metrics.jsonl"))]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    loss = [m["loss"] for m in metrics if "loss" in m]
    assert l["steps"] == 3000 and l["final_val_loss"] == val[-1] and l["best_val_loss"] == min(val), (l, val)
    assert l["final_loss"] == loss[-1] and l["tokens"] == 3000 * 4 * 32, l
    assert l["params"] > 0 and l["flops"] > 0, l
print("results.jsonl matches every run's metrics.jsonl")
PY
sets=()
while read -r s; do sets+=(--set "$s"); done < "$out/runs/p01-s1.sets"
"$llmtk" train "$work/base.toml" "${sets[@]}" --run-dir "$work/straight" > "$work/straight.txt" 2>&1 || { cat "$work/straight.txt"; exit 1; }
python3 - "$out" "$work/straight" <<'PY'
import json, sys, os
out, straight = sys.argv[1], sys.argv[2]
resumed = [json.loads(l) for l in open(os.path.join(out, "results.jsonl")) if json.loads(l)["id"] == "p01-s1"][0]
val = [json.loads(m)["val_loss"] for m in open(os.path.join(straight, "metrics.jsonl")) if "val_loss" in m]
assert resumed["final_val_loss"] == val[-1], (resumed["final_val_loss"], val[-1])
print(f"the resumed run ends at val loss {val[-1]!r}, exactly as a run never stopped")
PY

# ---- an architecture of your own (experiments/mine.hpp, outside framework/) trains ----
"$llmtk" train "$work/base.toml" --set model.arch=mine-tiny --set model.d_model=32 --set model.d_ff=64 \
  --set train.steps=20 --set eval.every=20 --run-dir "$work/mine" > "$work/mine.txt" 2>&1 || { cat "$work/mine.txt"; exit 1; }
grep -q "model mine-tiny" "$work/mine.txt" && grep -q "eval  step 20" "$work/mine.txt" || { cat "$work/mine.txt"; exit 1; }
echo "mine-tiny (experiments/mine.hpp) trains: $(grep 'eval  step 20' "$work/mine.txt")"

# ---- bad experiment files: each fails before any run, naming the problem ----
expect_error() {  # NAME PATTERN: the experiment file exp_NAME.toml must fail with PATTERN
  local status=0
  "$llmtk" experiment "$work/exp_$1.toml" --out "$work/bad_$1" > "$work/bad.txt" 2>&1 || status=$?
  [[ $status == 2 ]] || { echo "$1: expected exit 2, got $status"; cat "$work/bad.txt"; exit 1; }
  grep -q "$2" "$work/bad.txt" || { echo "$1: expected '$2' in:"; cat "$work/bad.txt"; exit 1; }
  [[ ! -e $work/bad_$1 ]] || { echo "$1: the experiment started"; exit 1; }
  echo "$1: $(head -1 "$work/bad.txt")"
}
sed 's/"optim.lr" = /"optim.lrr" = /' "$work/exp.toml" > "$work/exp_key.toml"
expect_error key "did you mean optim.lr"
sed 's/"optim.lr" = .*/"optim.lr" = []/' "$work/exp.toml" > "$work/exp_empty.toml"
expect_error empty '"optim.lr" is an empty list'
sed 's/ffn\[ffn=relu\]/ffn[ffn=rellu]/' "$work/exp.toml" > "$work/exp_variant.toml"
expect_error variant "exp_variant.toml.*unknown architecture .ffn\[ffn=rellu\]. (did you mean ffn\[ffn=relu\]?)"
sed 's/"model.arch" = .*/"model.arch" = "fnn[*]"/' "$work/exp.toml" > "$work/exp_group.toml"
expect_error group "did you mean ffn\[\*\]"
sed 's/^steps = 3000/tokens = 100/' "$work/exp.toml" > "$work/exp_budget.toml"
expect_error budget "less than one step"

# ---- the report in a browser ----
chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -n $chromium ]]; then
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$work/profile" \
    --window-size=1300,1800 --screenshot="$work/report.png" "file://$out/report.html" > "$work/chromium.log" 2>&1 ||
    { cat "$work/chromium.log"; exit 1; }
  size=$(stat -c %s "$work/report.png")
  (( size > 30000 )) || { echo "the report's screenshot looks blank ($size bytes)"; exit 1; }
  echo "report.html renders in Chromium ($size bytes)"
else
  echo "NOTICE: chromium is not installed; the report was not rendered (./test.sh installs it)"
fi
echo "experiment: runs, stops, resumes exactly, reports, and refuses bad files: ok"
