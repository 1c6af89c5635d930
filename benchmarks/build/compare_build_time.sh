#!/usr/bin/env bash
# Full build time of this checkout next to another commit's, on the same machine in the same run:
# each is configured fresh (default preset settings, tests and the CUDA backend included when the
# toolkit is found) and built from scratch without the compiler cache. CPU time (user + sys over
# all compiler processes) is the figure to compare on a shared machine: wall time also counts
# waiting for the other tenant.
#   benchmarks/build/compare_build_time.sh BASE [NAME]
# writes benchmarks/results/build_vs_NAME.md (NAME defaults to BASE's short hash).
set -euo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/compare.sh  # commit_tree
base=${1:?usage: benchmarks/build/compare_build_time.sh BASE [NAME]}
base_sha=$(git rev-parse --short "$base")
name=${2:-$base_sha}
head_sha=$(git rev-parse --short HEAD)
measure() {  # source dir, build dir -> "wall_s cpu_s"
  rm -rf "$2"
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMTK_TESTS=ON -DLLMTK_WERROR=OFF > /dev/null
  local t0 t1
  t0=$(date +%s.%N)
  local times
  times=$( { /usr/bin/time -f "%U %S" env CCACHE_DISABLE=1 cmake --build "$2" -j2 > /dev/null; } 2>&1 | tail -1)
  t1=$(date +%s.%N)
  python3 -c "import sys; u,s=map(float,'$times'.split()); print(f'{$t1-$t0:.0f} {u+s:.0f}')"
}
tree=$(commit_tree "$base")
head_tree=$(commit_tree HEAD)
# A shared machine drifts over minutes: ORDER=head-first builds this checkout first, and a
# second run in the other order shows how much of a difference is the machine.
if [[ ${ORDER:-base-first} == head-first ]]; then
  read -r head_wall head_cpu < <(measure "$head_tree" "$head_tree/build-time")
  read -r base_wall base_cpu < <(measure "$tree" "$tree/build-time")
else
  read -r base_wall base_cpu < <(measure "$tree" "$tree/build-time")
  read -r head_wall head_cpu < <(measure "$head_tree" "$head_tree/build-time")
fi
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
mkdir -p benchmarks/results
out=benchmarks/results/build_vs_$name${ORDER:+_$ORDER}.md
cat > "$out" <<MD
# Full build: $head_sha against $base_sha (same machine, same run)

$cpu, 2 jobs, Release, tests and the CUDA backend included, no compiler cache; built ${ORDER:-base-first}.

| commit | wall | CPU (user + sys) |
|---|---:|---:|
| $base_sha | ${base_wall} s | ${base_cpu} s |
| $head_sha | ${head_wall} s | ${head_cpu} s |

CPU time ratio: $(python3 -c "print(f'{$head_cpu/$base_cpu:.3f}')")

Command: \`${ORDER:+ORDER=$ORDER }benchmarks/build/compare_build_time.sh $base $name\`
MD
cat "$out"
