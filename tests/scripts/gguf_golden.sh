#!/usr/bin/env bash
# A Llama-style run and a mixture of experts in the three forms llmtk reads and writes, checked against each other and
# against an independent reader: `export --gguf` (f32, f16, bf16, q8_0) read by
# tests/golden/check_gguf.py (the published GGUF layout, numpy only) and compared with the run's
# `export --hf` tensor by tensor; then `llmtk eval --data` gives the run's loss on the run, on the
# Transformers directory and on the f32 GGUF file (the same printed digits), and within the
# type's rounding on the others; `generate --json` gives the same log-probabilities from the
# f32 file; and a GGUF file converts back to the same Transformers tensors. Skips (exit 77) where
# numpy is missing.
set -euo pipefail
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! /usr/bin/python3 -c "import numpy" 2> /dev/null; then
  echo "SKIPPED: numpy is not installed for /usr/bin/python3 (./test.sh installs python3-torch, which brings it)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
bible -l 1000 Genesis1:1-Genesis30:43 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
# Rows of 32 (q8_0's blocks); a vocabulary padded past the tokenizer's end.
"$llmtk" train "$root/recipes/quickstart.toml" --set data.dir="$work/data" --set model.vocab=320 --set model.d_model=64 \
  --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.d_ff=96 --set model.max_seq=32 \
  --set train.batch=4 --set train.seq=32 --set train.steps=30 --set schedule.warmup=2 --set eval.every=0 \
  --set eval.batches=1 --set log.sample_prompt= --set train.threads=1 --run-dir run > train.txt || { cat train.txt; exit 1; }
loss() { "$llmtk" eval "$1" --data data/val_000.bin --batch 2 --seq 32 --batches 4 | grep -o "loss [0-9.]*" | head -1 | cut -d' ' -f2; }
# RUN exported to Transformers (RUN-hf) and to GGUF in each TYPE (RUN-TYPE.gguf): every file read by
# the independent reader, and eval --data equal on the run, its export and its f32 file (the same
# digits), within 2% on the rounded types.
forms() {
  local run=$1 type got run_loss
  shift
  "$llmtk" export "$run" --hf "$run-hf" > /dev/null
  for type in "$@"; do
    "$llmtk" export "$run" --gguf "$run-$type.gguf" --type "$type" > /dev/null
    /usr/bin/python3 "$root/tests/golden/check_gguf.py" "$run-$type.gguf" "$run-hf" --type "$type"
  done
  run_loss=$(loss "$run")
  for form in "$run-hf" "${@/#/$run-}"; do
    [[ $form == *-hf ]] || form+=.gguf
    got=$(loss "$form")
    echo "eval --data: $run $run_loss, $form $got"
    case $form in
      *-hf|*-f32.gguf) [[ $got == "$run_loss" ]] || { echo "$form: loss $got, the run's $run_loss"; exit 1; } ;;
      *) python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 2e-2 * a)" "$run_loss" "$got" ||
           { echo "$form: loss $got, too far from the run's $run_loss"; exit 1; } ;;
    esac
  done
}
forms run f32 f16 bf16 q8_0
# A mixture of experts (Mixtral's layout: the router, 4 experts stacked per matrix, top-2; an untied head).
"$llmtk" train "$root/recipes/quickstart.toml" --set model.arch=mixtral-8x7b --set data.dir="$work/data" --set model.vocab=320 \
  --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 --set model.d_ff=64 \
  --set model.moe_experts=4 --set model.moe_top_k=2 --set model.max_seq=32 --set train.batch=4 --set train.seq=32 \
  --set train.steps=30 --set schedule.warmup=2 --set eval.every=0 --set eval.batches=1 --set log.sample_prompt= \
  --set train.threads=1 --run-dir moe > train-moe.txt || { cat train-moe.txt; exit 1; }
forms moe f32 q8_0
"$llmtk" generate run --prompt "And God said" --max-tokens 8 --temperature 0 --json > gen-run.json
"$llmtk" generate run-f32.gguf --prompt "And God said" --max-tokens 8 --temperature 0 --json > gen-gguf.json
python3 - gen-run.json gen-gguf.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["prompt_ids"] == b["prompt_ids"], "the GGUF file's tokenizer encodes the prompt differently"
assert a["generated_ids"] == b["generated_ids"], (a["generated_ids"], b["generated_ids"])
err = max(abs(x - y) for x, y in zip(a["next_logprobs"], b["next_logprobs"]))
assert err == 0, f"next-token log-probabilities differ by {err}"
PY
# GGUF → Transformers: the f32 file converts back to the same tensors.
for run in run moe; do
  "$llmtk" export "$run-f32.gguf" --hf "$run-back" > /dev/null
  cmp "$run-hf/model.safetensors" "$run-back/model.safetensors" ||
    { echo "$run-f32.gguf exported to Transformers differs from the run's export"; exit 1; }
done
# Bad input: a file that is not GGUF, and a GGUF file cut short, are named.
printf 'not a model' > notgguf.bin
if "$llmtk" eval notgguf.bin --text text.txt 2> err.txt; then echo "a non-GGUF file was accepted"; exit 1; fi
grep -q "notgguf.bin' is a file but not GGUF" err.txt || { cat err.txt; exit 1; }
head -c 5000 run-f32.gguf > cut.gguf
if "$llmtk" eval cut.gguf --text text.txt 2> err.txt; then echo "a cut GGUF file was accepted"; exit 1; fi
grep -q "cut.gguf': .*runs past the end of the file" err.txt || { cat err.txt; exit 1; }
echo "gguf: Llama (4 types) and Mixtral (2) read back by an independent reader; eval equal on run, Transformers and GGUF forms"
