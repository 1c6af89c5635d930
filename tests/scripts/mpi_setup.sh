# Sourced by distributed.sh and tensor_parallel.sh (with $llmtk and $root set): a scratch directory
# it works in (removed at exit), Open MPI's settings for 2 ranks on this machine, a small KJV
# corpus prepared in data/, tiny.toml (a 2-layer llama-tiny, 20 steps; $1 key/value heads), and
# the helpers run and expect_refusal.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
command -v mpirun > /dev/null || { echo "mpirun is not installed (tools/install-deps.sh installs openmpi-bin)"; exit 1; }
command -v bible > /dev/null || { echo "bible-kjv is not installed (tools/install-deps.sh installs it)"; exit 1; }
export LLMTK_MATMUL_PEAK_GFLOPS=100
# Open MPI refuses to start as root unless told; CI runs as root. --oversubscribe: 2 ranks even
# where Open MPI counts fewer slots (one core); each rank computes with one thread.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun -np 2 --oversubscribe)
bible -l 1000 Genesis1:1-Genesis20:18 > kjv.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input kjv.txt --out data --vocab-size 300 > /dev/null
printf '[model]\narch = "llama-tiny"\nd_model = 32\nn_layers = 2\nn_heads = 2\nn_kv_heads = %s\nd_ff = 64\nvocab = 300\nmax_seq = 32\n[data]\ndir = "data"\n[train]\nbatch = 8\nseq = 32\nsteps = 20\nthreads = 1\n[optim]\nlr = 1e-3\n[schedule]\nwarmup = 2\n[eval]\nevery = 10\nbatches = 2\n[checkpoint]\nevery = 10\nkeep = 5\n[log]\nevery = 1\nsample_prompt = ""\n' "${1:-1}" > tiny.toml

run() {  # run NAME COMMAND...: its output in NAME.txt, shown only when it fails
  local name=$1
  shift
  "$@" > "$name.txt" 2>&1 || { echo "== $name failed:"; cat "$name.txt"; exit 1; }
}
# Refused before any work, by every rank: the command fails, says TEXT, and creates no NAME-run.
expect_refusal() {  # expect_refusal NAME TEXT COMMAND...
  local name=$1 text=$2
  shift 2
  if "$@" > "$name.txt" 2>&1; then echo "== $name: expected a refusal"; cat "$name.txt"; exit 1; fi
  grep -qF -- "$text" "$name.txt" || { echo "== $name: expected '$text' in:"; cat "$name.txt"; exit 1; }
  [[ ! -e $name-run ]] || { echo "== $name: a refused run created its directory"; exit 1; }
}
