#!/usr/bin/env bash
# The encoder family, measured (docs/encoders.md): bert-tiny pre-trained as a masked language model
# (recipes/bert-mlm.toml), then fine-tuned to tell Old from New Testament verses
# (recipes/finetune/bert-classify.toml), beside the same classifier trained from random weights with the
# same data, steps and schedule. Writes benchmarks/results/encoders.md. Needs ./setup.sh first
# (build/bin/llmtk, data/kjv-mlm, data/corpus/kjv.txt).
#   recipes/encoders.sh        (about 8 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
llmtk=build/bin/llmtk
[[ -x $llmtk && -f data/kjv-mlm/tokenizer.json && -s data/corpus/kjv.txt ]] ||
  { echo "run ./setup.sh first: this needs build/bin/llmtk, data/kjv-mlm and data/corpus/kjv.txt" >&2; exit 2; }
mkdir -p data/tasks benchmarks/results
for split in train test; do
  [[ -s data/tasks/kjv-testament-$split.jsonl ]] || $llmtk data synth kjv-testament --split $split --out data/tasks/kjv-testament-$split.jsonl
done

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
$llmtk train recipes/bert-mlm.toml --overwrite > "$logs/mlm.txt" || { cat "$logs/mlm.txt"; exit 1; }
$llmtk train recipes/finetune/bert-classify.toml --overwrite > "$logs/classify.txt" || { cat "$logs/classify.txt"; exit 1; }
# The baseline: the classifier's architecture and sizes (bert-mlm's), every weight at random.
$llmtk train recipes/finetune/bert-classify.toml --set finetune.from= --set model.arch=bert-tiny --set model.d_model=192 \
  --set model.n_layers=4 --set model.n_heads=6 --set model.d_ff=768 --set model.vocab=4100 \
  --run-dir runs/bert-classify-scratch --overwrite > "$logs/scratch.txt" || { cat "$logs/scratch.txt"; exit 1; }

val() {  # val RUN STEP KEY: a validation figure from metrics.jsonl
  python3 -c 'import json, sys
for l in open(sys.argv[1] + "/metrics.jsonl"):
    j = json.loads(l)
    if j.get("step") == int(sys.argv[2]) and sys.argv[3] in j: print("%.4f" % j[sys.argv[3]])' "$1" "$2" "$3"
}
test_acc() { $llmtk eval "$1" --task data/tasks/kjv-testament-test.jsonl --batch 32 | awk '/^accuracy/ {print $2}'; }
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "# Encoders: a masked language model, then a classifier"
  echo
  echo "Written by \`recipes/encoders.sh\` on $cpu, 2 threads (the figures do not depend on the machine)."
  echo
  echo "## Pre-training: bert-tiny (d 192, 4 post-norm layers) as a masked language model"
  echo
  echo "\`recipes/bert-mlm.toml\`: 1,500 steps of 16 rows of [CLS] + 126 tokens + [SEP] of the King James Bible,"
  echo "BERT's masking (15% of tokens; of those 80% [MASK], 10% random, 10% kept). Validation: 16 batches of the"
  echo "held-out chapters, masked the same way at every evaluation."
  echo
  echo "| step | val masked-token loss | val masked-token accuracy |"
  echo "|---:|---:|---:|"
  for s in 250 500 750 1000 1250 1500; do echo "| $s | $(val runs/bert-mlm $s val_loss) | $(val runs/bert-mlm $s val_accuracy) |"; done
  echo
  echo "## Fine-tuning: Old or New Testament?"
  echo
  echo "\`recipes/finetune/bert-classify.toml\`: \`kjv-testament\` (13,113 training verses, classes even), 400 steps of 32"
  echo "verses, AdamW lr 1e-4 with linear decay. Validation: 1,440 of the 1,469 held-out verses; test: all of them"
  echo "(\`llmtk eval RUN --task data/tasks/kjv-testament-test.jsonl\`). Always answering one label scores 0.51."
  echo
  echo "| start | val accuracy at step 100 | 200 | 300 | 400 | test accuracy |"
  echo "|---|---:|---:|---:|---:|---:|"
  for run in bert-classify bert-classify-scratch; do
    name="the masked language model (runs/bert-mlm)"; [[ $run == *scratch ]] && name="random weights"
    echo "| $name | $(val runs/$run 100 val_accuracy) | $(val runs/$run 200 val_accuracy) | $(val runs/$run 300 val_accuracy) | $(val runs/$run 400 val_accuracy) | $(test_acc runs/$run) |"
  done
} > benchmarks/results/encoders.md
cat benchmarks/results/encoders.md
