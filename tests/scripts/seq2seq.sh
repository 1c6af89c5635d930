#!/usr/bin/env bash
# An encoder-decoder from the command line: data prepared with [PAD] and sentinels, a tiny
# transformer trained on span corruption (loss, target-token accuracy and exact spans at each
# evaluation), `eval --data` on held-out shards, `generate` filling in sentinels, and the errors a
# user meets on the way.
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
special = ["[PAD]"]
sentinels = 20
[output]
dir = "$work/data"
TOML
"$llmtk" data prepare "$work/data.toml" > /dev/null
cat > "$work/t5.toml" <<TOML
[model]
arch = "transformer-tiny"
d_model = 32
n_layers = 2
n_heads = 2
d_ff = 64
vocab = 321
max_seq = 64
[data]
dir = "$work/data"
[train]
batch = 4
seq = 48
steps = 40
[schedule]
warmup = 5
[eval]
every = 20
batches = 2
[log]
every = 20
sample_prompt = "And God <extra_id_0> the light"
TOML
"$llmtk" train "$work/t5.toml" --run-dir "$work/run" > "$work/train.txt" 2>&1 || { cat "$work/train.txt"; exit 1; }
# 48-token sources: windows of 52 tokens, 8 dropped in 3 spans (52 − 8 + 3 + 1 = 48; 53 tokens would
# make 49), targets of 8 + 3 + 1 = 12.
grep -q "objective: span corruption" "$work/train.txt" && grep -q "windows of 52 tokens become sources of 48 tokens (3 sentinels) and targets of 12" "$work/train.txt" \
  && grep -Eq "eval  step 40  val loss [0-9.]+  accuracy [0-9.]+  span_exact [0-9.]+" "$work/train.txt" \
  || { cat "$work/train.txt"; exit 1; }
grep -q '"val_span_exact"' "$work/run/metrics.jsonl"
grep -q "filled: " "$work/run/samples.txt" || { cat "$work/run/samples.txt"; exit 1; }
"$llmtk" eval "$work/run" --data "$work/data"/val_*.bin --batch 2 --seq 48 > "$work/eval.txt"
grep -Eq "exact spans [0-9.]+" "$work/eval.txt" && grep -q "sources of 48 tokens, targets of 12" "$work/eval.txt" || { cat "$work/eval.txt"; exit 1; }
"$llmtk" generate "$work/run" --prompt "And God <extra_id_0> the light" --temperature 0 > "$work/gen.txt"
grep -q "<extra_id_0>" "$work/gen.txt" || { cat "$work/gen.txt"; exit 1; }
"$llmtk" generate "$work/run" --prompt "the <extra_id_0> and the <extra_id_1>" --json --max-tokens 8 | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["source_ids"][-1] != j["source_ids"][0] and len(j["output_ids"]) <= 8, j
print("fill spans:", j["filled"], "|", j["target"])'

# ---- errors, each naming the problem and the fix ----
expect_error() {  # PATTERN COMMAND...: the command must fail and print PATTERN
  local pattern=$1 status=0
  shift
  "$@" > "$work/err.txt" 2>&1 || status=$?
  [[ $status != 0 ]] || { echo "expected a failure: $*"; exit 1; }
  grep -q -- "$pattern" "$work/err.txt" || { echo "expected '$pattern' from: $*"; cat "$work/err.txt"; exit 1; }
}
expect_error "write <extra_id_0> (then <extra_id_1>...) where it should fill in" "$llmtk" train "$work/t5.toml" \
  --set 'log.sample_prompt=And God' --run-dir "$work/x"
expect_error "objective.mask_rate is for encoders" "$llmtk" train "$work/t5.toml" --set objective.mask_rate=0.2 --run-dir "$work/x"
expect_error "objective.noise_density is for encoder-decoders" "$llmtk" train "$work/t5.toml" --set model.arch=llama-tiny \
  --set model.n_kv_heads=2 --set objective.noise_density=0.2 --set log.sample_prompt= --run-dir "$work/x"
expect_error "has 20 sentinels" "$llmtk" train "$work/t5.toml" --set train.seq=400 --set model.max_seq=512 --run-dir "$work/x"
sed -e '/^special/d' -e '/^sentinels/d' -e "s|$work/data\"|$work/plain\"|" "$work/data.toml" > "$work/plain.toml"
"$llmtk" data prepare "$work/plain.toml" > /dev/null
expect_error "sentinels = 100" "$llmtk" train "$work/t5.toml" --set "data.dir=$work/plain" --run-dir "$work/x"
expect_error "give the encoder a text" "$llmtk" generate "$work/run"
echo "encoder-decoder: trained on spans, evaluated, filled in sentinels; 6 bad inputs refused"
