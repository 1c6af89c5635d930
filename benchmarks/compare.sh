# Shell helpers shared by the benchmark scripts (sourced, not run).

# faster A B: of two `llmtk bench step --json` (or peer) objects, the one with more tokens/s.
# Noise on a shared machine only ever slows a run down, so the faster of repeated runs counts.
faster() {
  python3 -c 'import json,sys; a,b=(json.loads(x) for x in sys.argv[1:]); print(json.dumps(a if a["tokens_per_s"]>=b["tokens_per_s"] else b))' "$1" "$2"
}

# commit_tree REV: a worktree of REV under build-compare/ (made once), for building another commit
# next to this checkout; prints its path.
commit_tree() {
  local sha tree
  sha=$(git rev-parse --short "$1")
  tree=build-compare/src-$sha
  [[ -d $tree ]] || git worktree add --detach "$tree" "$1" > /dev/null
  echo "$tree"
}

# torch_peer: makes Debian's PyTorch ready to run as the peer: installs python3-torch with OpenBLAS
# (without it PyTorch falls back to a reference BLAS), and exports OPENBLAS_CORETYPE: OpenBLAS picks
# its kernels from the CPU model, and on virtual CPUs named "Intel Xeon Processor" it falls back to
# generic (Prescott) kernels at about an eighth of the speed; this gives it the core the CPU flags
# say it is, so the peer runs at its best.
torch_peer() {
  local need=() p sudo=()
  for p in python3-torch libopenblas0-openmp; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if ((${#need[@]})); then
    [[ $(id -u) -ne 0 ]] && sudo=(sudo)
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
  fi
  if [[ -z ${OPENBLAS_CORETYPE:-} ]]; then
    if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
  fi
  return 0
}
