#!/usr/bin/env bash
# A Llama-style run in the three forms llmtk reads and writes, checked against each other and
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
"$llmtk" export run --hf hf > /dev/null
for type in f32 f16 bf16 q8_0; do
  "$llmtk" export run --gguf "m-$type.gguf" --type "$type" > /dev/null
  /usr/bin/python3 "$root/tests/golden/check_gguf.py" "m-$type.gguf" hf --type "$type"
done
loss() { "$llmtk" eval "$1" --data data/val_000.bin --batch 2 --seq 32 --batches 4 | grep -o "loss [0-9.]*" | head -1 | cut -d' ' -f2; }
run_loss=$(loss run)
for form in hf m-f32.gguf m-f16.gguf m-bf16.gguf m-q8_0.gguf; do
  got=$(loss "$form")
  echo "eval --data: run $run_loss, $form $got"
  case $form in
    hf|m-f32.gguf) [[ $got == "$run_loss" ]] || { echo "$form: loss $got, the run's $run_loss"; exit 1; } ;;
    *) python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 2e-2 * a)" "$run_loss" "$got" ||
         { echo "$form: loss $got, too far from the run's $run_loss"; exit 1; } ;;
  esac
done
"$llmtk" generate run --prompt "And God said" --max-tokens 8 --temperature 0 --json > gen-run.json
"$llmtk" generate m-f32.gguf --prompt "And God said" --max-tokens 8 --temperature 0 --json > gen-gguf.json
python3 - gen-run.json gen-gguf.json <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["prompt_ids"] == b["prompt_ids"], "the GGUF file's tokenizer encodes the prompt differently"
assert a["generated_ids"] == b["generated_ids"], (a["generated_ids"], b["generated_ids"])
err = max(abs(x - y) for x, y in zip(a["next_logprobs"], b["next_logprobs"]))
assert err == 0, f"next-token log-probabilities differ by {err}"
PY
# GGUF → Transformers: the f32 file converts back to the same tensors.
"$llmtk" export m-f32.gguf --hf hf-back > /dev/null
cmp hf/model.safetensors hf-back/model.safetensors || { echo "m-f32.gguf exported to Transformers differs from the run's export"; exit 1; }
# Bad input: a file that is not GGUF, and a GGUF file cut short, are named.
printf 'not a model' > notgguf.bin
if "$llmtk" eval notgguf.bin --text text.txt 2> err.txt; then echo "a non-GGUF file was accepted"; exit 1; fi
grep -q "notgguf.bin' is a file but not GGUF" err.txt || { cat err.txt; exit 1; }
head -c 5000 m-f32.gguf > cut.gguf
if "$llmtk" eval cut.gguf --text text.txt 2> err.txt; then echo "a cut GGUF file was accepted"; exit 1; fi
grep -q "cut.gguf': .*runs past the end of the file" err.txt || { cat err.txt; exit 1; }
echo "gguf: 4 types read back by an independent reader; eval equal on run, Transformers and GGUF forms"
