#!/usr/bin/env bash
# Per-op speed of the CPU backend at GPT-2 124M and llama-tiny shapes, next to oneDNN's plain
# matmul at the same shapes. Writes benchmarks/results/ops.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake --build build -j2 --target ops_bench > /dev/null
mkdir -p benchmarks/results
build/bin/ops_bench --json benchmarks/results/ops.json | tee benchmarks/results/ops.md
