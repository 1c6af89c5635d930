#!/usr/bin/env bash
# One command from a fresh Debian machine to a running llmtk: installs the Debian packages it
# needs, configures, builds the command line, then runs the main job. `./setup.sh --no-run` stops
# after the build. The tests, benchmarks and examples are left to ./test.sh, which builds them.
set -euo pipefail
cd "$(dirname "$0")"

run=1
for arg in "$@"; do
  case "$arg" in
    --no-run) run=0 ;;
    -h|--help) echo "usage: ./setup.sh [--no-run]"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (usage: ./setup.sh [--no-run])" >&2; exit 2 ;;
  esac
done

tools/install-deps.sh
preset=default
[[ ${CI:-} == true ]] && preset=ci
# Configure every time (a second or two): a CI run on a build made without CI=true still gets
# the ci preset's settings (warnings as errors).
cmake --preset "$preset" > /dev/null
cmake --build build -j2 --target llmtk
# llama.cpp (npm's node-llama-cpp, prebuilt) for the test that runs GGUF exports in it; where it
# cannot be had here that test skips, saying why, and nothing else needs it.
tools/install-llamacpp.sh || true

if ((run)); then
  # The default corpus: the King James Bible from Debian's bible-kjv (public domain), one verse
  # per line. Prepared once; later runs reuse data/kjv/ unless the corpus or its config changed.
  if [[ ! -s data/corpus/kjv.txt ]]; then
    mkdir -p data/corpus
    bible -l 1000 Genesis1:1-Revelation22:21 > data/corpus/kjv.txt.tmp
    mv data/corpus/kjv.txt.tmp data/corpus/kjv.txt
  fi
  echo
  if [[ data/kjv/report.json -nt recipes/data/kjv.toml && data/kjv/report.json -nt data/corpus/kjv.txt ]]; then
    echo "== corpus already prepared in data/kjv/ (report: data/kjv/report.html; delete data/kjv to redo)"
  else
    echo "== preparing the corpus: llmtk data prepare recipes/data/kjv.toml"
    build/bin/llmtk data prepare recipes/data/kjv.toml
  fi
  # The same corpus for a masked language model (recipes/bert-mlm.toml): kjv's tokenizer plus
  # [PAD], [CLS], [SEP], [MASK].
  if [[ data/kjv-mlm/report.json -nt recipes/data/kjv-mlm.toml && data/kjv-mlm/report.json -nt data/kjv/report.json ]]; then
    echo "== the encoder's corpus is already prepared in data/kjv-mlm/"
  else
    echo "== preparing the encoder's corpus: llmtk data prepare recipes/data/kjv-mlm.toml"
    build/bin/llmtk data prepare recipes/data/kjv-mlm.toml > /dev/null
  fi
  # And for an encoder-decoder trained on span corruption (recipes/t5-span.toml): kjv's tokenizer
  # plus [PAD] and the sentinels <extra_id_0> ... <extra_id_99>.
  if [[ data/kjv-t5/report.json -nt recipes/data/kjv-t5.toml && data/kjv-t5/report.json -nt data/kjv/report.json ]]; then
    echo "== the encoder-decoder's corpus is already prepared in data/kjv-t5/"
  else
    echo "== preparing the encoder-decoder's corpus: llmtk data prepare recipes/data/kjv-t5.toml"
    build/bin/llmtk data prepare recipes/data/kjv-t5.toml > /dev/null
  fi
  echo
  if [[ -f runs/quickstart/checkpoints/best/state.json && -f runs/quickstart/report.html ]]; then
    echo "== the quickstart is already trained in runs/quickstart/ (train it again with --overwrite)"
  elif compgen -G "runs/quickstart/checkpoints/step_*/state.json" > /dev/null; then
    echo "== main job, continued where it stopped: llmtk train recipes/quickstart.toml --resume runs/quickstart"
    build/bin/llmtk train recipes/quickstart.toml --resume runs/quickstart
  else
    echo "== main job: llmtk train recipes/quickstart.toml (about 3½ minutes on 2 cores)"
    build/bin/llmtk train recipes/quickstart.toml --overwrite  # a run that stopped before its first checkpoint
  fi
  echo
  echo "== a sample: llmtk generate runs/quickstart --prompt \"And God said\""
  build/bin/llmtk generate runs/quickstart --prompt "And God said" --max-tokens 60 --seed 7
fi
