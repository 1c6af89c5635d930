#!/usr/bin/env bash
# Installs llama.cpp for the test that runs llmtk's GGUF exports in it (tests/scripts/gguf_llamacpp.sh):
# the npm package node-llama-cpp, pinned below, with its prebuilt linux-x64 CPU binary, into
# tests/.node (ignored by git). Idempotent: an installed copy of this version returns at once.
# Used by ./setup.sh and by the test itself. Exits 0 when llama.cpp is ready, 77 with the reason on
# stdout when it cannot be had here (no Node.js 20, no npm, or the registry out of reach), so the
# test skips with that reason instead of failing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
node_dir="$root/tests/.node"
version=3.21.1
if ! command -v node > /dev/null || (( $(node -p 'process.versions.node.split(".")[0]') < 20 )); then
  echo "SKIPPED: node-llama-cpp needs Node.js 20 or newer ($(node --version 2> /dev/null || echo 'no node'))"
  exit 77
fi
installed=$(node -p "try { require('$node_dir/node_modules/node-llama-cpp/package.json').version } catch { '' }" 2> /dev/null)
[[ $installed == "$version" ]] && exit 0
command -v npm > /dev/null || { echo "SKIPPED: npm is needed to install node-llama-cpp $version"; exit 77; }
mkdir -p "$node_dir"
# The CPU binary only (the CUDA and Vulkan builds are optional packages of hundreds of MB), and
# never a source build: a missing binary fails here instead of compiling llama.cpp.
if ! NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --silent --save-exact --omit=optional --prefix "$node_dir" \
    "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" > "$node_dir/install.log" 2>&1; then
  echo "SKIPPED: npm could not install node-llama-cpp $version (offline?); see $node_dir/install.log"
  exit 77
fi
echo "llama.cpp: node-llama-cpp $version installed in tests/.node"
