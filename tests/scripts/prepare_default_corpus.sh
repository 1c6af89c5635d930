#!/usr/bin/env bash
# `llmtk data prepare` on the default corpus (the KJV from Debian's bible-kjv) produces shards,
# a tokenizer and the report, and `llmtk data inspect` decodes a shard: the README's data path.
set -euo pipefail
llmtk=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
bible -l 1000 Genesis1:1-Revelation22:21 > "$work/kjv.txt"
root=$(cd "$(dirname "$0")/../.." && pwd)
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input "$work/kjv.txt" --out "$work/out"
for f in tokenizer.json train_000.bin val_000.bin report.json report.html; do
  [[ -s $work/out/$f ]] || { echo "missing $f"; exit 1; }
done
"$llmtk" data inspect "$work/out/val_000.bin" --samples 1 | tee "$work/inspect.txt"
grep -q "documents" "$work/inspect.txt"
grep -q "And" "$work/inspect.txt"  # decoded English
echo "prepare and inspect: ok"
