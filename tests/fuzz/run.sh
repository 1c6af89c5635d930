#!/usr/bin/env bash
# Runs libFuzzer on fuzz targets (tests/fuzz/README.md): builds the fuzz preset (clang,
# AddressSanitizer + UBSan) when needed, fuzzes each TARGET for SECONDS from its committed corpus,
# and prints the executions and what was found. New interesting inputs go to build-fuzz/found/;
# an input that breaks a reader is written to build-fuzz/crashes/TARGET/ and the run fails.
#   tests/fuzz/run.sh SECONDS [TARGET...]     (no TARGET: all of them, one after another)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $# -lt 1 || ! $1 =~ ^[0-9]+$ ]]; then
  echo "usage: tests/fuzz/run.sh SECONDS [TARGET...]   (targets: $(ls tests/fuzz/corpus | tr '\n' ' '))" >&2
  exit 2
fi
seconds=$1
shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(ls tests/fuzz/corpus)
for t in "${targets[@]}"; do
  [[ -d tests/fuzz/corpus/$t ]] || { echo "run.sh: no target '$t' (tests/fuzz/corpus/$t is missing)" >&2; exit 2; }
done
tools/install-deps.sh --fuzz  # clang 14 and libFuzzer, once

cmake --preset fuzz > /dev/null
cmake --build build-fuzz -j"${JOBS:-2}" --target $(printf 'fuzz_%s ' "${targets[@]}")
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/found/$t" "build-fuzz/crashes/$t"
  log=build-fuzz/crashes/$t/last.log
  echo "== $t: ${seconds}s"
  if build-fuzz/bin/fuzz_"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=512 -print_final_stats=1 \
      -artifact_prefix="build-fuzz/crashes/$t/" "build-fuzz/found/$t" "tests/fuzz/corpus/$t" < /dev/null > "$log" 2>&1; then
    result=clean
  else
    result="FOUND A BUG (see $log and build-fuzz/crashes/$t/)"
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  edges=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)  # code edges reached
  echo "$t: ${seconds}s, ${execs:-?} executions, ${edges:-?} edges covered, $result"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%F)" "$t" "$seconds" "${execs:-?}" "${edges:-?}" "$result" >> build-fuzz/runs.tsv
done
exit "$status"
