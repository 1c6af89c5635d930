#!/usr/bin/env bash
# Tensor parallel with MPI (docs/distributed.md), two ranks on this machine, each holding half of
# every layer's attention heads and feed-forward units and reading the whole batch:
# - the embedding and the LM head split by vocabulary rows, the loss a parallel cross-entropy;
# - equivalence: 2 ranks give the losses, validation and weights of 1 process over 20 steps, for
#   a Llama-shaped model (GQA, RoPE, RMSNorm, SwiGLU) and a GPT-2-shaped one (biases, LayerNorm,
#   GELU MLP, learned positions, tied head), within fp32 reduction-order tolerance;
# - bit-reproducible run to run;
# - training internals gathered from the ranks' shares: one process's record;
# - checkpoints hold the whole model: 2 -> 2 resume is exact, 2 -> 1 and 1 -> 2 continue with the
#   same losses, and generate reads a tensor-parallel run's checkpoint in one process;
# - the 2-D layout: 4 ranks in 2 groups of 2, data-parallel across the groups, against 1 process;
#   with ZeRO-1 and ZeRO-2 across the groups (tp+zero1, tp+zero2), the same bits, their
#   checkpoints whole;
# - fine-tuning (finetune.from): the base loaded whole, each rank taking its share, against 1 process;
# - bf16 (f32 activations under tensor parallel, bf16 matmuls) against 1 process with the same
#   (LLMTK_BF16_ACTIVATIONS=0);
# - refusals before any work: sizes the ranks do not divide (the rules by name), parts that do not
#   split, a tp_size that does not divide the processes, a batch the groups cannot share, ZeRO
#   without data-parallel groups, objectives it does not cover ([rl]);
# - arch show --strategy tp / tp+zero1 / tp+zero2: one rank's memory.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/scripts/mpi_setup.sh" 2
tp=(--set distributed.strategy=tp)
gpt=(--set model.arch=gpt2-tiny --set model.bias=true --set log.sample_prompt=In)
# Training internals recorded by both (tensor parallel gathers each layer's shares into one record).
ins=(--set log.internals=true --set log.internals_every=5)
run one "$llmtk" train tiny.toml "${ins[@]}" --run-dir one
run tp "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" "${ins[@]}" --run-dir tp
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
# ZeRO within the 2-D layout: the ranks holding the same share in the two groups shard that
# share's optimizer state (tp+zero1), and its gradients too (tp+zero2, a bucket per layer). With 2
# data-parallel ranks a sum of two floats is the same whichever rank adds it: the 2-D layout's bits.
run tp4-zero1 "${mpi4[@]}" "$llmtk" train tiny.toml --set distributed.strategy=tp+zero1 --set distributed.tp_size=2 --run-dir tp4-zero1
grep -q "tensor parallel in 2 groups of 2: .*, each rank keeping its part of its share's optimizer state (ZeRO-1" tp4-zero1.txt ||
  { cat tp4-zero1.txt; exit 1; }
z2=(--set distributed.strategy=tp+zero2 --set distributed.tp_size=2 --set distributed.bucket_mb=0.001)
run tp4-zero2 "${mpi4[@]}" "$llmtk" train tiny.toml "${z2[@]}" "${ins[@]}" --run-dir tp4-zero2
grep -q "each rank keeping its part of its share's gradients and optimizer state (ZeRO-2" tp4-zero2.txt || { cat tp4-zero2.txt; exit 1; }
# Their checkpoints are whole: tp+zero2's resumed in 1 process, tensor parallel's resumed with tp+zero2.
run tp4-zero2-one "$llmtk" train tiny.toml --resume tp4-zero2/checkpoints/step_00000010 --run-dir tp4-zero2-one
run tp-tp4-zero2 "${mpi4[@]}" "$llmtk" train tiny.toml "${z2[@]}" --resume tp/checkpoints/step_00000010 --run-dir tp-tp4-zero2
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
  cmp tp4/checkpoints/step_00000020/$f.safetensors tp4-zero1/checkpoints/step_00000020/$f.safetensors
  cmp tp4/checkpoints/step_00000020/$f.safetensors tp4-zero2/checkpoints/step_00000020/$f.safetensors
done

PYTHONPATH="$root/tests/scripts" python3 - <<'PY'
import json
import runs
from runs import losses, safetensors

def close(a, b, rel, what):
    assert len(a) >= 22, (what, sorted(map(str, a)))  # 20 steps and validation
    runs.close(a, b, rel, what)

def tensors(run):  # the last checkpoint's weights with their shapes
    return safetensors(f"{run}/checkpoints/step_00000020/model.safetensors")

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
assert losses("tp4") == losses("tp4-zero1") == losses("tp4-zero2"), "ZeRO in the 2-D layout differs from its data parallel"
close(losses("tp4-zero2-one"), losses("tp4"), 1e-6, "2-D tp+zero2's checkpoint resumed in 1 process vs the 2-D layout straight")
close(losses("tp-tp4-zero2"), losses("tp"), 1e-6, "tensor parallel over 2 resumed as 2-D tp+zero2 vs tensor parallel straight")
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
# Training internals: each rank's shares (split parameters' sums of squares, units, heads) gathered
# into one process's record: every number within fp32 reduction order (the dead share of units
# within one unit of the 32 a rank holds, as a unit near the threshold may fall either side; this
# small model has none dead, so that check only says the ranks found none either). In
# the 2-D layout rank 0 measures the activations of its group's rows (half the batch), as data
# parallel does: there only the gradients', weights' and updates' norms are one process's.
def internals(run):
    out = {}
    for line in open(f"{run}/internals.jsonl"):
        rec = json.loads(line)
        for layer in rec["layers"]:
            for k, v in layer.items():
                if k == "name": continue
                for i, x in enumerate(v if isinstance(v, list) else [v]): out[(rec["step"], layer["name"], k, i)] = x
        for name, v in rec["params"].items():
            for k, x in zip(("grad_norm", "weight_norm", "update_ratio"), v): out[(rec["step"], name, k, 0)] = x
    return out
a = internals("one")
assert sum(1 for k in a if k[2] == "attn_entropy") == 4 * 2 * 2 and any(k[2] == "dead" for k in a), sorted(a)
rows = ("act_mean", "act_std", "act_max", "dead", "attn_entropy")
for run in ("tp", "tp4-zero2"):
    b = internals(run)
    assert a.keys() == b.keys(), (run, sorted(map(str, a.keys() ^ b.keys())))
    if run == "tp4-zero2": a, b = ({k: v for k, v in m.items() if k[2] not in rows} for m in (a, b))
    rel = lambda k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-3)
    worst = max(rel(k) for k in a if k[2] != "dead")
    dead = max((abs(a[k] - b[k]) for k in a if k[2] == "dead"), default=0.0)
    print(f"training internals, 1 process vs {run}: {len(a)} numbers within {worst:.1e} relative (tolerance 1e-4), "
          f"dead units within {dead:.3f}")
    assert worst <= 1e-4 and dead <= 1 / 32 + 1e-9, [(k, a[k], b[k]) for k in a if k[2] != "dead" and rel(k) > 1e-4]
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
expect_refusal tp-zero "distributed.strategy = \"tp+zero1\" shards the optimizer state across tensor parallel's data-parallel groups, but tp_size = 2 puts all 2 processes in one group" \
  "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.strategy=tp+zero1 --run-dir tp-zero-run
expect_refusal tp-batch "train.batch = 6 is the global batch and does not divide among the 4 data-parallel groups of 1 tensor-parallel ranks" \
  "${mpi4[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set distributed.tp_size=1 --set train.batch=6 --run-dir tp-batch-run
expect_refusal lora "a parameter-efficient method is not built under it yet" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set lora.rank=4 --set finetune.from=one --run-dir lora-run
echo '{"messages": [{"role": "user", "content": "In the beginning"}, {"role": "assistant", "content": "God"}]}' > tasks.jsonl
expect_refusal rl "[classify] and [rl] with data parallel" \
  "${mpi[@]}" "$llmtk" train tiny.toml "${tp[@]}" --set rl.task=tasks.jsonl --set finetune.from=one --run-dir rl-run
echo "tensor parallel: refusals ok"

# arch show plans one rank's memory under tensor parallel: its share of the parameters, their
# gradients and moments (sharded across the groups with tp+zero1 / tp+zero2), its activations.
shape=(gpt2 --batch 8 --seq 256 --set model.vocab=50304 --json)
"$llmtk" arch show "${shape[@]}" > arch-one.json
"$llmtk" arch show "${shape[@]}" --ranks 2 --strategy tp > arch-tp.json
"$llmtk" arch show "${shape[@]}" --ranks 4 --strategy tp --tp-size 2 > arch4-tp.json
for s in tp+zero1 tp+zero2; do "$llmtk" arch show "${shape[@]}" --ranks 8 --strategy $s --tp-size 2 > "arch8-$s.json"; done
PYTHONPATH="$root/tests/scripts" python3 - <<'PY'
import json
one, tp = json.load(open("arch-one.json")), json.load(open("arch-tp.json"))
four = json.load(open("arch4-tp.json"))
eight = {s: json.load(open(f"arch8-{s}.json")) for s in ("tp+zero1", "tp+zero2")}
share = tp["params_per_rank"]
# GPT-2 124M: every matrix but the position table and the norms is split in two.
assert 0.5 * one["params"] < share < 0.52 * one["params"] and tp["params"] == one["params"], (share, one["params"], tp["params"])
m = tp["memory_bytes"]
assert m["params"] == m["grads"] == 4 * share and m["optimizer"] == 8 * share, m
assert tp["rows_per_rank"] == 8 and four["rows_per_rank"] == 4 and four["params_per_rank"] == share
assert four["memory_bytes"]["activations"] < 0.6 * m["activations"], (four, m)
# The heads', the feed-forward's and the logits' activations are split; the stream's are whole.
assert m["activations"] < 0.8 * one["memory_bytes"]["activations"], (m, one["memory_bytes"])
# 8 ranks as 4 groups of 2: each share's optimizer state in quarters, and with tp+zero2 its
# gradients too (less the two buckets' slots and the embedding's share, kept whole: ZeRO-2 above).
z1, z2 = eight["tp+zero1"]["memory_bytes"], eight["tp+zero2"]["memory_bytes"]
assert z1["optimizer"] == 8 * ((share + 3) // 4) and z1["grads"] == 4 * share, z1
assert z2["optimizer"] == z1["optimizer"] and 0 < z2["grads"] < z1["grads"], (z1, z2)
print("arch show, GPT-2 per rank: tensor parallel over 2 holds %.1f of %.1f M parameters, %.0f of %.0f MiB of activations; "
      "8 ranks as 4 x 2 with tp+zero2: %.0f MiB of optimizer state, %.0f of %.0f MiB of gradients"
      % (share / 1e6, one["params"] / 1e6, m["activations"] / 2**20, one["memory_bytes"]["activations"] / 2**20,
         z2["optimizer"] / 2**20, z2["grads"] / 2**20, z1["grads"] / 2**20))
PY
expect_refusal arch-vocab "rule tp_divides_vocab" "$llmtk" arch show gpt2 --ranks 2 --strategy tp
echo "tensor parallel: arch show ok"
