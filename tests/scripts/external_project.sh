#!/usr/bin/env bash
# llmtk as a library (docs/library.md): the build installed into a temporary prefix, then
# examples/external/ — a project of its own with its own block (my_block.hpp) — configured with
# find_package(llmtk) against that prefix only, built, and run: its command lists my-tiny with
# the block's structure and trains it with the library's trainer (checkpoint, metrics, sample).
set -euo pipefail
build=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" > "$work/install.txt" || { cat "$work/install.txt"; exit 1; }
[[ -f $work/prefix/lib/cmake/llmtk/llmtkConfig.cmake && -f $work/prefix/include/llmtk/models/user.hpp &&
   -f $work/prefix/include/llmtk/cli.hpp ]] || { echo "the install lacks the package, models/user.hpp or cli.hpp"; exit 1; }
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root/examples/external" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" "${launcher[@]}" \
  > "$work/configure.txt" 2>&1 || { cat "$work/configure.txt"; exit 1; }
cmake --build "$work/build" > "$work/build.txt" 2>&1 || { cat "$work/build.txt"; exit 1; }
my="$work/build/my-llmtk"
"$my" arch list > "$work/list.txt"
grep -Eq "^my-tiny +[0-9,]+  examples/external: GQA with RoPE" "$work/list.txt" && grep -q "^llama-tiny " "$work/list.txt" ||
  { cat "$work/list.txt"; exit 1; }
"$my" arch show my-tiny > "$work/show.txt"
grep -q "MyBlock = Block<LayerNorm, GQA<RoPE>, MLP<ReLU>, SandwichNorm>" "$work/show.txt" || { cat "$work/show.txt"; exit 1; }
# Train it on a small corpus.
bible -l 1000 Genesis1:1-Genesis10:32 > "$work/text.txt"
"$my" data prepare "$root/recipes/data/kjv.toml" --input "$work/text.txt" --out "$work/data" --vocab-size 300 > /dev/null
"$my" train "$root/examples/external/tiny.toml" --set data.dir="$work/data" --set train.threads=1 --run-dir "$work/run" \
  > "$work/train.txt" 2>&1 || { cat "$work/train.txt"; exit 1; }
grep -Eq "eval  step 40  val loss [0-9.]+" "$work/train.txt" || { cat "$work/train.txt"; exit 1; }
[[ -d $work/run/checkpoints/step_00000040 ]] || { ls "$work/run/checkpoints"; exit 1; }
python3 - "$work/run/metrics.jsonl" <<'PY'
import json, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
assert losses[-1] < losses[0] - 0.1, losses  # it learns
PY
echo "external project: built against the installed llmtk, my-tiny listed and trained"
