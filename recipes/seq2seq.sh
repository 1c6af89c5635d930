#!/usr/bin/env bash
# The encoder-decoder family, measured (docs/encoder-decoder.md): t5-tiny trained on span
# corruption (recipes/t5-span.toml), beside the original Transformer's layout (transformer-tiny:
# post-norm, sinusoidal positions, biases) at the same width, depth, data, steps and schedule.
# Writes benchmarks/results/seq2seq.md. Needs ./setup.sh first (build/bin/llmtk, data/kjv-t5).
#   recipes/seq2seq.sh        (about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
llmtk=build/bin/llmtk
[[ -x $llmtk && -f data/kjv-t5/tokenizer.json ]] ||
  { echo "run ./setup.sh first: this needs build/bin/llmtk and data/kjv-t5" >&2; exit 2; }
mkdir -p benchmarks/results
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
$llmtk train recipes/t5-span.toml --overwrite > "$logs/t5.txt" || { cat "$logs/t5.txt"; exit 1; }
$llmtk train recipes/t5-span.toml --set model.arch=transformer-tiny --set model.bias=true --set model.norm_eps=1e-5 \
  --run-dir runs/transformer-span --overwrite > "$logs/transformer.txt" || { cat "$logs/transformer.txt"; exit 1; }

val() {  # val RUN STEP KEY: a validation figure from metrics.jsonl
  python3 -c 'import json, sys
for l in open(sys.argv[1] + "/metrics.jsonl"):
    j = json.loads(l)
    if j.get("step") == int(sys.argv[2]) and sys.argv[3] in j: print("%.4f" % j[sys.argv[3]])' "$1" "$2" "$3"
}
params() { $llmtk arch show "$1" --json | python3 -c 'import json, sys; print("{:,}".format(json.load(sys.stdin)["params"]))'; }
prompt="And God said, Let there be <extra_id_0>: and there was light. And God saw the <extra_id_1>, that it was good."
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "# Encoder-decoders: span corruption"
  echo
  echo "Written by \`recipes/seq2seq.sh\` on $cpu, 2 threads (the figures do not depend on the machine)."
  echo
  echo "Both models: d 192, 3 encoder + 3 decoder layers, 6 heads, d_ff 768, the quickstart tokenizer with"
  echo "[PAD] and 100 sentinels (data/kjv-t5), 1,500 steps of 16 rows; sources of 128 tokens (windows of 141,"
  echo "21 tokens dropped in 7 spans), targets of 29. Held-out chapters, fixed spans (teacher-forced):"
  echo
  echo "| model | params | val span loss at step 250 | 500 | 1000 | 1500 | target-token accuracy | exact spans |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for run in t5-span transformer-span; do
    name=$([[ $run == t5-span ]] && echo "t5-tiny (relative bias, pre-norm RMSNorm, no biases)" || echo "transformer-tiny (sinusoidal, post-norm LayerNorm, biases)")
    echo "| $name | $(grep -m1 "^model " "$logs/${run%%-*}.txt" 2>/dev/null | awk '{print $3}') | $(val runs/$run 250 val_loss) | $(val runs/$run 500 val_loss) | $(val runs/$run 1000 val_loss) | $(val runs/$run 1500 val_loss) | $(val runs/$run 1500 val_accuracy) | $(val runs/$run 1500 val_span_exact) |"
  done
  echo
  echo "What t5-tiny writes for a verse's sentinels (greedy):"
  echo
  echo '```'
  echo "\$ llmtk generate runs/t5-span --prompt \"$prompt\" --temperature 0"
  $llmtk generate runs/t5-span --prompt "$prompt" --temperature 0
  echo '```'
} > benchmarks/results/seq2seq.md
cat benchmarks/results/seq2seq.md
