#!/usr/bin/env bash
# Data parallel on the CUDA backend over the NCCL communicator (backends/comm/nccl.cpp), two ranks
# on this machine without a GPU: $1 is llmtk_cuda_emu, the command line built with the CUDA
# backend's kernels emulated on the CPU and NCCL's calls carried by MPI (tests/cuda_emu/nccl.cpp).
# What runs is the communicator's host side as on a GPU machine: the device chosen per local
# rank, the unique id handed around, the non-blocking set-up, the event that orders each bucket's
# sum after the backward's kernels, the polls and the gradient buckets summed in GPU memory.
# - equivalence: 2 ranks with half the batch each give the losses and weights of 1 process with
#   the whole batch (both on the emulated GPU), within fp32 reduction-order tolerance;
# - bit-reproducible run to run, and the same bits with the buckets summed after the backward;
# - a checkpoint of 2 ranks resumes in one process;
# - ZeRO-1 (the optimizer state sharded, the weights gathered over NCCL): data parallel's bits, and
#   its checkpoint resumed in one process;
# - ZeRO-2 (each bucket reduce-scattered where it lies in GPU memory, the ring of two slots in GPU
#   memory): data parallel's bits with one bucket and with a bucket per layer, summed during the
#   backward and after each bucket's layers; with gradient accumulation (the later micro-batches'
#   sums added to the shard) against one process; training internals from the shards; its
#   checkpoint resumed in one process;
# - tensor parallel (each sublayer's sums over NCCL, the parallel cross-entropy's ops on the GPU,
#   the vocabulary-parallel embedding's slots in GPU memory): 2 ranks against one process (2 key/value
#   heads), bit-identical run to run, 2 groups of 2 (4 ranks, 2-D; with ZeRO-2 across the groups,
#   the same bits), its checkpoint resumed in one process;
# - refused before any work: more ranks than GPUs on a machine.
# On a machine with 2 GPUs, `nccl_emulated.sh build/bin/llmtk` runs the same checks on them.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/scripts/mpi_setup.sh" 1
export CUDA_EMU_DEVICES=2  # two emulated GPUs: one per rank
gpu=(--set train.device=cuda --set train.steps=10 --set checkpoint.every=5 --set eval.every=5)
run one "$llmtk" train tiny.toml "${gpu[@]}" --run-dir one
run two "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --run-dir two
grep -q "distributed: 2 processes (nccl), data parallel: 4 rows of each batch of 8 per process" two.txt || { cat two.txt; exit 1; }
run two-again "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --run-dir two-again
run two-after "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --set distributed.overlap=false --run-dir two-after
# ZeRO-1: each rank updates its shard of the weights (in GPU memory), NCCL gathers the shards; the
# same arithmetic per element as data parallel, so the same bits, and its checkpoint holds the
# whole moments (gathered into GPU memory, then written).
run zero1 "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --set distributed.strategy=zero1 --run-dir zero1
grep -q "with the optimizer state sharded (ZeRO-1" zero1.txt || { cat zero1.txt; exit 1; }
for f in optimizer.m optimizer.v; do
  cmp two/checkpoints/step_00000010/$f.safetensors zero1/checkpoints/step_00000010/$f.safetensors
done
run zero1-one "$llmtk" train tiny.toml "${gpu[@]}" --resume zero1/checkpoints/step_00000005 --run-dir zero1-one
for run in two-again two-after zero1; do
  cmp two/checkpoints/step_00000010/model.safetensors $run/checkpoints/step_00000010/model.safetensors
  cmp <(grep -o '"loss":[^,]*' two/metrics.jsonl) <(grep -o '"loss":[^,]*' $run/metrics.jsonl)
done
run two-one "$llmtk" train tiny.toml "${gpu[@]}" --resume two/checkpoints/step_00000005 --run-dir two-one
# ZeRO-2: with 2 ranks a sum of two floats is the same whichever rank adds them, so reduce-scatter
# gives all-reduce's bits, and each rank's shard the same update: data parallel's bits. With 4
# layers in buckets of one layer each the ring's two slots (GPU memory) are reused going down.
run zero2 "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --set distributed.strategy=zero2 --run-dir zero2
grep -q "distributed: 2 processes (nccl), data parallel with the optimizer state and the gradients sharded (ZeRO-2" zero2.txt ||
  { cat zero2.txt; exit 1; }
ring=(--set model.n_layers=4 --set distributed.bucket_mb=0.001)
run ddp-ring "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${ring[@]}" --run-dir ddp-ring
run zero2-ring "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${ring[@]}" --set distributed.strategy=zero2 --run-dir zero2-ring
run zero2-ring-after "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${ring[@]}" --set distributed.strategy=zero2 \
  --set distributed.overlap=false --run-dir zero2-ring-after
grep -q "gradients averaged in 6 buckets" zero2-ring.txt && grep -q "before the backward goes on" zero2-ring-after.txt ||
  { cat zero2-ring.txt zero2-ring-after.txt; exit 1; }
for f in model optimizer.m optimizer.v; do
  cmp two/checkpoints/step_00000010/$f.safetensors zero2/checkpoints/step_00000010/$f.safetensors
  cmp ddp-ring/checkpoints/step_00000010/$f.safetensors zero2-ring/checkpoints/step_00000010/$f.safetensors
  cmp ddp-ring/checkpoints/step_00000010/$f.safetensors zero2-ring-after/checkpoints/step_00000010/$f.safetensors
done
cmp <(grep -o '"loss":[^,]*' two/metrics.jsonl) <(grep -o '"loss":[^,]*' zero2/metrics.jsonl)
cmp <(grep -o '"loss":[^,]*' ddp-ring/metrics.jsonl) <(grep -o '"loss":[^,]*' zero2-ring/metrics.jsonl)
# Gradient accumulation: every micro-batch's buckets summed into the shard (the second's through
# the received shard, added after the backward); against one process with the same micro-batches.
accum=(--set train.grad_accum=2 --set train.batch=4 --set distributed.bucket_mb=0.001)
run one-accum "$llmtk" train tiny.toml "${gpu[@]}" "${accum[@]}" --run-dir one-accum
run zero2-accum "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${accum[@]}" --set distributed.strategy=zero2 \
  --set log.internals=true --set log.internals_every=5 --run-dir zero2-accum
run two-accum "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${accum[@]}" --set log.internals=true --set log.internals_every=5 \
  --run-dir two-accum
run zero2-one "$llmtk" train tiny.toml "${gpu[@]}" --resume zero2/checkpoints/step_00000005 --run-dir zero2-one
# Tensor parallel: each rank holds one of the 2 attention heads and key/value heads, half of the
# feed-forward and of the vocabulary; the sums go over NCCL's tensor-parallel group.
tp=(--set model.n_kv_heads=2)
run tp-one "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" --run-dir tp-one
run tp "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" --set distributed.strategy=tp --run-dir tp
grep -q "distributed: 2 processes (nccl), tensor parallel: each holds 1 of the 2 attention heads" tp.txt || { cat tp.txt; exit 1; }
run tp-again "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" --set distributed.strategy=tp --run-dir tp-again
cmp tp/checkpoints/step_00000010/model.safetensors tp-again/checkpoints/step_00000010/model.safetensors
run tp4 env CUDA_EMU_DEVICES=4 mpirun -np 4 --oversubscribe "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" \
  --set distributed.strategy=tp --set distributed.tp_size=2 --set train.threads=1 --run-dir tp4
grep -q "tensor parallel in 2 groups of 2" tp4.txt || { cat tp4.txt; exit 1; }
# ZeRO-2 across the groups: each share's gradients reduce-scattered in GPU memory between the 2
# ranks holding it, the norm from the shards: the 2-D layout's bits.
run tp4-zero2 env CUDA_EMU_DEVICES=4 mpirun -np 4 --oversubscribe "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" \
  --set distributed.strategy=tp+zero2 --set distributed.tp_size=2 --set distributed.bucket_mb=0.001 --set train.threads=1 --run-dir tp4-zero2
for f in model optimizer.m optimizer.v; do
  cmp tp4/checkpoints/step_00000010/$f.safetensors tp4-zero2/checkpoints/step_00000010/$f.safetensors
done
run tp-resumed "$llmtk" train tiny.toml "${gpu[@]}" "${tp[@]}" --resume tp/checkpoints/step_00000005 --run-dir tp-resumed

PYTHONPATH="$root/tests/scripts" python3 - <<'PY'
from runs import close, grad_norms, losses, max_weight_diff, weights

one, two = losses("one"), losses("two")
assert len([k for k in one if isinstance(k, int)]) == 10, sorted(map(str, one))
close(one, two, 1e-6, "1 process vs 2 ranks over NCCL (emulated GPUs), 10 steps and validation")
d = max_weight_diff(weights("one", 10), weights("two", 10))
print(f"weights after 10 steps: max difference {d:.2e}")
assert d < 1e-5
close(losses("two-one"), two, 1e-6, "2 ranks -> 1 process resume at step 5 vs 2 ranks straight")
close(losses("zero1-one"), two, 1e-6, "ZeRO-1 checkpoint of 2 ranks resumed in 1 process vs 2 ranks straight")
close(losses("zero2-one"), two, 1e-6, "ZeRO-2 checkpoint of 2 ranks resumed in 1 process vs 2 ranks straight")
close(losses("one-accum"), losses("zero2-accum"), 1e-6, "1 process vs ZeRO-2 with grad_accum = 2, a bucket per layer")

close(losses("tp-one"), losses("tp"), 1e-6, "1 process vs tensor parallel over 2 (emulated GPUs, NCCL)")
close(losses("tp-one"), losses("tp4"), 1e-6, "1 process vs 2 tensor-parallel groups of 2 (emulated GPUs, NCCL)")
close(losses("tp-resumed"), losses("tp"), 1e-6, "tensor parallel's checkpoint resumed in 1 process vs tensor parallel straight")
d = max_weight_diff(weights("tp-one", 10), weights("tp", 10))
print(f"tensor parallel, weights after 10 steps: max difference {d:.2e} (tolerance 1e-5)")
assert d < 1e-5
a, b = grad_norms("two-accum"), grad_norms("zero2-accum")
assert len(a) >= 8, sorted(a)
close(a, b, 1e-5, "each layer's gradient norm in the training internals, ZeRO-2 (shards in GPU memory) vs data parallel")
PY

# (With the real llmtk on a machine with 2 GPUs the same checks run; this one needs the emulation.)
if [[ $(basename "$llmtk") == llmtk_cuda_emu ]]; then
  expect_refusal too-many "2 ranks run on this machine and it has 1 GPU; NCCL takes one GPU per rank" \
    env CUDA_EMU_DEVICES=1 "${mpi[@]}" "$llmtk" train tiny.toml "${gpu[@]}" --run-dir too-many-run
fi
echo "nccl_emulated.sh: data parallel, ZeRO-1, ZeRO-2 and tensor parallel over NCCL on emulated GPUs passed"
