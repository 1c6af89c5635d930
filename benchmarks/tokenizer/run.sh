#!/usr/bin/env bash
# Tokenizer throughput, llmtk next to the GPT-2 encoders a user would pick instead, on the same
# text in the same run, and BPE training time. Writes benchmarks/results/tokenizer.{md,json}.
#   benchmarks/tokenizer/run.sh [TEXT_FILE]    (default: the KJV corpus from ./setup.sh)
# Peers (node, pinned below, installed once into benchmarks/.node from the npm registry):
#   gpt-tokenizer (JavaScript), tiktoken (OpenAI's Rust core built to WebAssembly), Hugging Face
#   tokenizers (Rust, native node binding): whole text in one call, and encodeBatch on one thread
#   and on all cores. Every peer's ids are compared with llmtk's (`llmtk tokenizer encode`).
# LLMTK_BIN=DIR uses the tokenizer_bench and llmtk binaries in DIR instead of building build/.
set -euo pipefail
cd "$(dirname "$0")/../.."
text=${1:-data/corpus/kjv.txt}
[[ -s $text ]] || { echo "no text at $text: run ./setup.sh first or pass a file" >&2; exit 2; }
bin=${LLMTK_BIN:-build/bin}
[[ -n ${LLMTK_BIN:-} ]] || cmake --build build -j2 --target tokenizer_bench llmtk > /dev/null

# The peers, installed into benchmarks/.node (npm registry) when a pinned version is missing.
node_dir=benchmarks/.node
pkgs=(gpt-tokenizer@4.0.0 tiktoken@1.0.22 tokenizers@0.23.2)
for p in "${pkgs[@]}"; do
  f=$node_dir/node_modules/${p%@*}/package.json
  if [[ ! -f $f ]] || [[ $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$f") != "${p##*@}" ]]; then
    command -v npm > /dev/null || { echo "npm is needed for the peers (apt-get install npm)" >&2; exit 2; }
    npm install --silent --save-exact --prefix "$node_dir" "${pkgs[@]}" > /dev/null
    break
  fi
done

threads=$(nproc)
load=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
peer() { LLMTK_NODE_MODULES=$node_dir node "benchmarks/tokenizer/$1" "$text" --ids "$out/$2.u32" "${@:3}" > "$out/$2.json"; }

"$bin/tokenizer_bench" --tokenizer tests/data/gpt2 --input "$text" --repeat 3 --train-vocab 8192 > "$out/llmtk.json"
"$bin/llmtk" tokenizer encode --tokenizer tests/data/gpt2 --input "$text" --json > "$out/llmtk.ids.json"
peer peer_gpt_tokenizer.mjs gpt_tokenizer
peer peer_tiktoken.mjs tiktoken
TOKENIZERS_PARALLELISM=false peer peer_hf_tokenizers.mjs hf_whole
TOKENIZERS_PARALLELISM=false peer peer_hf_tokenizers.mjs hf_batch_1 --batch
RAYON_NUM_THREADS=$threads peer peer_hf_tokenizers.mjs hf_batch_n --batch

mkdir -p benchmarks/results
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
python3 - "$out" "$text" "$cpu" "$threads" "$load" <<'PY'
import array, json, sys
out, text, cpu, nproc, load = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
ours = json.load(open(f"{out}/llmtk.json"))
ref = json.load(open(f"{out}/llmtk.ids.json"))
assert len(ref) == ours["tokens"], "llmtk tokenizer encode and tokenizer_bench disagree"

def same_ids(name):
    ids = array.array("I")
    with open(f"{out}/{name}.u32", "rb") as f:
        ids.frombytes(f.read())
    if list(ids) == ref:
        return "yes"
    first = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
    return f"no (first difference at token {first:,})"

peers = []
for name in ["gpt_tokenizer", "tiktoken", "hf_whole", "hf_batch_1", "hf_batch_n"]:
    p = json.load(open(f"{out}/{name}.json"))
    p["same_ids"] = same_ids(name)
    p["llmtk_over_peer"] = round(ours["mb_per_s"] / p["mb_per_s"], 2)
    peers.append(p)
ours["threads"] = 1
busy = float(load.split()[0]) > 1.2
res = {"text": text, "cpu": cpu, "cpus": nproc, "load_average_before": load, "llmtk": ours, "peers": peers}
json.dump(res, open("benchmarks/results/tokenizer.json", "w"), indent=2)

rows = [f"| llmtk (C++, PCRE2 JIT; whole text in one call) | 1 | {ours['mb_per_s']:.2f} | — | "
        f"{ours['tokens']:,} | (reference) | 1.00 |"]
for p in peers:
    rows.append(f"| {p['peer']} | {p['threads']} | {p['mb_per_s']:.2f} | {p['cpu_per_wall']:.2f} | "
                f"{p['tokens']:,} | {p['same_ids']} | {p['llmtk_over_peer']:.2f} |")
rows = "\n".join(rows)
note = (f"\n**The machine was busy when this run started** (load average {load}): other work shared "
        "its cores, so every figure may be low; the ratios of one run remain comparable.\n" if busy else "")
md = f"""# Tokenizer benchmark

GPT-2 encoding (r50k), median of 3 runs after a warm-up, on `{text}` ({ours['bytes']:,} bytes),
{cpu}, {nproc} CPUs (load average before the run: {load}). All rows come from one run.
{note}
| tokenizer | threads | MB/s | CPU / wall | tokens | same ids as llmtk | llmtk / this |
|---|---:|---:|---:|---:|---|---:|
{rows}

- threads: worker threads the encoder uses. llmtk's tokenizer_bench encodes on one thread (the
  tokenizer is thread-safe: `llmtk data prepare` encodes documents on all cores, but the benchmark
  has no threaded mode). gpt-tokenizer and the tiktoken npm package have no threads. HF tokenizers
  encodes one input sequentially and spreads `encodeBatch` over a Rayon pool (1 thread:
  `TOKENIZERS_PARALLELISM=false`; {nproc}: `RAYON_NUM_THREADS={nproc}`, all CPUs here).
- CPU / wall: the peer process's CPU time over wall time during the timed runs.
- HF tokenizers' encodeBatch gets the text in chunks of about 8K characters (of sizes from one
  verse to 64K, 4K-16K were fastest), cut before a newline that follows a non-space character,
  where GPT-2's pre-tokenizer always splits, so the ids are those of the whole text (checked in
  the column "same ids"). Its tokenizer is GPT-2's tokenizer.json built from `tests/data/gpt2`
  (ByteLevel pre-tokenizer, BPE model). Its whole-text encode slows down as the input grows.
- Node peers' times include handing the ids to JavaScript; the text is read and decoded outside
  the timing. "same ids": every id of the whole text, compared with `llmtk tokenizer encode`.

BPE training on the same text to a {ours.get('train_vocab', 0)}-token vocabulary: **{ours.get('train_seconds', 0):.2f} s**.

Command: `benchmarks/tokenizer/run.sh {text}`
"""
open("benchmarks/results/tokenizer.md", "w").write(md)
print(md)
PY
