#!/usr/bin/env bash
# Evaluation from the command line (docs/evaluation.md): perplexity of a text with a sliding
# window (text and --json), the kjv-next-verse multiple-choice task made by `data synth`, scored
# during training ([eval] tasks) and by `eval --task`, and the errors a user meets on the way: a binary file for --text, a task line
# without "label" (named FILE:LINE), --stride without --text, a window longer than the model's
# context or a stride longer than the window, and a task file of the wrong kind in a recipe.
set -euo pipefail
llmtk=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LLMTK_MATMUL_PEAK_GFLOPS=100
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Genesis20:18 > "$work/kjv.txt"
printf '[input]\npaths = ["%s"]\nsplit = "paragraph"\n[split]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 300\n[output]\ndir = "%s"\n' \
  "$work/kjv.txt" "$work/data" > "$work/data.toml"
"$llmtk" data prepare "$work/data.toml" > /dev/null
# The kjv-next-verse task's test split of these chapters, scored during training too ([eval] tasks).
"$llmtk" data synth kjv-next-verse --source "$work/kjv.txt" --split test --out "$work/nv.jsonl" > /dev/null
printf '[model]\narch = "llama-tiny"\nd_model = 32\nn_layers = 2\nn_heads = 2\nn_kv_heads = 1\nd_ff = 64\nvocab = 300\nmax_seq = 64\n[data]\ndir = "%s"\n[train]\nbatch = 4\nseq = 64\nsteps = 30\n[schedule]\nwarmup = 3\n[eval]\nbatches = 1\ntasks = ["%s"]\ntask_limit = 8\n[log]\nsample_prompt = ""\n' \
  "$work/data" "$work/nv.jsonl" > "$work/lm.toml"
"$llmtk" train "$work/lm.toml" --run-dir "$work/run" > "$work/train.txt" 2>&1 || { cat "$work/train.txt"; exit 1; }
grep -Eq "eval  step 30  val loss [0-9.]+  perplexity [0-9.]+  task nv [0-9.]+" "$work/train.txt" || { cat "$work/train.txt"; exit 1; }
grep -q '"task_nv":' "$work/run/metrics.jsonl" || { cat "$work/run/metrics.jsonl"; exit 1; }

# Perplexity: windows of 32 moved by 16 over chapter 21 (not in the corpus above).
bible -l 1000 Genesis21:1-Genesis21:34 > "$work/ch21.txt"
"$llmtk" eval "$work/run" --text "$work/ch21.txt" --seq 32 --stride 16 > "$work/ppl.txt"
grep -Eq "^window 32, stride 16: [0-9]+ windows$" "$work/ppl.txt" && grep -Eq "^perplexity [0-9.]+$" "$work/ppl.txt" \
  && grep -Eq "^[0-9]+ tokens/s" "$work/ppl.txt" || { cat "$work/ppl.txt"; exit 1; }
"$llmtk" eval "$work/run" --text "$work/ch21.txt" --json > "$work/ppl.json"
python3 - "$work/ppl.json" <<'PY'
import json, math, sys
j = json.load(open(sys.argv[1]))
assert j["window"] == 64 and j["stride"] == 32, j           # the model's context, half of it
assert abs(j["perplexity"] - math.exp(j["loss"])) < 1e-9 * j["perplexity"], j
assert 1 < j["perplexity"] < 300, j                           # better than uniform over the vocabulary
PY

# Multiple choice after training.
"$llmtk" eval "$work/run" --task "$work/nv.jsonl" --show 1 > "$work/mc.txt"
grep -Eq "^accuracy [0-9.]+  95% interval \[[0-9.]+, [0-9.]+\]" "$work/mc.txt" && grep -q "^chance 0.2500$" "$work/mc.txt" \
  && grep -q "right" "$work/mc.txt" || { cat "$work/mc.txt"; exit 1; }
"$llmtk" eval "$work/run" --task "$work/nv.jsonl" --json --limit 10 | python3 -c "
import json, sys
j = json.load(sys.stdin)
assert j['items'] + j['skipped'] == 10 and j['items'] > 0 and j['chance'] == 0.25 and j['accuracy_ci95'][0] <= j['accuracy'] <= j['accuracy_ci95'][1], j"

# Bad input: each error names the problem and the fix.
expect_error() {  # expect_error PATTERN COMMAND...
  local pattern=$1; shift
  if "$@" > "$work/err.txt" 2>&1; then echo "expected a failure: $*"; exit 1; fi
  grep -Eq -e "$pattern" "$work/err.txt" || { echo "expected /$pattern/ from: $*"; cat "$work/err.txt"; exit 1; }
}
head -c 2000 "$work/data"/train_*.bin | head -c 2000 > "$work/shard.bin"
expect_error "is not a text file \(a NUL byte at offset [0-9]+\); --text takes UTF-8 text \(token shards go to --data\)" \
  "$llmtk" eval "$work/run" --text "$work/shard.bin"
{ head -n 1 "$work/nv.jsonl"; echo '{"context": "x", "endings": [" a", " b"]}'; } > "$work/nolabel.jsonl"
expect_error "nolabel.jsonl:2: no \"label\"" "$llmtk" eval "$work/run" --task "$work/nolabel.jsonl"
expect_error "--stride is for --text" "$llmtk" eval "$work/run" --task "$work/nv.jsonl" --stride 8
expect_error "a window of 65 tokens is longer than the model's context \(64\); pass --seq 64 or less" \
  "$llmtk" eval "$work/run" --text "$work/ch21.txt" --seq 65
expect_error "--stride 40 is longer than the window \(32\)" "$llmtk" eval "$work/run" --text "$work/ch21.txt" --seq 32 --stride 40
sed "s|tasks = .*|tasks = [\"$work/data.toml\"]|" "$work/lm.toml" > "$work/bad-task.toml"
expect_error "eval.tasks: '.*data.toml' is not a multiple-choice file" "$llmtk" train "$work/bad-task.toml" --run-dir "$work/never"
[[ ! -e $work/never ]] || { echo "a refused recipe made a run directory"; exit 1; }
echo "eval: perplexity, multiple choice (after and during training) and 6 bad inputs as expected"
