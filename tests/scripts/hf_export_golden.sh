#!/usr/bin/env bash
# `llmtk export --hf` checkpoints compute, under Transformers' model code, the loss `llmtk eval`
# computes: tests/golden/check_hf_export.py re-implements GPT2LMHeadModel and LlamaForCausalLM in
# PyTorch (Debian's python3-torch) and compares, for GPT-2, Llama (SwiGLU), Llama with GeGLU
# (hidden_act = gelu_pytorch_tanh) and Mixtral (moe-tiny, 4 experts, top-2), a LoRA run merged on export, and LoRA runs exported as PEFT
# adapters (applied to the base's export as PEFT applies them) and read back; and BERT
# (BertForMaskedLM, bert-tiny), by its log-probabilities at [MASK] and read back; and T5
# (T5ForConditionalGeneration, t5-tiny), by its decoder's log-probabilities and read back. Skips (exit 77)
# where torch is missing.
set -euo pipefail
llmtk=$(realpath "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! /usr/bin/python3 -c "import torch" 2> /dev/null; then
  echo "SKIPPED: Debian's python3-torch is not installed (./test.sh installs it through tools/install-deps.sh --tests)"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
bible -l 1000 Genesis1:1-Genesis50:26 > text.txt
"$llmtk" data prepare "$root/recipes/data/kjv.toml" --input text.txt --out data --vocab-size 300 > /dev/null
for arch in gpt2-tiny llama-tiny llama-geglu-tiny moe-tiny; do
  heads=(--set model.n_kv_heads=2)
  [[ $arch == gpt2-tiny ]] && heads=(--set model.n_kv_heads=4 --set model.bias=true)
  [[ $arch == moe-tiny ]] && heads+=(--set model.moe_experts=4 --set model.moe_top_k=2)
  "$llmtk" train "$root/recipes/quickstart.toml" --set model.arch="$arch" --set data.dir="$work/data" \
    --set model.vocab=300 --set model.d_model=32 --set model.n_layers=2 --set model.n_heads=4 "${heads[@]}" \
    --set model.d_ff=48 --set model.max_seq=32 --set train.batch=4 --set train.seq=32 --set train.steps=20 \
    --set schedule.warmup=2 --set eval.every=0 --set eval.batches=1 --set log.sample_prompt= --set train.threads=1 \
    --run-dir "run-$arch" > "train-$arch.txt" || { cat "train-$arch.txt"; exit 1; }
  "$llmtk" export "run-$arch" --hf "hf-$arch" > /dev/null
  echo "== $arch: $(grep -o '"hidden_act": "[a-z_]*"\|"activation_function": "[a-z_]*"' "hf-$arch/config.json")"
  /usr/bin/python3 "$root/tests/golden/check_hf_export.py" "hf-$arch" data/val_000.bin --run "run-$arch" \
    --llmtk "$llmtk" --batch 2 --seq 32 --batches 2 --tol 1e-5
done
# A LoRA run on the Llama base, merged on export (W + s·B·A), computes what base + adapters did.
cat > lora.toml <<'TOML'
[finetune]
from = "run-llama-tiny"
[lora]
rank = 4
alpha = 8
targets = ["attn.*", "mlp.*"]
[data]
dir = "data"
[train]
batch = 4
seq = 32
steps = 20
threads = 1
[optim]
lr = 3e-2
[schedule]
warmup = 2
min_lr = 1e-3
[eval]
batches = 1
TOML
"$llmtk" train lora.toml --run-dir run-lora > train-lora.txt || { cat train-lora.txt; exit 1; }
"$llmtk" export run-lora --hf hf-lora --merge > /dev/null
echo "== LoRA merged into llama-tiny"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-lora data/val_000.bin --run run-lora \
  --llmtk "$llmtk" --batch 2 --seq 32 --batches 2 --tol 1e-5
# The same adapters in PEFT's layout on the base's Transformers export: Llama (unfused maps) and
# GPT-2 (wq and wv fused into c_attn, the embedding trained in full as modules_to_save).
"$llmtk" export run-lora --peft peft-llama --base hf-llama-tiny > /dev/null
echo "== LoRA as PEFT adapters on llama-tiny"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-llama-tiny data/val_000.bin --run run-lora --peft peft-llama \
  --llmtk "$llmtk" --batch 2 --seq 32 --batches 2 --tol 1e-5
sed -e 's/run-llama-tiny/run-gpt2-tiny/' -e 's/targets = .*/targets = ["attn.wq", "attn.wv", "attn.wo", "mlp.w_fc"]\nmodules_to_save = ["embed.tokens"]/' \
  lora.toml > lora-gpt2.toml
"$llmtk" train lora-gpt2.toml --run-dir run-lora-gpt2 > train-lora-gpt2.txt || { cat train-lora-gpt2.txt; exit 1; }
"$llmtk" export run-lora-gpt2 --peft peft-gpt2 --base hf-gpt2-tiny > /dev/null
echo "== LoRA as PEFT adapters on gpt2-tiny (fused c_attn, modules_to_save)"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-gpt2-tiny data/val_000.bin --run run-lora-gpt2 --peft peft-gpt2 \
  --llmtk "$llmtk" --batch 2 --seq 32 --batches 2 --tol 1e-5
# Read back: a run that starts from the PEFT directory (and does not move: lr = 0) computes the same loss.
for fam in llama gpt2; do
  printf '[finetune]\nfrom = "peft-%s"\n[data]\ndir = "data"\n[train]\nbatch = 4\nseq = 32\nsteps = 1\nthreads = 1\n[optim]\nlr = 0\n[eval]\nbatches = 1\n' \
    "$fam" > "back-$fam.toml"
  "$llmtk" train "back-$fam.toml" --run-dir "back-$fam" > "train-back-$fam.txt" || { cat "train-back-$fam.txt"; exit 1; }
  run=run-lora; [[ $fam == gpt2 ]] && run=run-lora-gpt2
  want=$("$llmtk" eval "$run" --data data/val_000.bin --batch 2 --seq 32 --batches 2 | grep '^loss')
  got=$("$llmtk" eval "back-$fam" --data data/val_000.bin --batch 2 --seq 32 --batches 2 | grep '^loss')
  echo "== PEFT adapters read back ($fam): $want (exported run), $got (run started from the adapters)"
  [[ "$want" == "$got" ]] || { echo "MISMATCH"; exit 1; }
done
# BERT (BertForMaskedLM): an encoder has no next-token loss, so the reference compares the
# log-probabilities at each [MASK] (every token of the vocabulary) with `generate --json`'s.
sed -e 's|^dir = .*|dir = "data-mlm"|' -e 's|^vocab_size = .*|vocab_size = 300\nspecial = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]|' \
  -e "s|^paths = .*|paths = [\"$work/text.txt\"]|" "$root/recipes/data/kjv.toml" > mlm-data.toml
"$llmtk" data prepare mlm-data.toml > /dev/null
"$llmtk" train "$root/recipes/bert-mlm.toml" --set data.dir="$work/data-mlm" --set model.vocab=304 --set model.d_model=32 \
  --set model.n_layers=2 --set model.n_heads=4 --set model.d_ff=48 --set model.max_seq=32 --set train.batch=4 \
  --set train.seq=32 --set train.steps=20 --set schedule.warmup=2 --set eval.every=0 --set eval.batches=1 \
  --set "log.sample_prompt=" --set train.threads=1 --run-dir run-bert > train-bert.txt || { cat train-bert.txt; exit 1; }
"$llmtk" export run-bert --hf hf-bert > /dev/null
echo "== bert-tiny: $(grep -o '"hidden_act": "[a-z_]*"' hf-bert/config.json)"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-bert data-mlm/val_000.bin --run run-bert --llmtk "$llmtk" \
  --fill-mask "And God [MASK] the light" --fill-mask "[MASK] the beginning [MASK] created the heaven" \
  --fill-mask "and the [MASK] was upon the face of the [MASK]." --tol 1e-5
# Read back: a run that starts from the export (and does not move: lr = 0) computes the same masked loss.
printf '[finetune]\nfrom = "hf-bert"\n[data]\ndir = "data-mlm"\n[train]\nbatch = 4\nseq = 32\nsteps = 1\nthreads = 1\n[optim]\nlr = 0\n[eval]\nbatches = 1\n[log]\nsample_prompt = ""\n' > back-bert.toml
"$llmtk" train back-bert.toml --run-dir back-bert > train-back-bert.txt || { cat train-back-bert.txt; exit 1; }
want=$("$llmtk" eval run-bert --data data-mlm/val_000.bin --batch 2 --seq 32 --batches 2 | grep '^masked-token loss')
got=$("$llmtk" eval back-bert --data data-mlm/val_000.bin --batch 2 --seq 32 --batches 2 | grep '^masked-token loss')
echo "== BERT read back: $want (exported run), $got (run started from the export)"
[[ "$want" == "$got" ]] || { echo "MISMATCH"; exit 1; }
# A classifier fine-tuned from it, exported as BertForSequenceClassification, gives the label
# probabilities `generate --json` prints; and a run started from that export evaluates the same.
python3 - "$work/cls.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i, line in enumerate(open("text.txt")):
        if line.startswith("  ") and len(line.split()) > 3:
            f.write(json.dumps({"text": " ".join(line.split()[1:]), "label": ["a", "b", "c"][i % 3]}) + "\n")
PY
printf '[finetune]\nfrom = "run-bert"\n[classify]\ntrain = "cls.jsonl"\ntest = "cls.jsonl"\nlabels = ["a", "b", "c"]\n[data]\ndir = "data-mlm"\n[train]\nbatch = 4\nseq = 32\nsteps = 30\nthreads = 1\n[optim]\nlr = 3e-3\n[schedule]\nwarmup = 1\n[eval]\nbatches = 2\n' > cls.toml
"$llmtk" train cls.toml --run-dir run-cls > train-cls.txt || { cat train-cls.txt; exit 1; }
"$llmtk" export run-cls --hf hf-cls > /dev/null
echo "== bert-tiny+classify: $(python3 -c 'import json; c = json.load(open("hf-cls/config.json")); print(c["architectures"], c["id2label"])')"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-cls data-mlm/val_000.bin --run run-cls --llmtk "$llmtk" \
  --classify "And God said, Let there be light" --classify "In the beginning God created the heaven and the earth." --tol 1e-5
sed -e 's/from = "run-bert"/from = "hf-cls"/' -e 's/steps = 30/steps = 1/' -e '/^\[optim\]/,/^lr/d' -e 's/warmup = 1/warmup = 0/' cls.toml > back-cls.toml
printf '[optim]\nlr = 0\n' >> back-cls.toml
"$llmtk" train back-cls.toml --run-dir back-cls > train-back-cls.txt || { cat train-back-cls.txt; exit 1; }
want=$("$llmtk" eval run-cls --task cls.jsonl --batch 4 | grep '^loss')
got=$("$llmtk" eval back-cls --task cls.jsonl --batch 4 | grep '^loss')
echo "== classifier read back: $want (exported run), $got (run started from the export)"
[[ "$want" == "$got" ]] || { echo "MISMATCH"; exit 1; }
# T5 (T5ForConditionalGeneration, t5-tiny): the decoder's log-probabilities for what it writes for
# a prompt's sentinels, against a PyTorch T5 (relative position buckets, unscaled scores, the tied
# head's rescaling); and a run started from the export evaluates the same span loss.
printf '[input]\npaths = ["text.txt"]\n[split]\nval_fraction = 0.1\n[tokenizer]\nvocab_size = 300\nspecial = ["[PAD]"]\nsentinels = 20\n[output]\ndir = "data-t5"\n' > data-t5.toml
"$llmtk" data prepare data-t5.toml > /dev/null
printf '[model]\narch = "t5-tiny"\nd_model = 32\nn_layers = 2\nn_heads = 4\nd_ff = 48\nvocab = 321\nmax_seq = 64\n[data]\ndir = "data-t5"\n[train]\nbatch = 4\nseq = 48\nsteps = 30\nthreads = 1\n[schedule]\nwarmup = 2\n[eval]\nbatches = 1\n[log]\nsample_prompt = ""\n' > t5.toml
"$llmtk" train t5.toml --run-dir run-t5 > train-t5.txt || { cat train-t5.txt; exit 1; }
"$llmtk" export run-t5 --hf hf-t5 > /dev/null
echo "== t5-tiny: $(python3 -c 'import json; c = json.load(open("hf-t5/config.json")); print(c["architectures"], c["relative_attention_num_buckets"], c["decoder_start_token_id"])')"
/usr/bin/python3 "$root/tests/golden/check_hf_export.py" hf-t5 data-t5/val_000.bin --run run-t5 --llmtk "$llmtk" \
  --spans "And God <extra_id_0> the light, that it was <extra_id_1>." --spans "the <extra_id_0> of the waters" --tol 1e-5
printf '[finetune]\nfrom = "hf-t5"\n[data]\ndir = "data-t5"\n[train]\nbatch = 4\nseq = 48\nsteps = 1\nthreads = 1\n[optim]\nlr = 0\n[eval]\nbatches = 1\n[log]\nsample_prompt = ""\n' > back-t5.toml
"$llmtk" train back-t5.toml --run-dir back-t5 > train-back-t5.txt || { cat train-back-t5.txt; exit 1; }
want=$("$llmtk" eval run-t5 --data data-t5/val_000.bin --batch 2 --seq 48 --batches 2 | grep '^span loss')
got=$("$llmtk" eval back-t5 --data data-t5/val_000.bin --batch 2 --seq 48 --batches 2 | grep '^span loss')
echo "== T5 read back: $want (exported run), $got (run started from the export)"
[[ "$want" == "$got" ]] || { echo "MISMATCH"; exit 1; }
echo "exports compute the same loss under Transformers' formulas: ok"
