#!/usr/bin/env bash
# Installs the Debian packages llmtk builds with; skips what is already installed (idempotent).
# Used by ./setup.sh and ./test.sh, so a fresh machine and CI need nothing else.
#   tools/install-deps.sh           what building and training need
#   tools/install-deps.sh --tests   and the independent peers the test suite checks against
#   tools/install-deps.sh --fuzz    and clang with libFuzzer, for tests/fuzz/run.sh
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache pkg-config  # toolchain (CMake >= 3.25, Ninja, compiler cache)
  libfmt-dev                     # fmt 9: formatting in the CLI
  libcli11-dev                   # CLI11: the command line
  nlohmann-json3-dev             # JSON output and golden test data
  catch2                         # Catch2 v2: the test suite
  libdnnl-dev ocl-icd-opencl-dev # oneDNN 2.6: the CPU backend (its CMake config needs OpenCL headers)
  libpcre2-dev                   # PCRE2: the tokenizers' pre-tokenization regex (Unicode classes)
  libutf8proc-dev                # utf8proc: Unicode NFC and character classes in corpus cleaning
  libtomlplusplus-dev            # toml++: data prepare configs and training recipes
  bible-kjv                      # the default corpus: the King James Bible (public domain)
  fortunes                       # a second domain for the fine-tuning recipes (recipes/finetune/)
  wordnet-base                   # WordNet glosses: the definition task of llmtk data synth (docs/sft.md)
  python3-minimal                # rewrites CUDA kernel launches for the CPU-emulated CUDA tests
  openmpi-bin libopenmpi-dev     # Open MPI: mpirun and the MPI communicator (docs/distributed.md)
)
if [[ ${1:-} == --tests ]]; then
  packages+=(
    chromium                     # headless browser: the test that renders the HTML reports
    python3-torch                # PyTorch 1.13: Transformers' formulas that check exports (tests/golden/)
  )
elif [[ ${1:-} == --fuzz ]]; then
  packages+=(
    clang-14 libclang-rt-14-dev  # libFuzzer and the sanitizers' runtime: the fuzz preset (tests/fuzz/)
  )
elif [[ -n ${1:-} ]]; then
  echo "install-deps.sh: unknown option '$1' (usage: tools/install-deps.sh [--tests | --fuzz])" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "llmtk: installing Debian packages: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "llmtk: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
