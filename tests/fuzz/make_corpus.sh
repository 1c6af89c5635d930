#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets (tests/fuzz/README.md) into tests/fuzz/corpus/:
# the hand-made seeds of make_corpus.py, then what llmtk itself reads and writes: the recipes and
# data configs in recipes/, tokenizers it trains, a checkpoint's state.json and a GGUF export of a
# tiny model trained for two steps. Needs a build (build/bin/llmtk) and Debian's bible-kjv.
# Regression inputs (regress-*) that fuzzing found are kept as they are.
set -euo pipefail
cd "$(dirname "$0")/../.."
llmtk=$PWD/build/bin/llmtk
[[ -x $llmtk ]] || { echo "make_corpus.sh: build first (cmake --preset default && cmake --build build)" >&2; exit 2; }
corpus=tests/fuzz/corpus
python3 tests/fuzz/make_corpus.py
mkdir -p "$corpus"/{recipe,data_config,tokenizer_json,state_json,gguf}

# Recipes and data configs: the project's own.
for f in recipes/*.toml recipes/finetune/*.toml recipes/align/*.toml; do
  cp "$f" "$corpus/recipe/$(basename "$(dirname "$f")")-$(basename "$f" .toml)"
done
for f in recipes/data/*.toml; do cp "$f" "$corpus/data_config/$(basename "$f" .toml)"; done

mkdir -p "$corpus"/{recipe,data_config,tokenizer_json,state_json,gguf}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bible -f -l 1000 Genesis1:1-Genesis3:24 > "$work/genesis.txt"
# Tokenizers: a small byte-level BPE and a character tokenizer.
"$llmtk" tokenizer train --input "$work/genesis.txt" --out "$work/bpe.json" --vocab-size 280 > /dev/null
"$llmtk" tokenizer train --input "$work/genesis.txt" --out "$work/char.json" --kind char > /dev/null
cp "$work/bpe.json" "$corpus/tokenizer_json/bpe280"
cp "$work/char.json" "$corpus/tokenizer_json/char"

# A tiny model trained for two steps: its state.json, and its GGUF export.
cat > "$work/data.toml" <<TOML
[input]
paths = ["$work/genesis.txt"]
split = "line"
[split]
val_fraction = 0.1
[tokenizer]
path = "$work/bpe.json"
[output]
dir = "$work/data"
TOML
"$llmtk" data prepare "$work/data.toml" > /dev/null
cat > "$work/tiny.toml" <<TOML
[model]
arch = "llama-tiny"
d_model = 16
n_layers = 1
n_heads = 2
n_kv_heads = 1
d_ff = 32
vocab = 280
max_seq = 16
[data]
dir = "$work/data"
[train]
batch = 2
seq = 16
steps = 2
[checkpoint]
every = 2
TOML
"$llmtk" train "$work/tiny.toml" --run-dir "$work/run" > /dev/null
cp "$work/run/checkpoints/step_00000002/state.json" "$corpus/state_json/llama-tiny"
"$llmtk" export "$work/run" --gguf "$work/tiny.gguf" > /dev/null
cp "$work/tiny.gguf" "$corpus/gguf/llama-tiny-f32"
"$llmtk" export "$work/run" --gguf "$work/tiny-f16.gguf" --type f16 > /dev/null
cp "$work/tiny-f16.gguf" "$corpus/gguf/llama-tiny-f16"
echo "make_corpus.sh: $(find "$corpus" -type f | wc -l) seeds in $corpus"
