#!/usr/bin/env bash
# `llmtk export --gguf` files run in llama.cpp itself: node-llama-cpp's prebuilt CPU binary (npm,
# pinned in tools/install-llamacpp.sh, which ./setup.sh runs; installed into tests/.node) loads
# three trained models — Llama-style (tied head) in f32, f16, bf16 and q8_0, GPT-2-style (the gpt2
# architecture) and a mixture of experts (Mixtral's layout, untied head) in f32 and q8_0 — and
# tests/gguf/check_llamacpp.mjs compares each with llmtk: the token ids of 120 strings, the
# next-token log-probabilities after a prompt (within the bounds below) and, for f32, 32 tokens of
# greedy decoding. Skips (exit 77) with the reason where Node.js 20 or the package cannot be had.
set -euo pipefail
[[ -z ${CI-x} ]] && unset CI  # node-llama-cpp refuses an empty CI variable
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
node_dir="$root/tests/.node"
command -v bible > /dev/null || { echo "bible (Debian's bible-kjv) is needed: ./setup.sh installs it" >&2; exit 1; }
status=0
"$root/tools/install-llamacpp.sh" || status=$?
((status == 0)) || exit "$status"  # 77: skipped, with the reason printed
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
bible -l 1000 Genesis1:1-Exodus40:38 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
# Llama: rows of 64 and 96 (multiples of 32, as q8_0 needs), GQA with 2 kv heads, the tied head of llama-tiny.
"$llmtk" train "$root/recipes/quickstart.toml" --set model.arch=llama-tiny --set data.dir="$work/data" \
  --set model.vocab=300 --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 \
  --set model.d_ff=96 --set model.max_seq=64 --set train.batch=8 --set train.seq=64 --set train.steps=400 \
  --set schedule.warmup=5 --set eval.every=0 --set eval.batches=1 --set log.sample_prompt= --set train.threads=1 \
  --run-dir run > train.txt || { cat train.txt; exit 1; }
# 120 strings: verses the model never saw, and text llama.cpp's splitter must cut as GPT-2's does.
bible -l 1000 Revelation1:1-Revelation5:14 | head -100 > verses.txt
/usr/bin/python3 - "$llmtk" <<'PY'
import json, subprocess, sys
strings = [l.rstrip("\n") for l in open("verses.txt")]
strings += ["Hello, world!", "  two  spaces", "tabs\tand\nnewlines\n\n", "don't won't I'll we've they're",
            "3.14159 and 2,718 and 1e-9", "café naïve façade", "日本語のテキスト", "emoji 🙂 and ♥",
            "x" * 50, "UPPER lower MiXeD", "a.b,c;d:e!f?g", "(brackets) [square] {curly}",
            "    leading", "trailing    ", "#hash @at $dollar %percent", "under_score-dash",
            "'quoted' \"double\"", "ünïcödé", "1234567890", " "]
with open("strings.jsonl", "w") as f, open("ids.jsonl", "w") as g:
    for s in strings:
        ids = subprocess.run([sys.argv[1], "tokenizer", "encode", "--tokenizer", "data/tokenizer.json", "--text", s,
                              "--json"], check=True, capture_output=True, text=True).stdout
        f.write(json.dumps(s) + "\n")
        g.write(ids.strip() + "\n")
print(f"{len(strings)} strings")
PY
"$llmtk" generate run --prompt "And the LORD said unto Moses" --temperature 0 --max-tokens 32 --json > generate.json
export NODE_PATH="$node_dir/node_modules"
cp "$root/tests/gguf/check_llamacpp.mjs" "$node_dir/"  # ESM resolves packages next to the script
status=0
for spec in "f32 1e-4 exact" "f16 5e-3 skip" "bf16 2e-2 skip" "q8_0 5e-2 skip"; do
  read -r type tol greedy <<< "$spec"
  "$llmtk" export run --gguf "model-$type.gguf" --type "$type" > /dev/null
  echo "== $type ($(stat -c %s "model-$type.gguf") bytes)"
  node "$node_dir/check_llamacpp.mjs" "$work/model-$type.gguf" strings.jsonl ids.jsonl generate.json "$tol" "$greedy" || status=1
done
# GPT-2 (llama.cpp's gpt2 architecture): learned positions, LayerNorm with biases, fused q|k|v, GELU.
"$llmtk" train "$root/recipes/quickstart.toml" --set model.arch=gpt2-tiny --set data.dir="$work/data" \
  --set model.vocab=300 --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=4 \
  --set model.bias=true --set model.d_ff=128 --set model.max_seq=64 --set train.batch=8 --set train.seq=64 \
  --set train.steps=200 --set schedule.warmup=5 --set eval.every=0 --set eval.batches=1 --set log.sample_prompt= \
  --set train.threads=1 --run-dir run-gpt2 > train-gpt2.txt || { cat train-gpt2.txt; exit 1; }
"$llmtk" generate run-gpt2 --prompt "And the LORD said unto Moses" --temperature 0 --max-tokens 32 --json > generate-gpt2.json
# f32 to 3e-4: ggml computes GELU through a table of f16 values (6e-5 measured), where llmtk evaluates tanh.
for spec in "f32 3e-4 exact" "q8_0 5e-2 skip"; do
  read -r type tol greedy <<< "$spec"
  "$llmtk" export run-gpt2 --gguf "gpt2-$type.gguf" --type "$type" > /dev/null
  echo "== gpt2 $type ($(stat -c %s "gpt2-$type.gguf") bytes)"
  node "$node_dir/check_llamacpp.mjs" "$work/gpt2-$type.gguf" strings.jsonl ids.jsonl generate-gpt2.json "$tol" "$greedy" || status=1
done
# A mixture of experts (llama.cpp's llama architecture with ffn_gate_inp and stacked ffn_*_exps:
# softmax routing, top-2 renormalised) with an untied head (output.weight).
"$llmtk" train "$root/recipes/quickstart.toml" --set model.arch=mixtral-8x7b --set data.dir="$work/data" \
  --set model.vocab=300 --set model.d_model=64 --set model.n_layers=2 --set model.n_heads=4 --set model.n_kv_heads=2 \
  --set model.d_ff=64 --set model.moe_experts=4 --set model.moe_top_k=2 --set model.max_seq=64 --set model.rope_base=10000 \
  --set train.batch=8 --set train.seq=64 --set train.steps=200 --set schedule.warmup=5 --set eval.every=0 \
  --set eval.batches=1 --set log.sample_prompt= --set train.threads=1 --run-dir run-moe > train-moe.txt || { cat train-moe.txt; exit 1; }
"$llmtk" generate run-moe --prompt "And the LORD said unto Moses" --temperature 0 --max-tokens 32 --json > generate-moe.json
for spec in "f32 1e-4 exact" "q8_0 5e-2 skip"; do
  read -r type tol greedy <<< "$spec"
  "$llmtk" export run-moe --gguf "moe-$type.gguf" --type "$type" > /dev/null
  echo "== moe $type ($(stat -c %s "moe-$type.gguf") bytes)"
  node "$node_dir/check_llamacpp.mjs" "$work/moe-$type.gguf" strings.jsonl ids.jsonl generate-moe.json "$tol" "$greedy" || status=1
done
exit $status
