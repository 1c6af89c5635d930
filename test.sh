#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds what is missing, runs CTest.
# Extra arguments go to ctest (e.g. ./test.sh -R golden).
set -euo pipefail
cd "$(dirname "$0")"

tools/install-deps.sh
preset=default
[[ ${CI:-} == true ]] && preset=ci
[[ -f build/build.ninja ]] || cmake --preset "$preset"
cmake --build build -j2
ctest --test-dir build -j2 --output-on-failure "$@"
