#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds what is missing, runs CTest.
# Extra arguments go to ctest (e.g. ./test.sh -R golden).
set -euo pipefail
cd "$(dirname "$0")"

tools/install-deps.sh --tests
preset=default
[[ ${CI:-} == true ]] && preset=ci
# Configure every time (a second or two): a CI run on a build made without CI=true still gets
# the ci preset's settings (warnings as errors).
cmake --preset "$preset" > /dev/null
cmake --build build -j2
status=0
ctest --test-dir build -j2 --output-on-failure "$@" || status=$?
# CTest lists skipped tests but hides why; print each one's own SKIPPED line.
log=build/Testing/Temporary/LastTest.log
if [[ -f $log ]] && grep -q "^SKIPPED" "$log"; then
  echo "Why the skipped tests skipped:"
  grep "^SKIPPED" "$log" | sort | uniq -c | sed 's/^/ /'
fi
exit "$status"
