#!/usr/bin/env bash
# The preference losses (DPO, cDPO, IPO, SimPO) and their gradients in llmtk equal those of an
# independent PyTorch implementation (tests/golden/check_preference.py, Debian's python3-torch):
# test_align writes each loss's inputs and outputs, the script recomputes them with autograd.
# Skips (exit 77) where torch is missing.
set -euo pipefail
test_align=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! /usr/bin/python3 -c "import torch" 2> /dev/null; then
  echo "SKIPPED: Debian's python3-torch is not installed (./test.sh installs it through tools/install-deps.sh --tests)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
LLMTK_PREFERENCE_DUMP="$work/cases.json" "$test_align" "[golden]" > "$work/log.txt" || { cat "$work/log.txt"; exit 1; }
/usr/bin/python3 "$root/tests/golden/check_preference.py" "$work/cases.json"
