#!/usr/bin/env bash
# An encoder from the command line: data prepared with the MLM's special tokens, bert-tiny trained
# on the masked-LM objective (loss and accuracy at each evaluation), `eval --data` on held-out
# shards, `generate` filling in [MASK], and the errors a user meets on the way.
set -euo pipefail
llmtk=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LLMTK_MATMUL_PEAK_GFLOPS=100
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Genesis20:18 > "$work/text.txt"
cat > "$work/data.toml" <<TOML
[input]
paths = ["$work/text.txt"]
[split]
val_fraction = 0.1
[tokenizer]
vocab_size = 300
special = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
[output]
dir = "$work/data"
TOML
"$llmtk" data prepare "$work/data.toml" > /dev/null
cat > "$work/bert.toml" <<TOML
[model]
arch = "bert-tiny"
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
vocab = 305
max_seq = 32
[data]
dir = "$work/data"
[train]
batch = 4
seq = 32
steps = 40
[schedule]
warmup = 5
[eval]
every = 20
batches = 2
[log]
every = 20
sample_prompt = "And God [MASK] the light"
TOML
"$llmtk" train "$work/bert.toml" --run-dir "$work/run" > "$work/train.txt" 2>&1 || { cat "$work/train.txt"; exit 1; }
grep -q "objective: masked language model" "$work/train.txt" && grep -Eq "eval  step 40  val loss [0-9.]+  accuracy [0-9.]+" "$work/train.txt" \
  || { cat "$work/train.txt"; exit 1; }
grep -q '"val_accuracy"' "$work/run/metrics.jsonl"
grep -q "\[MASK\] 1:" "$work/run/samples.txt" || { cat "$work/run/samples.txt"; exit 1; }
"$llmtk" eval "$work/run" --data "$work/data"/val_*.bin --batch 2 > "$work/eval.txt"
grep -Eq "masked-token accuracy [0-9.]+" "$work/eval.txt" || { cat "$work/eval.txt"; exit 1; }
"$llmtk" generate "$work/run" --prompt "And God [MASK] the light" > "$work/gen.txt"
grep -q "\[MASK\] 1:" "$work/gen.txt" || { cat "$work/gen.txt"; exit 1; }
"$llmtk" generate "$work/run" --prompt "the [MASK] and the [MASK]" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert len(j["masks"]) == 2 and all(len(m) == 5 for m in j["masks"]), j
assert all(abs(sum(g["probability"] for g in m)) <= 1 + 1e-9 for m in j["masks"]), j
print("fill-mask:", j["text"])'

# ---- the encoder fine-tuned as a classifier: Old or New Testament ----
bible -l 1000 Genesis1:1-Genesis20:18 Matthew1:1-Matthew10:42 > "$work/both.txt"
"$llmtk" data synth kjv-testament --source "$work/both.txt" --out "$work/cls-train.jsonl" > /dev/null
"$llmtk" data synth kjv-testament --source "$work/both.txt" --split test --out "$work/cls-test.jsonl" > /dev/null
python3 - "$work/cls-train.jsonl" "$work/cls-test.jsonl" <<'PY'
import json, sys
train = [json.loads(l) for l in open(sys.argv[1])]
test = [json.loads(l) for l in open(sys.argv[2])]
assert {r["label"] for r in train} == {"old", "new"}, "both testaments"
assert not {r["text"] for r in train} & {r["text"] for r in test}, "a test verse among the training examples"
assert all(r["ref"].startswith("Matthew") == (r["label"] == "new") for r in train + test)
PY
cat > "$work/classify.toml" <<TOML
[finetune]
from = "$work/run"
[classify]
train = "$work/cls-train.jsonl"
test = "$work/cls-test.jsonl"
labels = ["old", "new"]
[data]
dir = "$work/data"
[train]
batch = 8
seq = 32
steps = 30
[optim]
lr = 1e-3
[schedule]
warmup = 3
[eval]
every = 15
batches = 2
[log]
every = 15
sample_prompt = "Jesus answered them"
TOML
"$llmtk" train "$work/classify.toml" --run-dir "$work/cls" > "$work/cls.txt" 2>&1 || { cat "$work/cls.txt"; exit 1; }
grep -q "the classification head (head.pool.\*, head.weight, head.bias) starts at random" "$work/cls.txt" \
  && grep -Eq "eval  step 30  val loss [0-9.]+  accuracy [0-9.]+" "$work/cls.txt" || { cat "$work/cls.txt"; exit 1; }
grep -q "bert-tiny+classify" "$work/cls/checkpoints/best/state.json" && grep -q '"labels"' "$work/cls/checkpoints/best/state.json"
"$llmtk" eval "$work/cls" --task "$work/cls-test.jsonl" > "$work/cls-eval.txt"
grep -Eq "^accuracy [0-9.]+  \(always answering the most frequent label: [0-9.]+\)" "$work/cls-eval.txt" && grep -q "confusion" "$work/cls-eval.txt" \
  || { cat "$work/cls-eval.txt"; exit 1; }
"$llmtk" generate "$work/cls" --prompt "Jesus answered them" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert set(j["probabilities"]) == {"old", "new"} and abs(sum(j["probabilities"].values()) - 1) < 1e-9, j
print("classify:", j)'

# ---- errors, each naming the problem and the fix ----
expect_error() {  # PATTERN COMMAND...: the command must fail and print PATTERN
  local pattern=$1 status=0
  shift
  "$@" > "$work/err.txt" 2>&1 || status=$?
  [[ $status != 0 ]] || { echo "expected a failure: $*"; exit 1; }
  grep -q -- "$pattern" "$work/err.txt" || { echo "expected '$pattern' from: $*"; cat "$work/err.txt"; exit 1; }
}
expect_error "the text has no \[MASK\]" "$llmtk" generate "$work/run" --prompt "And God said"
expect_error "objective.mask_rate is for encoders" "$llmtk" train "$work/bert.toml" --set model.arch=llama-tiny \
  --set model.n_kv_heads=2 --set objective.mask_rate=0.2 --run-dir "$work/x"
expect_error "write \[MASK\] where it should predict" "$llmtk" train "$work/bert.toml" --set 'log.sample_prompt=And God' --run-dir "$work/x"
expect_error "mask_token + objective.random_token" "$llmtk" train "$work/bert.toml" --set objective.mask_token=0.95 --run-dir "$work/x"
sed -e '/^special/d' -e "s|$work/data\"|$work/plain\"|" "$work/data.toml" > "$work/plain.toml"
"$llmtk" data prepare "$work/plain.toml" > /dev/null
expect_error "special = \[" "$llmtk" train "$work/bert.toml" --set "data.dir=$work/plain" --set model.vocab=301 --run-dir "$work/x"
expect_error "needs labels, the class names" "$llmtk" train "$work/classify.toml" --set "classify.labels=[]" --run-dir "$work/x"
expect_error "is not one of classify.labels" "$llmtk" train "$work/classify.toml" --set 'classify.labels=["old", "later"]' --run-dir "$work/x"
expect_error "is a classifier" "$llmtk" eval "$work/cls" --data "$work/data"/val_*.bin
expect_error "fine-tunes an encoder" "$llmtk" train "$work/classify.toml" --set finetune.from= --set model.arch=llama-tiny \
  --set model.vocab=305 --run-dir "$work/x"
echo "encoder: trained, evaluated, filled in masks, fine-tuned as a classifier; 9 bad inputs refused"
