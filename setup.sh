#!/usr/bin/env bash
# One command from a fresh Debian machine to a running llmtk: installs the Debian packages it
# needs, configures, builds, then runs the main job. `./setup.sh --no-run` stops after the build.
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
cmake --build build -j2

if ((run)); then
  echo
  echo "== main job: llmtk arch show llama-tiny"
  build/bin/llmtk arch show llama-tiny
fi
