#!/usr/bin/env bash
# Tokenizer throughput, llmtk next to gpt-tokenizer (node) on the same text in the same run, and
# BPE training time. Writes benchmarks/results/tokenizer.{md,json}.
#   benchmarks/tokenizer/run.sh [TEXT_FILE]    (default: the KJV corpus from ./setup.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
text=${1:-data/corpus/kjv.txt}
[[ -s $text ]] || { echo "no text at $text: run ./setup.sh first or pass a file" >&2; exit 2; }
cmake --build build -j2 --target tokenizer_bench > /dev/null

# The peer, installed once into benchmarks/.node (npm registry).
node_dir=benchmarks/.node
if [[ ! -d $node_dir/node_modules/gpt-tokenizer ]]; then
  command -v npm > /dev/null || { echo "npm is needed for the peer (apt-get install npm)" >&2; exit 2; }
  npm install --silent --prefix "$node_dir" gpt-tokenizer@4.0.0 > /dev/null
fi

ours=$(build/bin/tokenizer_bench --tokenizer tests/data/gpt2 --input "$text" --repeat 3 --train-vocab 8192)
peer=$(LLMTK_NODE_MODULES=$node_dir node benchmarks/tokenizer/peer_gpt_tokenizer.mjs "$text")
mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
python3 - "$ours" "$peer" "$text" "$cpu" <<'PY'
import json, sys
ours, peer, text, cpu = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
ratio = ours["mb_per_s"] / peer["mb_per_s"]
res = {"text": text, "cpu": cpu, "llmtk": ours, "peer": peer, "ratio": round(ratio, 2)}
json.dump(res, open("benchmarks/results/tokenizer.json", "w"), indent=2)
md = f"""# Tokenizer benchmark

GPT-2 encoding (r50k), one thread, median of 3 runs after a warm-up, on `{text}` ({ours['bytes']:,} bytes), {cpu}.

| tokenizer | MB/s | tokens |
|---|---:|---:|
| llmtk (C++, PCRE2 JIT) | {ours['mb_per_s']:.2f} | {ours['tokens']:,} |
| {peer['peer']} | {peer['mb_per_s']:.2f} | {peer['tokens']:,} |

llmtk / peer: **{ratio:.2f}x**. Same token count: {ours['tokens'] == peer['tokens']}.

BPE training on the same text to a {ours.get('train_vocab', 0)}-token vocabulary: **{ours.get('train_seconds', 0):.2f} s**.

Command: `benchmarks/tokenizer/run.sh {text}`
"""
open("benchmarks/results/tokenizer.md", "w").write(md)
print(md)
PY
