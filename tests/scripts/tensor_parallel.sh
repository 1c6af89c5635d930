#!/usr/bin/env bash
# Tensor parallel with MPI (docs/distributed.md), two ranks on this machine, each holding half of
# every layer's attention heads and feed-forward units and reading the whole batch:
# - the embedding and the LM head split by vocabulary rows, the loss a parallel cross-entropy;
# - equivalence: 2 ranks give the losses, validation and weights of 1 process over 20 steps, for
#   a Llama-shaped model (GQA, RoPE, RMSNorm, SwiGLU) and a GPT-2-shaped one (biases, LayerNorm,
#   GELU MLP, learned positions, tied head), within fp32 reduction-order tolerance;
# - bit-reproducible run to run;
# - checkpoints hold the whole model: 2 -> 2 resume is exact, 2 -> 1 and 1 -> 2 continue with the
#   same losses, and generate reads a tensor-parallel run's checkpoint in one process;
# - the 2-D layout: 4 ranks in 2 groups of 2, data-parallel across the groups, against 1 process;
# - fine-tuning (finetune.from): the base loaded whole, each rank taking its share, against 1 process;
# - bf16 (f32 activations under tensor parallel, bf16 matmuls) against 1 process with the same
#   (LLMTK_BF16_ACTIVATIONS=0);
# - refusals before any work: sizes the ranks do not divide (the rules by name), parts that do not
#   split, a tp_size that does not divide the processes, a batch the groups cannot share.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/scripts/mpi_setup.sh" 2
tp=(--set distributed.strategy=tp)
gpt=(--set model.arch=gpt2-tiny --set model.bias=true --set log.sample_prompt=In)
run one "$llmtk" train tiny.toml --run-dir one
run tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --run-dir tp
grep -q "distributed: 2 processes (mpi), tensor parallel: each holds 1 of the 2 attention heads and 32 of the 64 feed-forward units of every layer and 150 of the 300 vocabulary rows of the embedding and the head (15200 of the model's 30240 parameters)" tp.txt ||
  { cat tp.txt; exit 1; }
run tp-again "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --run-dir tp-again
# The 2-D layout: 4 ranks in 2 groups of 2, each group splitting the model and reading half of
# every batch, the groups averaging their gradients.
mpi4=(mpirun -np 4 --oversubscribe)
run tp4 "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=2 --run-dir tp4
grep -q "tensor parallel in 2 groups of 2: each holds 1 of the 2 attention heads .* reads 4 rows of each batch of 8 (its group's)" tp4.txt ||
  { cat tp4.txt; exit 1; }
run tp4-again "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=2 --run-dir tp4-again
run tp-tp4 "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=2 --resume tp/checkpoints/step_00000010 --run-dir tp-tp4
# GPT-2's shape: row-parallel biases added once, the tied embedding whole on every rank; samples
# from the whole weights gathered on rank 0.
run gpt-one "$llmtk" train tiny.toml "${gpt[@]}" --run-dir gpt-one
run gpt-tp "${mpi[@]}" "$llmtk" train tiny.toml "${gpt[@]}" "${tp[@]}" --run-dir gpt-tp
# Resume: 2 -> 2 (exact), 2 -> 1, 1 -> 2.
run tp-tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --resume tp/checkpoints/step_00000010 --run-dir tp-tp
run tp-one "$llmtk" train tiny.toml --resume tp/checkpoints/step_00000010 --run-dir tp-one
run one-tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --resume one/checkpoints/step_00000010 --run-dir one-tp
run generate "$llmtk" generate gpt-tp --prompt "In the beginning" --max-tokens 8 --temperature 0
# Fine-tuning a trained run's weights: 1 process and tensor parallel from the same base.
run ft-one "$llmtk" train tiny.toml --set finetune.from=one --set optim.lr=3e-4 --run-dir ft-one
run ft-tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set finetune.from=one --set optim.lr=3e-4 --run-dir ft-tp
grep -q "initialised from the weights of one/checkpoints/best (step 20)" ft-tp.txt || { cat ft-tp.txt; exit 1; }
# bf16: tensor parallel keeps f32 activations (its sums and parallel cross-entropy exchange f32) and
# runs the matmuls on bf16; one process does the same with LLMTK_BF16_ACTIVATIONS=0.
run bf16-one env LLMTK_BF16_ACTIVATIONS=0 "$llmtk" train tiny.toml --set train.precision=bf16 --run-dir bf16-one
run bf16-tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set train.precision=bf16 --run-dir bf16-tp
for f in model optimizer.m optimizer.v; do
  cmp tp/checkpoints/step_00000020/$f.safetensors tp-again/checkpoints/step_00000020/$f.safetensors
  cmp tp/checkpoints/step_00000020/$f.safetensors tp-tp/checkpoints/step_00000020/$f.safetensors
  cmp tp4/checkpoints/step_00000020/$f.safetensors tp4-again/checkpoints/step_00000020/$f.safetensors
done

python3 - <<'PY'
import json, struct

def losses(run):
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        m = json.loads(line)
        if "loss" in m: out[m["step"]] = m["loss"]
        if "val_loss" in m: out[("val", m["step"])] = m["val_loss"]
    return out

def tensors(run, name="model"):  # a safetensors file of the last checkpoint, with the standard library
    f = open(f"{run}/checkpoints/step_00000020/{name}.safetensors", "rb").read()
    n = struct.unpack("<Q", f[:8])[0]
    header = json.loads(f[8:8 + n])
    out = {}
    for key, t in header.items():
        if key == "__metadata__": continue
        a, b = t["data_offsets"]
        out[key] = (tuple(t["shape"]), struct.unpack(f"<{(b - a) // 4}f", f[8 + n + a:8 + n + b]))
    return out

def close(a, b, rel, what):
    assert a.keys() == b.keys() and len(a) >= 22, (what, sorted(map(str, a.keys() ^ b.keys())))
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for k in a)
    print(f"{what}: worst relative difference {worst:.2e} (tolerance {rel:.0e})")
    assert worst <= rel, what

def weights_close(a, b, tol, what):
    wa, wb = tensors(a), tensors(b)
    assert wa.keys() == wb.keys() and all(wa[k][0] == wb[k][0] for k in wa), (what, "the checkpoints' tensors differ in name or shape")
    d = max(max(abs(x - y) for x, y in zip(wa[k][1], wb[k][1])) for k in wa)
    print(f"{what}, weights after 20 steps: largest difference {d:.2e} (tolerance {tol:.0e})")
    assert d <= tol, what

# Only the order of float sums differs (each rank's half of a row-parallel product, then the two
# halves), a few ulps that Adam's normalised steps let grow slowly.
close(losses("one"), losses("tp"), 1e-6, "llama-tiny, 1 process vs tensor parallel over 2")
weights_close("one", "tp", 1e-5, "llama-tiny, 1 process vs tensor parallel over 2")
close(losses("gpt-one"), losses("gpt-tp"), 1e-6, "gpt2-tiny with biases, 1 process vs tensor parallel over 2")
weights_close("gpt-one", "gpt-tp", 1e-5, "gpt2-tiny with biases, 1 process vs tensor parallel over 2")
assert losses("tp") == losses("tp-again"), "two identical tensor-parallel runs differ"
close(losses("one"), losses("tp4"), 1e-6, "llama-tiny, 1 process vs 2 tensor-parallel groups of 2 (2-D)")
weights_close("one", "tp4", 1e-5, "llama-tiny, 1 process vs 2 tensor-parallel groups of 2 (2-D)")
assert losses("tp4") == losses("tp4-again"), "two identical 2-D runs differ"
close(losses("tp-tp4"), losses("tp"), 1e-6, "tensor parallel over 2 resumed in 2 groups of 2 vs tensor parallel straight")
assert losses("tp-tp") == losses("tp"), "2 -> 2 tensor-parallel resume is not exact"
close(losses("tp-one"), losses("tp"), 1e-6, "tensor parallel's checkpoint resumed in 1 process vs tensor parallel straight")
close(losses("one-tp"), losses("one"), 1e-6, "1 process's checkpoint resumed with tensor parallel vs 1 process straight")
close(losses("ft-one"), losses("ft-tp"), 1e-6, "fine-tuning from a trained run, 1 process vs tensor parallel over 2")
assert losses("ft-tp")[1] < losses("tp")[1] - 0.05, "the fine-tuned run did not start from the trained weights"
# bf16 products of the same values; a sum order that differs in f32 can move an activation across a
# bf16 rounding boundary (2^-8 for that element), so the bound is looser than fp32's (3.3e-6 seen).
close(losses("bf16-one"), losses("bf16-tp"), 1e-4, "llama-tiny in bf16, 1 process vs tensor parallel over 2")
assert losses("bf16-tp") != losses("tp"), "the bf16 run gave the fp32 run's losses: bf16 was not used"
print("tensor parallel: equivalence, reproducibility and resume: ok")
PY
# Rank 0 wrote samples from the gathered weights, as one process writes them.
cmp gpt-one/samples.txt gpt-tp/samples.txt || { echo "== samples differ"; diff gpt-one/samples.txt gpt-tp/samples.txt; exit 1; }

# Refused before any work, by every rank, naming the rule or the part and what to change.
expect_refusal kv-heads "rule tp_divides_kv_heads: each rank takes model.n_kv_heads / 2, so n_kv_heads must be a multiple of the 2 tensor-parallel ranks (model.n_kv_heads = 1)" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set model.n_kv_heads=1 --run-dir kv-heads-run
expect_refusal d-ff "rule tp_divides_d_ff" "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set model.d_ff=65 --run-dir d-ff-run
expect_refusal vocab "rule tp_divides_vocab: each rank takes model.vocab / 2, so vocab must be a multiple of the 2 tensor-parallel ranks (model.vocab = 301)" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set model.vocab=301 --run-dir vocab-run
expect_refusal moe "but this model has a part tagged 'moe'" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set model.arch=moe-tiny --run-dir moe-run
expect_refusal tp-size "distributed.tp_size = 3 does not divide the 4 processes" \
  "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=3 --run-dir tp-size-run
expect_refusal tp-batch "train.batch = 6 is the global batch and does not divide among the 4 data-parallel groups of 1 tensor-parallel ranks" \
  "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=1 --set train.batch=6 --run-dir tp-batch-run
expect_refusal lora "a parameter-efficient method is not built under it yet" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set lora.rank=4 --set finetune.from=one --run-dir lora-run
echo "tensor parallel: refusals ok"
