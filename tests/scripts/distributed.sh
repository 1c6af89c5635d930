#!/usr/bin/env bash
# Data parallel with MPI (docs/distributed.md), two ranks on this machine:
# - equivalence: 2 processes with half the batch each give the losses and weights of 1 process
#   with the whole batch, within fp32 reduction-order tolerance, over 20 steps;
# - bit-reproducible: the same 2-process run twice gives identical weights and losses;
# - resume across world sizes: 2 -> 2 is exact; 2 -> 1 and 1 -> 2 continue with the same losses;
# - ZeRO-1 (the optimizer state sharded) and ZeRO-2 (the gradients too, the layers' gradients in a
#   ring of two buckets): the same bits as data parallel, their checkpoints resumed with data
#   parallel's and in one process; ZeRO-2 with gradient accumulation and training internals;
# - arch show --ranks: the memory per process of each strategy;
# - preference pairs (DPO with a reference model), a reward model, a classifier, GRPO and PPO (its
#   critic averaged too): 2 ranks, each with its pairs, examples or prompts of every batch, against
#   1 process;
# - refusals before any work: a batch the ranks cannot share;
# - faults: a rank killed mid-step, and a rank that hangs (the other times out, naming the call),
#   each end the whole job within seconds; the writer killed while it checkpoints leaves no
#   checkpoint half-written, and the run resumes to the same end.
set -euo pipefail
llmtk=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
source "$root/tests/scripts/mpi_setup.sh" 1
run one "$llmtk" train tiny.toml --run-dir one
run two "${mpi[@]}" "$llmtk" train tiny.toml --run-dir two
grep -q "distributed: 2 processes (mpi), data parallel: 4 rows of each batch of 8 per process" two.txt || { cat two.txt; exit 1; }
run two-again "${mpi[@]}" "$llmtk" train tiny.toml --run-dir two-again
# Summing each bucket after the backward instead of during it: the same sums, the same bits.
run two-after "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.overlap=false --run-dir two-after
grep -q "each as soon as its layers' backward is done" two.txt && grep -q "after the backward" two-after.txt ||
  { cat two.txt two-after.txt; exit 1; }
# ZeRO-1: each rank updates its shard of the weights with its shard of the moments; the same
# arithmetic per element as data parallel, so the same bits; its checkpoints hold the whole moments.
run zero1 "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.strategy=zero1 --run-dir zero1
grep -q "data parallel with the optimizer state sharded (ZeRO-1" zero1.txt || { cat zero1.txt; exit 1; }
for f in model optimizer.m optimizer.v; do
  cmp two/checkpoints/step_00000020/$f.safetensors zero1/checkpoints/step_00000020/$f.safetensors
done
# ZeRO-2: each bucket reduce-scattered, each rank keeping its shard's summed gradients; the same
# sums, the same gradient norm (every strategy measures it shard by shard), the same bits. With 4
# layers in buckets of one layer each, the ring's two slots are reused as the backward goes down.
run zero2 "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.strategy=zero2 --run-dir zero2
grep -q "data parallel with the optimizer state and the gradients sharded (ZeRO-2" zero2.txt || { cat zero2.txt; exit 1; }
ring=(--set model.n_layers=4 --set distributed.bucket_mb=0.001)
run ddp-ring "${mpi[@]}" "$llmtk" train tiny.toml "${ring[@]}" --run-dir ddp-ring
run zero2-ring "${mpi[@]}" "$llmtk" train tiny.toml "${ring[@]}" --set distributed.strategy=zero2 --run-dir zero2-ring
run zero2-ring-after "${mpi[@]}" "$llmtk" train tiny.toml "${ring[@]}" --set distributed.strategy=zero2 --set distributed.overlap=false --run-dir zero2-ring-after
grep -q "gradients averaged in 6 buckets" zero2-ring.txt && grep -q "before the backward goes on" zero2-ring-after.txt ||
  { cat zero2-ring.txt zero2-ring-after.txt; exit 1; }
for f in model optimizer.m optimizer.v; do
  cmp two/checkpoints/step_00000020/$f.safetensors zero2/checkpoints/step_00000020/$f.safetensors
  cmp ddp-ring/checkpoints/step_00000020/$f.safetensors zero2-ring/checkpoints/step_00000020/$f.safetensors
  cmp ddp-ring/checkpoints/step_00000020/$f.safetensors zero2-ring-after/checkpoints/step_00000020/$f.safetensors
done
# ZeRO-2 sums every micro-batch into the shard: the same gradient as one process, in another order.
run zero2-accum "${mpi[@]}" "$llmtk" train tiny.toml --set train.grad_accum=2 --set train.batch=4 --set distributed.strategy=zero2 \
  "${ring[@]:2}" --run-dir zero2-accum
# Training internals under ZeRO-2: each parameter's gradient norm summed from the ranks' shards.
internals=(--set log.internals=true --set log.internals_every=5)
run two-internals "${mpi[@]}" "$llmtk" train tiny.toml "${internals[@]}" --run-dir two-internals
run zero2-internals "${mpi[@]}" "$llmtk" train tiny.toml "${internals[@]}" --set distributed.strategy=zero2 --run-dir zero2-internals
# Resume data parallel's checkpoint with ZeRO-2, and ZeRO-2's in one process.
run ddp-zero2 "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.strategy=zero2 --resume two/checkpoints/step_00000010 --run-dir ddp-zero2
run zero2-one "$llmtk" train tiny.toml --resume zero2/checkpoints/step_00000010 --run-dir zero2-one
# Resume a data-parallel checkpoint with ZeRO-1 and a ZeRO-1 checkpoint in one process.
run ddp-zero1 "${mpi[@]}" "$llmtk" train tiny.toml --set distributed.strategy=zero1 --resume two/checkpoints/step_00000010 --run-dir ddp-zero1
run zero1-one "$llmtk" train tiny.toml --resume zero1/checkpoints/step_00000010 --run-dir zero1-one
# Gradient accumulation: the ranks sum once per step, after the last micro-batch.
run one-accum "$llmtk" train tiny.toml --set train.grad_accum=2 --set train.batch=4 --run-dir one-accum
run two-accum "${mpi[@]}" "$llmtk" train tiny.toml --set train.grad_accum=2 --set train.batch=4 --set distributed.bucket_mb=0.01 --run-dir two-accum
grep -q "gradients averaged in [2-9] buckets" two-accum.txt || { cat two-accum.txt; exit 1; }
# Encoders and encoder-decoders: each rank masks or corrupts its rows as one process masks those
# rows of the global batch, so 2 ranks give one process's losses.
printf '[input]\npaths = ["kjv.txt"]\n[split]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 300\nspecial = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]\n[output]\ndir = "mlm"\n' > mlm.toml
printf '[input]\npaths = ["kjv.txt"]\n[split]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 300\nspecial = ["[PAD]"]\nsentinels = 20\n[output]\ndir = "span"\n' > span.toml
"$llmtk" data prepare mlm.toml > /dev/null
"$llmtk" data prepare span.toml > /dev/null
small=(--set train.steps=10 --set eval.every=5 --set checkpoint.every=0 --set log.sample_prompt= --set log.every=1 --set train.batch=8)
bert=(train "$root/recipes/bert-mlm.toml" --set data.dir=mlm --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.d_ff=64 --set model.vocab=305 --set model.max_seq=32 --set train.seq=32 --set schedule.warmup=2 --set train.threads=1 "${small[@]}")
t5=(train "$root/recipes/t5-span.toml" --set data.dir=span --set model.arch=transformer-tiny --set model.d_model=32 --set model.n_layers=2
    --set model.n_heads=2 --set model.d_ff=64 --set model.vocab=321 --set model.max_seq=64 --set train.seq=48 --set schedule.warmup=2
    --set train.threads=1 "${small[@]}")
run bert-one "$llmtk" "${bert[@]}" --run-dir bert-one
run bert-two "${mpi[@]}" "$llmtk" "${bert[@]}" --run-dir bert-two
run t5-one "$llmtk" "${t5[@]}" --run-dir t5-one
run t5-two "${mpi[@]}" "$llmtk" "${t5[@]}" --set distributed.strategy=zero2 --run-dir t5-two
# Preference pairs (DPO with its reference model), a reward model and a classifier: each rank
# reads its pairs or examples of every batch, as one process reads the whole batch.
printf '[input]\npaths = ["kjv.txt"]\n[split]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 300\nspecial = ["<|im_start|>", "<|im_end|>"]\n[output]\ndir = "chat"\n' > chat.toml
"$llmtk" data prepare chat.toml > /dev/null
printf '{"llmtk_chat_template": "chatml"}\n' > chat/tokenizer_config.json  # the template's name beside the tokenizer
python3 - <<'PY'
import json
verses = [l.split(" ", 1)[1].split() for l in open("kjv.txt") if " " in l]
verses = [v for v in verses if len(v) >= 10][:120]
def pairs(vs, path):
    with open(path, "w") as f:
        for i, v in enumerate(vs):
            other = vs[(7 * i + 3) % len(vs)]
            f.write(json.dumps({"prompt": " ".join(v[:4]), "chosen": " ".join(v[4:10]), "rejected": " ".join(other[4:10])}) + "\n")
def labelled(vs, path):
    with open(path, "w") as f:
        for i, v in enumerate(vs):
            f.write(json.dumps({"text": " ".join(v[:8]), "label": "long" if len(v) > 20 else "short"}) + "\n")
pairs(verses[:64], "pairs.jsonl"); pairs(verses[64:80], "pairs-val.jsonl")
# RL tasks whose rewards vary from the start: does the reply contain a frequent letter pair?
with open("tasks.jsonl", "w") as f:
    for i, v in enumerate(verses[:32]):
        f.write(json.dumps({"messages": [{"role": "user", "content": " ".join(v[:4])},
                                         {"role": "assistant", "content": ["th", "an", "e", "o"][i % 4]}]}) + "\n")
labelled(verses[:64], "labelled.jsonl"); labelled(verses[64:80], "labelled-val.jsonl")
PY
run base "$llmtk" train tiny.toml --set data.dir=chat --set model.vocab=302 --set model.max_seq=96 --set eval.every=0 --run-dir base
printf '[finetune]\nfrom = "base"\n[data]\ndir = "chat"\n[preference]\ntrain = "pairs.jsonl"\ntest = "pairs-val.jsonl"\n[train]\nbatch = 8\nseq = 96\nsteps = 10\nthreads = 1\n[optim]\nlr = 1e-4\n[schedule]\nwarmup = 2\n[eval]\nevery = 5\nbatches = 2\n[checkpoint]\nevery = 10\n[log]\nevery = 1\nsample_prompt = ""\n' > dpo.toml
sed 's/\[preference\]/[reward]/' dpo.toml > reward.toml
run dpo-one "$llmtk" train dpo.toml --run-dir dpo-one
run dpo-two "${mpi[@]}" "$llmtk" train dpo.toml --run-dir dpo-two
grep -q "data parallel: 8 rows of each batch of 16 per process" dpo-two.txt || { cat dpo-two.txt; exit 1; }
run reward-one "$llmtk" train reward.toml --run-dir reward-one
run reward-two "${mpi[@]}" "$llmtk" train reward.toml --run-dir reward-two
classify=(train "$root/recipes/finetune/bert-classify.toml" --set finetune.from=bert-one --set data.dir=mlm --set classify.train=labelled.jsonl
          --set classify.test=labelled-val.jsonl --set 'classify.labels=["short", "long"]' --set train.batch=8 --set train.seq=16
          --set train.steps=10 --set schedule.warmup=2 --set eval.every=5 --set eval.batches=2 --set checkpoint.every=0 --set log.every=1
          --set train.threads=1 --set log.sample_prompt=)
printf '[finetune]\nfrom = "base"\n[data]\ndir = "chat"\n[rl]\ntask = "tasks.jsonl"\nreward = "contains"\ngroup = 4\nmax_tokens = 4\nbeta = 0.04\n[train]\nbatch = 4\nseq = 64\nsteps = 6\nthreads = 1\n[optim]\nlr = 1e-3\n[schedule]\nwarmup = 2\n[checkpoint]\nevery = 6\n[log]\nevery = 1\nsample_prompt = ""\n' > grpo.toml
run grpo-one "$llmtk" train grpo.toml --run-dir grpo-one
run grpo-two "${mpi[@]}" "$llmtk" train grpo.toml --run-dir grpo-two
# PPO: the critic's gradients averaged over the ranks, the advantages whitened over the whole batch.
# Replies of up to 8 tokens end at different lengths, so the ranks count different numbers of
# positions and the value loss's weighting matters.
ppo=(--set rl.algorithm=ppo --set rl.beta=0.04 --set rl.critic_lr=1e-3 --set rl.max_tokens=8)
run ppo-one "$llmtk" train grpo.toml "${ppo[@]}" --run-dir ppo-one
run ppo-two "${mpi[@]}" "$llmtk" train grpo.toml "${ppo[@]}" --run-dir ppo-two
run classify-one "$llmtk" "${classify[@]}" --run-dir classify-one
run classify-two "${mpi[@]}" "$llmtk" "${classify[@]}" --run-dir classify-two
# Resume: from step 10 of the 2-process run with 2 processes (exact), with 1; and 1 -> 2.
run two-two "${mpi[@]}" "$llmtk" train tiny.toml --resume two/checkpoints/step_00000010 --run-dir two-two
run two-one "$llmtk" train tiny.toml --resume two/checkpoints/step_00000010 --run-dir two-one
run one-two "${mpi[@]}" "$llmtk" train tiny.toml --resume one/checkpoints/step_00000010 --run-dir one-two

PYTHONPATH="$root/tests/scripts" python3 - <<'PY'
import json
from runs import close, grad_norms, losses, max_weight_diff, weights as weights_at

def weights(run):  # the last checkpoint's
    return weights_at(run, 20)

one, two = losses("one"), losses("two")
assert len([k for k in one if isinstance(k, int)]) == 20, sorted(map(str, one))
# Only the order of float sums differs (each rank's 4 rows, then the two halves): a few ulps, which
# Adam's normalised steps let grow slowly (4e-8 of the loss after 20 steps here).
close({k: v for k, v in one.items() if isinstance(k, int) and k <= 3}, {k: v for k, v in two.items() if isinstance(k, int) and k <= 3}, 1e-6, "1 vs 2 processes, steps 1-3")
close(one, two, 1e-6, "1 vs 2 processes, 20 steps and validation")
d = max_weight_diff(weights("one"), weights("two"))
print(f"1 vs 2 processes, weights after 20 steps: largest difference {d:.2e} (tolerance 1e-5)")
assert d <= 1e-5
assert losses("two") == losses("two-again"), "two identical 2-process runs differ"
assert losses("two") == losses("two-after") and weights("two") == weights("two-after"), "overlap changes the result"
assert losses("zero1") == two and losses("ddp-zero1") == two, "ZeRO-1 differs from data parallel"
assert weights("ddp-zero1") == weights("two"), "resuming data parallel with ZeRO-1 changes the weights"
assert losses("zero2") == two and losses("ddp-zero2") == two, "ZeRO-2 differs from data parallel"
assert losses("zero2-ring") == losses("ddp-ring") == losses("zero2-ring-after"), "ZeRO-2's ring differs from data parallel"
assert weights("ddp-zero2") == weights("two"), "resuming data parallel with ZeRO-2 changes the weights"
close(losses("zero2-one"), two, 1e-6, "ZeRO-2 checkpoint resumed in 1 process vs 2 processes straight")
close(losses("one-accum"), losses("zero2-accum"), 1e-6, "1 process vs ZeRO-2 with grad_accum = 2, a bucket per layer")
a, b = grad_norms("two-internals"), grad_norms("zero2-internals")
assert len(a) >= 12, sorted(a)
close(a, b, 1e-5, "each layer's gradient norm in the training internals, ZeRO-2 vs data parallel")
close(losses("zero1-one"), two, 1e-6, "ZeRO-1 checkpoint resumed in 1 process vs 2 processes straight")
close(losses("one-accum"), losses("two-accum"), 1e-6, "1 vs 2 processes with grad_accum = 2 and several buckets")
assert weights("two") == weights("two-again"), "two identical 2-process runs end with different weights"
# A resumed run's metrics hold the history up to step 10 and its own steps after.
assert losses("two-two") == two, "2 -> 2 resume is not exact"
assert weights("two-two") == weights("two"), "2 -> 2 resume ends with other weights"
close(losses("two-one"), two, 1e-6, "2 -> 1 process resume vs 2 processes straight")
close(losses("one-two"), one, 1e-6, "1 -> 2 processes resume vs 1 process straight")
def metrics(run):  # every measurement of every step and evaluation
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        m = json.loads(line)
        for k, v in m.items():
            if k not in ("step", "lr", "tokens_per_s", "mfu", "peak_memory_bytes", "elapsed_s") and isinstance(v, float):
                out[(k, m["step"])] = v
    return out
for a, b, what in (("dpo-one", "dpo-two", "DPO with a reference model"), ("reward-one", "reward-two", "a reward model"),
                   ("classify-one", "classify-two", "a classifier")):
    ma, mb = metrics(a), metrics(b)
    assert len([k for k in ma if k[0] == "loss"]) == 10 and any(k[0] == "val_loss" for k in ma), sorted(map(str, ma))
    # Rewards and margins are β × differences of log-probabilities near -100, whose float
    # rounding (1e-6) is not small against a margin near zero: below 0.01 they are compared to 0.01.
    worst = max(abs(ma[k] - mb[k]) / max(abs(ma[k]), 1e-2) for k in ma)
    assert ma.keys() == mb.keys(), (what, sorted(map(str, ma.keys() ^ mb.keys())))
    print(f"{what}, 1 vs 2 processes: every metric within {worst:.2e} relative (tolerance 1e-4)")
    assert worst <= 1e-4, what
# GRPO: each rank samples its prompts' replies with the randomness of their rows in the whole
# batch, so the rewards are one process's exactly; the loss is a mean over rows. Its kl, entropy
# and clip_fraction are means over the sampled tokens, which the ranks weight by their tokens
# (Objective::metrics_weight): one process's means over the whole batch.
def token_metrics(ma, mb, keys, rel, what):
    ks = [k for k in ma if k[0] in keys]
    assert len(ks) >= 6, (what, sorted(ma))
    worst = max(abs(ma[k] - mb[k]) / max(abs(ma[k]), 1e-2) for k in ks)
    print(f"{what}, 1 vs 2 processes: {', '.join(keys)} within {worst:.1e} relative (tolerance {rel:.0e})")
    assert worst <= rel, [(k, ma[k], mb[k]) for k in ks if abs(ma[k] - mb[k]) / max(abs(ma[k]), 1e-2) > rel]
ma, mb = metrics("grpo-one"), metrics("grpo-two")
token_metrics(ma, mb, ("kl", "entropy", "clip_fraction"), 1e-6, "GRPO's token means")
same = [k for k in ma if k[0] in ("reward", "reward_std", "solved", "response_length")]
assert len(same) == 24 and all(ma[k] == mb[k] for k in same), [(k, ma[k], mb[k]) for k in same if ma[k] != mb[k]]
assert any(ma[k] > 0 for k in same if k[0] == "reward_std"), "no reward varied within a group: GRPO learned nothing"
worst = max(abs(ma[k] - mb[k]) for k in ma if k[0] == "loss")
print(f"GRPO, 1 vs 2 processes: rewards identical, losses within {worst:.1e} (tolerance 1e-8)")
assert worst <= 1e-8
# PPO: the same rewards; the policy's losses and both models' weights as one process's, within
# fp32 reduction order: the critic's step is one process's when its gradients are averaged and each
# rank's value loss is weighted by the positions it counts, and the advantages are whitened over
# the whole batch (planting an unweighted mean of the ranks' critic gradients, or whitening per
# rank, changes the replies sampled a few steps later: the rewards differ).
ma, mb = metrics("ppo-one"), metrics("ppo-two")
# The critic's value_loss and explained_variance from the ranks' summed statistics; the policy's
# token means weighted by tokens.
token_metrics(ma, mb, ("value_loss", "explained_variance", "kl_penalty", "kl", "entropy", "clip_fraction"), 1e-5,
              "PPO's metrics")
same = [k for k in ma if k[0] in ("reward", "reward_std", "solved", "response_length")]
assert len(same) == 24 and all(ma[k] == mb[k] for k in same), [(k, ma[k], mb[k]) for k in same if ma[k] != mb[k]]
worst = max(abs(ma[k] - mb[k]) / max(abs(ma[k]), 1e-2) for k in ma if k[0] == "loss")
dp = max_weight_diff(weights_at("ppo-one", 6), weights_at("ppo-two", 6))
dc = max_weight_diff(weights_at("ppo-one", 6, "critic/model"), weights_at("ppo-two", 6, "critic/model"))
print(f"PPO, 1 vs 2 processes: rewards identical, losses within {worst:.1e} relative (tolerance 1e-5), "
      f"policy weights within {dp:.1e}, critic weights within {dc:.1e}")
assert worst <= 1e-5 and dp < 1e-5 and dc < 1e-5
d = max_weight_diff(weights_at("grpo-one", 6), weights_at("grpo-two", 6))
print(f"GRPO, 1 vs 2 processes: weights after 6 steps within {d:.1e} (tolerance 1e-6)")
assert d <= 1e-6
for a, b in (("bert-one", "bert-two"), ("t5-one", "t5-two")):
    la, lb = losses(a), losses(b)
    assert len([k for k in la if isinstance(k, int)]) == 10 and any(isinstance(k, tuple) for k in la), sorted(map(str, la))
    close(la, lb, 1e-6, f"{a} vs {b} (masked LM; span corruption with ZeRO-2)")
print("equivalence, reproducibility and resume: ok")
PY
cmp two/checkpoints/step_00000020/model.safetensors two-again/checkpoints/step_00000020/model.safetensors
for f in model optimizer.m optimizer.v; do
  cmp two/checkpoints/step_00000020/$f.safetensors two-two/checkpoints/step_00000020/$f.safetensors
done

# Refused before any work, by every rank, with the numbers to change.
expect_refusal odd-batch "train.batch = 8 is the global batch and does not divide among the 3 processes" \
  mpirun -np 3 --oversubscribe "$llmtk" train tiny.toml --run-dir odd-batch-run
echo '{"messages": [{"role": "user", "content": "In the beginning"}, {"role": "assistant", "content": "God"}]}' > tasks.jsonl
# A recipe's error, found before MPI opens: each rank's copy names the rank.
expect_refusal warmup "schedule.warmup (50) must be shorter than the run" "${mpi[@]}" "$llmtk" train tiny.toml --set schedule.warmup=50 --run-dir warmup-run
grep -Eq "^llmtk \(rank [01] of 2\): error: \[tiny.toml\] schedule.warmup" warmup.txt || { echo "== warmup: no rank named"; cat warmup.txt; exit 1; }

# The memory of one process of 2 (and of 8): ZeRO-1 halves the optimizer state, ZeRO-2 shards the
# gradients too, and each process plans activations for its rows.
for s in ddp zero1 zero2; do
  "$llmtk" arch show gpt2 --batch 8 --seq 256 --ranks 2 --strategy $s --json > arch-$s.json
  "$llmtk" arch show gpt2 --batch 8 --seq 256 --ranks 8 --strategy $s --json > arch8-$s.json
done
"$llmtk" arch show gpt2 --batch 8 --seq 256 --json > arch-one.json
python3 - <<'PY'
import json
m = {s: json.load(open(f"arch-{s}.json"))["memory_bytes"] for s in ("one", "ddp", "zero1", "zero2")}
m8 = {s: json.load(open(f"arch8-{s}.json"))["memory_bytes"] for s in ("ddp", "zero1", "zero2")}
params = json.load(open("arch-one.json"))["trainable_params"]
assert m["ddp"]["optimizer"] == 8 * params and m["zero1"]["optimizer"] == 8 * ((params + 1) // 2), m
assert m["zero2"]["optimizer"] == m["zero1"]["optimizer"] and m["zero1"]["grads"] == 4 * params, m
assert 0 < m["zero2"]["grads"] < m["zero1"]["grads"] and m8["zero2"]["grads"] < 0.6 * m8["zero1"]["grads"], (m, m8)
assert m8["zero1"]["optimizer"] == 8 * ((params + 7) // 8), m8
assert abs(m["ddp"]["activations"] - m["one"]["activations"] / 2) < 0.01 * m["one"]["activations"], m
print("arch show --ranks: ZeRO-1 optimizer %.0f of %.0f MiB; ZeRO-2 gradients %.0f (2 ranks), %.0f (8 ranks) of %.0f MiB"
      % (m["zero1"]["optimizer"] / 2**20, m["ddp"]["optimizer"] / 2**20, m["zero2"]["grads"] / 2**20, m8["zero2"]["grads"] / 2**20,
         m["ddp"]["grads"] / 2**20))
PY

# The writer (rank 0) killed at random moments while it checkpoints every step with slow writes:
# the launcher ends the job within seconds, every checkpoint a reader would take is whole (none
# half-written), and the run, resumed with 2 ranks after each kill, ends exactly as the one never killed.
ck=(--set checkpoint.every=1 --set checkpoint.keep=2 --set eval.every=0 --set train.steps=40)
run straight2 "${mpi[@]}" "$llmtk" train tiny.toml "${ck[@]}" --run-dir straight2
whole() {  # whole RUN: every checkpoints/step_* and best is complete
  python3 - "$1" <<'PY'
import json, os, struct, sys
root = os.path.join(sys.argv[1], "checkpoints")
for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    d = os.path.join(root, name)
    if name.endswith(".tmp") or not (name.startswith("step_") or name == "best"): continue
    assert json.load(open(os.path.join(d, "state.json")))["step"] >= 1, d
    for f in [f for f in os.listdir(d) if f.endswith(".safetensors")]:
        with open(os.path.join(d, f), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8)); header = json.loads(fh.read(n))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        assert os.path.getsize(os.path.join(d, f)) == 8 + n + end, (d, f)
PY
}
rank0() {  # the pid of this job's rank 0, from the environment Open MPI gives each rank
  for p in $(pgrep -f "llmtk train tiny.toml.*killed2" || true); do
    tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx OMPI_COMM_WORLD_RANK=0 && { echo "$p"; return; }
  done
}
RANDOM=20261207
kills=0 inside=0
for ((t = 1; t <= 6; ++t)); do
  if compgen -G "killed2/checkpoints/step_[0-9]*[0-9]/state.json" > /dev/null; then args=(--resume killed2); else args=(--run-dir killed2 --overwrite); fi
  "${mpi[@]}" -x LLMTK_FAULTS=slow_write=5 "$llmtk" train tiny.toml "${ck[@]}" "${args[@]}" > "kill2-$t.txt" 2>&1 &
  job=$!
  for _ in $(seq 200); do grep -q "^step" "kill2-$t.txt" && break; sleep 0.05; done
  sleep "$((RANDOM % 2)).$(printf '%03d' $((RANDOM % 1000)))"
  pid=$(rank0)
  [[ -n $pid ]] && kill -9 "$pid" 2> /dev/null && killed_at=$SECONDS
  rc=0
  wait "$job" || rc=$?
  if ((rc == 0)); then break; fi
  [[ -n $pid ]] || { echo "== kill2-$t: the job failed by itself"; cat "kill2-$t.txt"; exit 1; }
  ((++kills))
  if compgen -G "killed2/checkpoints/*.tmp" > /dev/null; then ((++inside)); fi
  (( SECONDS - killed_at < 30 )) || { echo "== kill2-$t: the job outlived its rank 0 by $((SECONDS - killed_at)) s"; exit 1; }
  whole killed2 || { echo "== kill2-$t: a checkpoint a reader would take is not whole"; ls -lR killed2/checkpoints; exit 1; }
done
((kills >= 3)) || { echo "only $kills kills of rank 0 landed"; exit 1; }
run last2 "${mpi[@]}" "$llmtk" train tiny.toml "${ck[@]}" --resume killed2
cmp straight2/checkpoints/step_00000040/model.safetensors killed2/checkpoints/step_00000040/model.safetensors
python3 - <<'PY'
import json
a, b = ({m["step"]: m["loss"] for m in map(json.loads, open(f"{r}/metrics.jsonl")) if "loss" in m} for r in ("straight2", "killed2"))
assert a == b and sorted(a) == list(range(1, 41)), "the run killed and resumed differs from the straight one"
PY
echo "rank 0 killed $kills times ($inside inside a checkpoint write): every checkpoint left was whole, and the resumed run ended as the straight one"

# A rank that dies mid-step: the launcher ends the job and names the rank.
long=(--set train.steps=100000 --set eval.every=0 --set checkpoint.every=0)
start=$SECONDS
if mpirun --oversubscribe -np 1 "$llmtk" train tiny.toml "${long[@]}" --run-dir killed : \
     -np 1 -x LLMTK_FAULTS=kill@5 "$llmtk" train tiny.toml "${long[@]}" --run-dir killed > killed.txt 2>&1; then
  echo "== killed: the job went on"; cat killed.txt; exit 1
fi
grep -Eq "rank 1 .*(signal 9|Killed)" killed.txt || { echo "== killed: no message naming rank 1"; cat killed.txt; exit 1; }
(( SECONDS - start < 60 )) || { echo "== killed: took $((SECONDS - start)) s"; exit 1; }
# A rank that hangs: the other's collective times out, names the call, and the job ends.
start=$SECONDS
if mpirun --oversubscribe -np 1 "$llmtk" train tiny.toml "${long[@]}" --set distributed.timeout_s=5 --run-dir hung : \
     -np 1 -x LLMTK_FAULTS=hang@5 "$llmtk" train tiny.toml "${long[@]}" --set distributed.timeout_s=5 --run-dir hung > hung.txt 2>&1; then
  echo "== hung: the job went on"; cat hung.txt; exit 1
fi
grep -Eq "llmtk \(rank 0 of 2\): error: \[distributed\] rank 0 of 2: all_reduce \(reduce-scatter\) of (gradient bucket [0-9]+ of [0-9]+|the loss's weight \(targets counted\)) did not complete within 5 s: rank 1 has stopped" hung.txt ||
  { echo "== hung: no timeout message"; cat hung.txt; exit 1; }
(( SECONDS - start < 60 )) || { echo "== hung: took $((SECONDS - start)) s"; exit 1; }
echo "faults: a killed rank and a hung rank each ended the job"
