#!/usr/bin/env bash
# Crash-safe checkpoints, proven by killing (docs/reliability.md). A small run checkpoints every
# step with slow writes (LLMTK_FAULTS=slow_write=MS: each write waits first, so kills land inside
# checkpoint writes) and is SIGKILLed at a random moment, then resumed, TRIALS times (60; seeded,
# so every run of the test makes the same kills). After each kill, every checkpoint directory a
# reader would take (checkpoints/step_* and best, not *.tmp) must be complete: state.json parses
# and each safetensors file is as long as its header says. Each resume must load (a process
# that ends other than killed or finished fails the test). At the end the run, killed and resumed
# TRIALS times, must have exactly the losses and the final weights of the same run never killed.
# Also: a second trainer on a run directory in use is refused (the lock), and a killed trainer's
# lock does not outlive it.
set -euo pipefail
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
trials=${TRIALS:-60}
command -v bible > /dev/null || { echo "bible (Debian's bible-kjv) is needed: ./setup.sh installs it" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2> /dev/null || true; rm -rf "$work"' EXIT
cd "$work"
export LLMTK_MATMUL_PEAK_GFLOPS=100  # skip the start-up matmul measurement
bible -l 1000 Genesis1:1-Genesis12:20 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
recipe=(train "$root/recipes/quickstart.toml" --set data.dir="$work/data" --set model.vocab=300 --set model.d_model=32
        --set model.n_layers=2 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq=32
        --set train.batch=4 --set train.seq=32 --set train.steps=100 --set schedule.warmup=2 --set eval.every=5
        --set eval.batches=1 --set log.sample_prompt= --set log.every=1 --set train.threads=1
        --set checkpoint.every=1 --set checkpoint.keep=2)
"$llmtk" "${recipe[@]}" --run-dir straight > straight.txt || { cat straight.txt; exit 1; }

# Every checkpoint a reader would take is whole.
check_complete() {
  /usr/bin/python3 - "$1" <<'PY'
import json, os, struct, sys
run = sys.argv[1]
root = os.path.join(run, "checkpoints")
if not os.path.isdir(root):
    sys.exit(0)
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    if name.endswith(".tmp") or not (name.startswith("step_") or name == "best"):
        continue
    state = json.load(open(os.path.join(d, "state.json")))  # raises when missing or torn
    assert state["step"] >= 1, (d, state["step"])
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    assert "model.safetensors" in files and any(f.startswith("optimizer.") for f in files), (d, files)
    for f in files:
        p = os.path.join(d, f)
        with open(p, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        assert os.path.getsize(p) == 8 + n + end, f"{p}: {os.path.getsize(p)} bytes, the header says {8 + n + end}"
PY
}

RANDOM=20261205
export LLMTK_FAULTS=slow_write=4
inside=0 killed=0 finished=0
for ((t = 1; t <= trials; ++t)); do
  # A complete checkpoint to resume from (not step_N.tmp/, which a kill can leave holding state.json).
  if compgen -G "killed/checkpoints/step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]/state.json" > /dev/null; then
    args=(--resume killed)
  else
    args=(--run-dir killed --overwrite)  # killed before its first checkpoint: start again
  fi
  "$llmtk" "${recipe[@]}" "${args[@]}" > "trial-$t.txt" 2>&1 &
  pid=$!
  if [[ ${args[0]} == --run-dir ]]; then
    # A fresh start is let reach its first checkpoint before the random kill: on a loaded machine
    # (the suite runs two tests at once) starting can take longer than the longest delay below,
    # and then no kill would ever leave a checkpoint to resume from.
    for _ in $(seq 600); do
      compgen -G "killed/checkpoints/step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]/state.json" > /dev/null && break
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.1
    done
  fi
  sleep "0.$(printf '%03d' $((150 + RANDOM % 850)))"
  kill -9 "$pid" 2> /dev/null || true
  rc=0
  wait "$pid" || rc=$?
  case $rc in
    137) ((++killed)) ;;
    0) ((++finished)); break ;;
    *) echo "trial $t: the trainer ended with status $rc, not killed or finished:"; cat "trial-$t.txt"; exit 1 ;;
  esac
  if compgen -G "killed/checkpoints/*.tmp" > /dev/null || compgen -G "killed/checkpoints/*/*.tmp" > /dev/null; then
    ((++inside))
  fi
  check_complete killed || { echo "trial $t: a checkpoint a reader would take is not whole"; ls -lR killed/checkpoints; exit 1; }
done
echo "kills: $killed (inside a checkpoint write: $inside), runs that finished before their kill: $finished"
((killed >= 50)) || { echo "only $killed kills landed; the test needs at least 50"; exit 1; }
((inside >= 10)) || { echo "only $inside kills landed inside a checkpoint write; the slow-write mode should make most do"; exit 1; }

# The lock: a second trainer on the directory in use is refused, before it writes anything.
"$llmtk" "${recipe[@]}" --resume killed > first.txt 2>&1 &
first=$!
for _ in $(seq 100); do grep -q "^step" first.txt && break; sleep 0.1; done
if "$llmtk" "${recipe[@]}" --resume killed > second.txt 2>&1; then echo "a second trainer ran on a directory in use"; exit 1; fi
grep -q "is in use: another process (pid $first) is training a run there" second.txt || { cat second.txt; exit 1; }
kill -9 "$first"
wait "$first" || true

# Killed and resumed many times, the run ends exactly as the one never killed.
unset LLMTK_FAULTS
"$llmtk" "${recipe[@]}" --resume killed > last.txt 2>&1 || { cat last.txt; exit 1; }
cmp straight/checkpoints/step_00000100/model.safetensors killed/checkpoints/step_00000100/model.safetensors ||
  { echo "the killed and resumed run's final weights differ from the straight run's"; exit 1; }
/usr/bin/python3 - straight/metrics.jsonl killed/metrics.jsonl <<'PY'
import json, sys
a, b = ({m["step"]: m for m in map(json.loads, open(p)) if "loss" in m} for p in sys.argv[1:])
assert sorted(a) == sorted(b) == list(range(1, 101)), (sorted(a), sorted(b))
diff = [s for s in a if a[s]["loss"] != b[s]["loss"]]
assert not diff, f"losses differ at steps {diff[:5]}"
PY
echo "kill test: $killed SIGKILLs ($inside inside checkpoint writes); every checkpoint left was whole, every resume loaded,"
echo "and the final weights and all 100 losses equal the run that was never killed"
