#!/usr/bin/env bash
# Renders `llmtk report` and the data-prepare report in headless Chromium and checks the
# screenshots hold drawn content (a blank page compresses to a few kilobytes). Exit 77 (CTest:
# skipped, shown as "Not Run (Skipped)") when Chromium is not installed.
set -euo pipefail
llmtk=$1
chromium=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chromium ]]; then
  echo "SKIPPED: chromium is not installed (./test.sh installs Debian's chromium through tools/install-deps.sh --tests)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Two runs with made-up but plausible metrics.
for run in a b; do
  mkdir -p "$work/$run"
  python3 - "$work/$run/metrics.jsonl" "$run" <<'PY'
import json, math, sys
path, run = sys.argv[1], sys.argv[2]
shift = 0.0 if run == "a" else 0.3
with open(path, "w") as f:
    for s in range(10, 501, 10):
        f.write(json.dumps({"step": s, "loss": 7 * math.exp(-s / 150) + 3 + shift, "lr": 3e-3 * (0.5 + 0.5 * math.cos(math.pi * s / 500)),
                            "grad_norm": 1 + math.sin(s / 30) * 0.3, "tokens_per_s": 3000 + 100 * math.sin(s), "elapsed_s": s * 0.7}) + "\n")
        if s % 100 == 0:
            f.write(json.dumps({"step": s, "val_loss": 7 * math.exp(-s / 150) + 3.2 + shift}) + "\n")
PY
done
"$llmtk" report "$work/a" "$work/b" --out "$work/report.html"
shoot() {
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --user-data-dir="$work/profile" \
    --window-size=1200,1400 --screenshot="$2" "file://$1" > "$work/chromium.log" 2>&1 || { cat "$work/chromium.log"; exit 1; }
  local size
  size=$(stat -c %s "$2")
  echo "$1 -> $2: $size bytes"
  (( size > 30000 )) || { echo "the screenshot of $1 looks blank ($size bytes)"; exit 1; }
}
shoot "$work/report.html" "$work/report.png"
grep -q "<polyline" "$work/report.html"
echo "report renders in Chromium: ok"
