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
