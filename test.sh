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
# CI, and LLMTK_ASAN=1 anywhere: the memory- and undefined-behaviour-sensitive part of the suite
# again under AddressSanitizer and UBSan (the asan preset). A subset, to stay well inside CI's
# time: the ops on every backend (test_ops: the kernels that index by hand), the parts and models
# through the gradient checker (test_parts), the MoE's host-planned grouping and row windows and
# the stacks of different layers (test_moe, test_hybrid), the readers of outside input (test_data,
# test_tokenizer), the registry and its ablations (test_experiment), the command line around
# signals and child processes (cli.interrupt_and_resume, cli.experiment), and every fuzz target's
# corpus replayed (fuzz.*: tests/fuzz/README.md). The rest (golden
# comparisons, the emulated CUDA backend, exports) repeats the same kernels at ten times the cost.
if [[ ${CI:-} == true || ${LLMTK_ASAN:-} == 1 ]]; then
  echo "== the sanitizer pass: build-asan (AddressSanitizer + UBSan)"
  cmake --preset asan > /dev/null
  cmake --build build-asan -j2 --target llmtk test_core test_ops test_parts test_moe test_hybrid test_data test_tokenizer test_experiment fuzz_targets
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir build-asan -j2 --output-on-failure \
      -R '^(test_core|test_ops|test_ops\.cpu|test_parts|test_moe|test_moe\.cpu|test_hybrid|test_data|test_tokenizer|test_experiment|cli\.interrupt_and_resume|cli\.experiment|fuzz\..*)$' ||
    status=$?
fi
exit "$status"
