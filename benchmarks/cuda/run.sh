#!/usr/bin/env bash
# The CUDA backend on a GPU machine, in one run (about 3 minutes on an H100 with --no-build): build llmtk with
# CUDA for this GPU, run the CUDA tests, then time training steps of GPT-2 124M and a Llama-style
# model of similar size (bf16, batch 16 x seq 1024) next to PyTorch (eager with
# F.scaled_dot_product_attention, then torch.compile) on the same GPU, each with the backend's
# default (f32 activations, bf16 matmuls) and with LLMTK_BF16_ACTIVATIONS=1 (activations stored
# in bf16, docs/bf16.md: the measurement that decides the default), and write
# benchmarks/results/cuda.{md,json}. Every step runs under one deadline (BUDGET_S, default 450 s
# from the start), the report is rewritten after every step, and when $OUT is set (a folder to
# collect results in) the log, the report and torch.compile's errors are copied there.
#   benchmarks/cuda/run.sh [--no-build] [--no-tests] [--no-compile]
# LLMTK_PREFIX: a prefix holding the build dependencies this machine lacks (see docs/cuda.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=1 tests=1 compile=1
for arg in "$@"; do
  case $arg in
    --no-build) build=0 ;;
    --no-tests) tests=0 ;;
    --no-compile) compile=0 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
t_start=$SECONDS
say() { printf '[%4ds] %s\n' $((SECONDS - t_start)) "$*"; }
out_dir=${OUT:-}
[[ -n $out_dir ]] && exec > >(tee "$out_dir/run.log") 2>&1
deadline=$((t_start + ${BUDGET_S:-450}))
# tmo CAP CMD...: CMD with a time limit of CAP seconds or what is left before the deadline (less
# 20 s for the report), killed 5 s after the TERM if it ignores it; skipped when under 15 s remain.
tmo() {
  local cap=$1 left=$((deadline - SECONDS - 20))
  shift
  ((left < 15)) && { echo "skipped (out of time): $*" >&2; return 124; }
  timeout -k 5 $((left < cap ? left : cap)) "$@"
}
# json_of CMD...: the last line of CMD's output that is a JSON object, or an error object.
json_of() {
  local o
  o=$("$@") || true
  o=$(printf '%s\n' "$o" | grep '^{' | tail -1 || true)
  local what="$*"
  if [[ -n $o ]]; then printf '%s' "$o"; else printf '{"error": "failed or out of time: %s"}' "${what//\"/}"; fi
}

# ---- what this needs, checked up front with names ---------------------------------------------
command -v nvidia-smi > /dev/null || { echo "run.sh: nvidia-smi not found: this script is for a machine with an NVIDIA GPU" >&2; exit 1; }
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
say "GPU: $gpu (sm_$cc)"
py=python3
$py -c "import torch; assert torch.cuda.is_available()" 2> /dev/null ||
  { echo "run.sh: python3 has no PyTorch with CUDA (the peer); set PATH so python3 is the one with torch" >&2; exit 1; }
if ((build)); then
  missing=()
  for tool in cmake ninja nvcc; do command -v $tool > /dev/null || missing+=("$tool (program)"); done
  # Headers and libraries the project builds against (Debian package in parentheses).
  prefixes=(/usr/include /usr/local/include ${LLMTK_PREFIX:+$LLMTK_PREFIX/include} ${LLMTK_PREFIX:+$LLMTK_PREFIX/usr/include})
  have_header() { for p in "${prefixes[@]}"; do [[ -e $p/$1 ]] && return 0; done; return 1; }
  for pair in "fmt/core.h:libfmt-dev" "CLI/CLI.hpp:libcli11-dev" "nlohmann/json.hpp:nlohmann-json3-dev" \
              "toml++/toml.hpp:libtomlplusplus-dev" "catch2/catch.hpp:catch2 (v2)" "oneapi/dnnl/dnnl.hpp:libdnnl-dev" \
              "CL/cl.h:opencl-headers / ocl-icd-opencl-dev" "pcre2.h:libpcre2-dev" "utf8proc.h:libutf8proc-dev" \
              "cudnn.h:cuDNN 9 headers" "cublasLt.h:cuBLAS headers"; do
    have_header "${pair%%:*}" || [[ -e /usr/local/cuda/include/${pair%%:*} ]] || missing+=("${pair%%:*} (${pair#*:})")
  done
  command -v pkg-config > /dev/null || missing+=("pkg-config (program)")
  if ((${#missing[@]})); then
    echo "run.sh: cannot build here; missing:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "Carry them as a prefix (LLMTK_PREFIX=..., see docs/cuda.md) or carry a build made elsewhere and use --no-build." >&2
    exit 1
  fi
  say "configure and build (sm_$cc)"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMTK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$cc" \
        -DLLMTK_BENCHMARKS=OFF ${LLMTK_PREFIX:+-DCMAKE_PREFIX_PATH=$LLMTK_PREFIX} > build-gpu.log 2>&1 ||
    { tail -30 build-gpu.log >&2; exit 1; }
  cmake --build build-gpu -j"$(nproc)" --target llmtk test_cuda >> build-gpu.log 2>&1 || { tail -40 build-gpu.log >&2; exit 1; }
fi
source benchmarks/cuda/libs.sh

# ---- tests -----------------------------------------------------------------------------------
test_status=""
if ((tests)); then
  # [ops] twice: with the default separate GELU kernels, then with GELU in cuBLASLt's epilogues.
  for run in ops models train ops,gelu-epilogues; do
    tag=${run%%,*} extra=()
    [[ $run == *gelu-epilogues ]] && extra=(LLMTK_CUBLASLT_GELU=1)
    say "test_cuda [$tag] ${extra[*]}"
    if tmo 90 "${llmtk_env[@]}" "${extra[@]}" "$bin/test_cuda" "[$tag]" > "/tmp/test_cuda_$run.log" 2>&1; then st=pass
    else rc=$?; if ((rc == 77)); then st=skipped; else st="fail($rc)"; fi; fi
    tail -25 "/tmp/test_cuda_$run.log"
    [[ -n $out_dir ]] && { echo "==== test_cuda [$tag] ${extra[*]}"; cat "/tmp/test_cuda_$run.log"; } >> "$out_dir/test_cuda.log"
    test_status+="$run=$st "
    say "test_cuda [$tag] ${extra[*]}: $st"
  done
fi

# ---- benchmark ---------------------------------------------------------------------------------
mkdir -p benchmarks/results
declare -A ours act16 eager compiled
big='{"error": "not run"}'
gelu_on='{"error": "not run"}' gelu_on16='{"error": "not run"}'
archs=(gpt2 llama-124m)
for arch in "${archs[@]}"; do ours[$arch]='{"error": "not run"}' act16[$arch]='{"error": "not run"}' eager[$arch]='{"error": "not run"}' compiled[$arch]='{"error": "skipped"}'; done

# The report from what has run so far (rewritten after every step, so a run cut short keeps it).
report() {
  local rows_file
  rows_file=$(mktemp)
  for arch in "${archs[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$arch" "${ours[$arch]}" "${eager[$arch]}" "${compiled[$arch]}" "${act16[$arch]}" \
      >> "$rows_file"
  done
  $py - "$gpu" "$rows_file" "$big" "$test_status" "$gelu_on" "$gelu_on16" <<'PY'
import json, sys
def parse(s):
    try:
        return json.loads(s)
    except ValueError:
        return {"error": s[:200]}
gpu, rows_file, big, tests = sys.argv[1], sys.argv[2], parse(sys.argv[3]), sys.argv[4].split()
gelu_on, gelu_on16 = parse(sys.argv[5]), parse(sys.argv[6])
# Dense bf16 tensor-core peaks (datasheet) for MFU against the GPU, next to llmtk's measured one.
PEAKS = {"H100 80GB HBM3": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12}
spec = next((v for k, v in PEAKS.items() if k in gpu), None)
rows = []
for line in open(rows_file):
    arch, *parts = line.rstrip("\n").split("\t")
    ours, eager, comp, act16 = (parse(p) for p in (parts + ["", "", "", ""])[:4])
    row = {"arch": arch, "llmtk": ours, "pytorch_eager": eager, "pytorch_compile": comp,
           "llmtk_bf16_activations": act16}
    if "tokens_per_s" in ours:
        for k, peer in (("vs_eager", eager), ("vs_compile", comp)):
            if "tokens_per_s" in peer:
                row[k] = ours["tokens_per_s"] / peer["tokens_per_s"]
        if spec:
            row["mfu_vs_datasheet"] = ours["flops_per_token"] * ours["tokens_per_s"] / spec
    if "tokens_per_s" in act16:
        if "tokens_per_s" in comp:
            row["bf16_activations_vs_compile"] = act16["tokens_per_s"] / comp["tokens_per_s"]
        if spec:
            row["bf16_activations_mfu_vs_datasheet"] = act16["flops_per_token"] * act16["tokens_per_s"] / spec
    rows.append(row)
status = dict(t.split("=", 1) for t in tests)
json.dump({"gpu": gpu, "datasheet_bf16_flops": spec, "tests": status, "rows": rows, "largest_batch": big,
           "gpt2_gelu_epilogues_on": gelu_on, "gpt2_gelu_epilogues_on_bf16_activations": gelu_on16},
          open("benchmarks/results/cuda.json", "w"), indent=2)
def tps(r):
    return f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else r.get("error", "?")
md = [f"# Training step on the GPU, llmtk vs PyTorch\n\n{gpu}; bf16, batch 16 x seq 1024, AdamW; median of 10 timed steps after warm-up.\n"]
if status:
    md.append("CUDA tests: " + ", ".join(f"[{k}] {v}" for k, v in status.items()) + "\n")
md += ["| model | llmtk tokens/s | llmtk MFU (datasheet) | PyTorch eager tokens/s | torch.compile tokens/s | llmtk / eager | llmtk / compile "
       "| llmtk, bf16 activations: tokens/s | MFU | / compile |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    def pct(k):
        return f"{100 * r[k]:.0f}%" if k in r else "?"
    def x(k):
        return f"{r[k]:.2f}x" if k in r else "?"
    md.append(f"| {r['arch']} | {tps(r['llmtk'])} | {pct('mfu_vs_datasheet')} | {tps(r['pytorch_eager'])} | "
              f"{tps(r['pytorch_compile'])} | {x('vs_eager')} | {x('vs_compile')} | {tps(r['llmtk_bf16_activations'])} | "
              f"{pct('bf16_activations_mfu_vs_datasheet')} | {x('bf16_activations_vs_compile')} |")
first = rows[0]["llmtk"] if rows else {}
if "backend_info" in first:
    md.append(f"\nllmtk: {first['backend_info']}; measured matmul peak {first['matmul_peak_gflops'] / 1e3:.0f} TFLOP/s "
              f"(MFU against it: {100 * first['mfu']:.0f}% for {rows[0]['arch']}).")
if "tokens_per_s" in big:
    mfu = f", MFU {100 * big['flops_per_token'] * big['tokens_per_s'] / spec:.0f}% (datasheet)" if spec else ""
    md.append(f"\nLargest batch tried that fits, GPT-2 124M x seq 1024: batch {big['batch']}, {big['tokens_per_s']:.0f} tokens/s{mfu}.")
else:
    md.append(f"\nLargest batch: {big.get('error', '?')}.")
if rows and "tokens_per_s" in rows[0]["llmtk"]:
    md.append(f"\nGPT-2 124M with LLMTK_CUBLASLT_GELU=1 (GELU in cuBLASLt's matmul epilogues): {tps(gelu_on)} tokens/s, "
              f"against {tps(rows[0]['llmtk'])} with the default above (a separate GELU kernel); with bf16 activations "
              f"{tps(gelu_on16)}, against {tps(rows[0]['llmtk_bf16_activations'])} with the separate kernel.")
md.append("\nCommand: `benchmarks/cuda/run.sh`")
open("benchmarks/results/cuda.md", "w").write("\n".join(md) + "\n")
PY
  rm -f "$rows_file"
  [[ -n $out_dir ]] && cp benchmarks/results/cuda.md benchmarks/results/cuda.json "$out_dir/"
  return 0
}
report

for arch in "${archs[@]}"; do
  if [[ $arch == gpt2 ]]; then ours_args=(--arch gpt2); else ours_args=(--arch llama-tiny "${llama_sets[@]}"); fi
  say "llmtk bench step $arch"
  ours[$arch]=$(json_of tmo 90 "${llmtk_env[@]}" "$bin/llmtk" bench step "${ours_args[@]}" --device cuda --precision bf16 \
                --batch 16 --seq 1024 --steps 10 --warmup 2 --json)
  echo "${ours[$arch]}"
  say "llmtk bench step $arch, LLMTK_BF16_ACTIVATIONS=1"
  act16[$arch]=$(json_of tmo 90 "${llmtk_env[@]}" LLMTK_BF16_ACTIVATIONS=1 "$bin/llmtk" bench step "${ours_args[@]}" \
                 --device cuda --precision bf16 --batch 16 --seq 1024 --steps 10 --warmup 2 --json)
  echo "${act16[$arch]}"
  say "PyTorch eager $arch"
  eager[$arch]=$(json_of tmo 90 $py benchmarks/cuda/torch_gpu_step.py --arch "$arch")
  echo "${eager[$arch]}"
  report
done

# GPT-2 again with the GELU epilogues (off by default), to keep the default resting on a number.
say "llmtk bench step gpt2, LLMTK_CUBLASLT_GELU=1"
gelu_on=$(json_of tmo 90 "${llmtk_env[@]}" LLMTK_CUBLASLT_GELU=1 "$bin/llmtk" bench step --arch gpt2 --device cuda \
          --precision bf16 --batch 16 --seq 1024 --steps 10 --warmup 2 --json)
echo "$gelu_on"
say "llmtk bench step gpt2, LLMTK_CUBLASLT_GELU=1 LLMTK_BF16_ACTIVATIONS=1"
gelu_on16=$(json_of tmo 90 "${llmtk_env[@]}" LLMTK_CUBLASLT_GELU=1 LLMTK_BF16_ACTIVATIONS=1 "$bin/llmtk" bench step \
            --arch gpt2 --device cuda --precision bf16 --batch 16 --seq 1024 --steps 10 --warmup 2 --json)
echo "$gelu_on16"
report

# The largest batch that fits (GPT-2 124M, seq 1024), llmtk only: the first of these that runs.
big='{"error": "none of batch 48, 32, 24 fit"}'
for batch in 48 32 24; do
  say "llmtk bench step gpt2 batch $batch"
  if out=$(tmo 60 "${llmtk_env[@]}" "$bin/llmtk" bench step --arch gpt2 --device cuda --precision bf16 --batch "$batch" \
           --seq 1024 --steps 5 --warmup 1 --json 2> /tmp/big_batch.err); then
    big=$out
    break
  fi
  tail -2 /tmp/big_batch.err
done
echo "$big"
report

# torch.compile last: compiling costs a minute or two per model, and the numbers above matter more.
if ((compile)); then
  for arch in "${archs[@]}"; do
    say "PyTorch torch.compile $arch"
    compiled[$arch]=$(json_of tmo 180 $py benchmarks/cuda/torch_gpu_step.py --arch "$arch" --compile \
                      2> "${out_dir:-/tmp}/compile_$arch.err")
    echo "${compiled[$arch]}"
    report
  done
fi
cat benchmarks/results/cuda.md
say "done"
