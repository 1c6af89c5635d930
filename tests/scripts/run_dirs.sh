#!/usr/bin/env bash
# A run directory is never overwritten by another run: a new run into an occupied directory is
# refused (--overwrite replaces it), --resume DIR continues in DIR, a resumed run continues
# elsewhere only into an empty directory, and resuming from an earlier checkpoint in place
# refuses to abandon the later ones unless told to.
set -euo pipefail
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"  # the recipe's default run directory would be $work/runs/quickstart
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Genesis50:26 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
sets=(--set data.dir="$work/data" --set model.vocab=300 --set model.d_model=16 --set model.n_layers=1
      --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=32 --set train.batch=2 --set train.seq=16
      --set schedule.warmup=0 --set eval.every=0 --set eval.batches=1 --set checkpoint.every=3 --set checkpoint.keep=1
      --set log.every=1 --set log.sample_prompt= --set train.threads=1)
recipe=$root/recipes/quickstart.toml
train() { "$llmtk" train "$recipe" "${sets[@]}" "$@"; }
fail() { echo "FAILED: $*"; exit 1; }
expect_refusal() {  # expect_refusal REGEX ARGS...: train must fail with exit 2 and say REGEX
  local regex=$1; shift
  local status=0
  train "$@" > out.txt 2>&1 || status=$?
  [[ $status == 2 ]] || { cat out.txt; fail "expected exit 2, got $status for: $*"; }
  grep -Eq "$regex" out.txt || { cat out.txt; fail "expected '$regex' for: $*"; }
}
digest() { find "$1" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; }

train --set train.steps=6 --run-dir a > /dev/null
train --set train.steps=6 --run-dir b > /dev/null
[[ -d a/checkpoints/step_00000006 && ! -d a/checkpoints/step_00000003 ]] || fail "keep = 1 should leave step 6 only"
before=$(digest a)

# 1. A new run into a directory that holds one is refused, before anything is written.
expect_refusal "'a' already holds a run \(its newest checkpoint is checkpoints/step_00000006\)\. Continue it with --resume a.*--overwrite" \
  --set train.steps=6 --run-dir a
[[ $(digest a) == "$before" ]] || fail "a refused run changed a/"

# 2. --resume DIR continues in DIR, not in the recipe's default run directory.
train --set train.steps=9 --resume a > resume.txt
[[ ! -e runs ]] || fail "--resume a wrote into runs/: $(ls -R runs)"
[[ -d a/checkpoints/step_00000009 ]] || fail "--resume a did not continue in a/"
[[ ! -d a/checkpoints/step_00000006 ]] || fail "keep = 1 kept the older checkpoint"
[[ $(grep -c '"loss"' a/metrics.jsonl) == 9 ]] || fail "a/metrics.jsonl should hold steps 1..9"
grep -q "^run: *a$" resume.txt || { cat resume.txt; fail "the summary should name a"; }

# 3. Continuing elsewhere: only into an empty directory, with the history up to the resumed step.
before_b=$(digest b)
expect_refusal "'b' already holds a run" --set train.steps=12 --resume a --run-dir b
[[ $(digest b) == "$before_b" ]] || fail "a refused resume changed b/"
train --set train.steps=12 --resume a --run-dir c > /dev/null
[[ -d c/checkpoints/step_00000012 && -d a/checkpoints/step_00000009 && ! -d a/checkpoints/step_00000012 ]] ||
  fail "--resume a --run-dir c should write c/ and leave a/ alone"
[[ $(grep -c '"loss"' c/metrics.jsonl) == 12 ]] || fail "c/metrics.jsonl should hold a's history and steps 10..12"

# 4. Resuming in place from an earlier checkpoint would abandon the later ones: refused, or with
#    --overwrite the later ones go.
train --set train.steps=15 --set checkpoint.keep=3 --resume c > /dev/null  # c: steps 12 and 15
expect_refusal "resuming c from step 12 would abandon its later checkpoints? ([a-z_0-9]+, )?step_00000015; pass --overwrite" \
  --set train.steps=18 --resume c/checkpoints/step_00000012
train --set train.steps=18 --set checkpoint.keep=3 --resume c/checkpoints/step_00000012 --overwrite > /dev/null
ls c/checkpoints | grep step_ | tr '\n' ' ' | grep -qx "step_00000012 step_00000015 step_00000018 " ||
  fail "after --overwrite c should hold steps 12, 15 (the new one) and 18: $(ls c/checkpoints)"

# 5. --overwrite replaces a run: its old checkpoints and metrics are gone.
train --set train.steps=3 --run-dir b --overwrite > /dev/null
[[ $(ls b/checkpoints | grep step_) == step_00000003 && $(grep -c '"loss"' b/metrics.jsonl) == 3 ]] ||
  fail "--overwrite should leave b with the new run only: $(ls b/checkpoints)"

# 6. A damaged state.json is named, with exit status 2 (a user's problem, not an internal error).
head -c 40 a/checkpoints/best/state.json > cut.json && mv cut.json a/checkpoints/best/state.json
status=0
"$llmtk" generate a --max-tokens 2 > out.txt 2>&1 || status=$?
[[ $status == 2 ]] && grep -q "a/checkpoints/best/state.json' is not a checkpoint's state" out.txt ||
  { cat out.txt; fail "a truncated state.json should be named, exit 2 (got $status)"; }
echo "run directories are never overwritten by another run: ok"
