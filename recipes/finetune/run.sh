#!/usr/bin/env bash
# Instruction tuning of the quickstart model, measured: full fine-tuning (packed and padded rows),
# LoRA rank 16 and rank 4, prompt tuning and prefix tuning on two verse tasks generated from
# Debian's bible-kjv (docs/sft.md), each 600 steps of 16 x 128 tokens, then `llmtk eval --task` on
# held-out verses before and after. Writes benchmarks/results/finetune.md. Needs ./setup.sh first
# (the base runs/quickstart and data/kjv).
#   recipes/finetune/run.sh        (about 13 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
llmtk=build/bin/llmtk
source recipes/finetune/lib.sh
[[ -x $llmtk && -f runs/quickstart/checkpoints/best/state.json && -f data/kjv/tokenizer.json && -s data/corpus/kjv.txt ]] ||
  { echo "run ./setup.sh first: this needs build/bin/llmtk, the base model runs/quickstart, data/kjv and data/corpus/kjv.txt" >&2; exit 2; }
limit=${LIMIT:-300}  # held-out records evaluated per task, evenly spaced through the test split

# The instruction data: two tasks, train and test splits that never share a verse.
mkdir -p data/sft
for task in kjv-continue kjv-book; do
  [[ -s data/sft/$task.jsonl ]] || $llmtk data synth $task --out data/sft/$task.jsonl
  [[ -s data/sft/$task.test.jsonl ]] || $llmtk data synth $task --split test --out data/sft/$task.test.jsonl
done
[[ data/sft-kjv/report.json -nt recipes/data/sft-kjv.toml ]] || $llmtk data prepare recipes/data/sft-kjv.toml

# eval_task RUN TASK [--template chatml] -> "exact token_accuracy answer_loss"
eval_task() {
  local run=$1 task=$2; shift 2
  $llmtk eval "$run" --task data/sft/$task.test.jsonl --limit "$limit" --show 0 "$@" |
    awk '/^exact_match/ {e=$2} /^token_accuracy/ {a=$2} /^answer_loss/ {l=$2} END {printf "%.3f %.3f %.3f\n", e, a, l}'
}

rows=()
add_row() {  # add_row NAME RUN TRAIN_LOG [eval options]
  local name=$1 run=$2 log=$3; shift 3
  local trainable="–" tps="–" mem="–" secs="–"
  if [[ -n $log ]]; then
    read -r tps mem secs trainable < <(run_stats "$run" "$log")
  fi

  read -r ce ca cl < <(eval_task "$run" kjv-continue "$@")
  read -r be ba bl < <(eval_task "$run" kjv-book "$@")
  rows+=("| $name | $trainable | $ce | $ca | $cl | $be | $ba | $bl | $tps | $mem | $secs |")
  echo "${rows[-1]}"
}

echo "== the base, before fine-tuning (the template's tokens added as fine-tuning adds them)"
add_row "base (runs/quickstart)" runs/quickstart "" --template chatml
run() {  # run NAME RUN_DIR RECIPE [--set ...]
  local name=$1 dir=$2 recipe=$3; shift 3
  echo "== $name: llmtk train $recipe $* --run-dir $dir"
  $llmtk train "$recipe" "$@" --run-dir "$dir" --overwrite > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
  add_row "$name" "$dir" "$dir.log"
}
mkdir -p runs
run "full fine-tuning" runs/sft-full recipes/finetune/full.toml
run "full fine-tuning, padded rows (data.packing = false)" runs/sft-full-padded recipes/finetune/full.toml --set data.packing=false
run "LoRA rank 16, attention + MLP, + token table" runs/sft-lora16 recipes/finetune/lora.toml
run "LoRA rank 4, attention + MLP, + token table" runs/sft-lora4 recipes/finetune/lora.toml --set lora.rank=4 --set lora.alpha=8
run "prompt tuning, 20 vectors (padded rows)" runs/sft-prompt recipes/finetune/prompt.toml
run "prefix tuning, 20 keys and values per layer (padded rows)" runs/sft-prefix recipes/finetune/prefix.toml

examples=$(python3 -c "import json; e = json.load(open('data/sft-kjv/report.json'))['examples']; print(f\"{e['train']:,} training examples, {e['val']:,} validation\")")
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
mkdir -p benchmarks/results
{
  echo "# Instruction tuning the quickstart model on two verse tasks"
  echo
  echo "Base: \`runs/quickstart\` (2.4M-parameter Llama-style model trained on the King James Bible by \`./setup.sh\`)."
  echo "Data: \`llmtk data synth kjv-continue\` and \`kjv-book\` ($examples after deduplication, ChatML, loss on"
  echo "the answers only: \`recipes/data/sft-kjv.toml\`), 600 steps of 16 packed rows of 128 tokens (prompt and prefix"
  echo "tuning: 16 padded rows of 108 tokens after their 20 positions), AdamW with cosine"
  echo "decay (\`recipes/finetune/{full,lora,prompt,prefix}.toml\`). Evaluation: \`llmtk eval RUN --task\` on $limit held-out verses per"
  echo "task (verses never in the fine-tuning data), greedy answers of up to 32 tokens. Exact match: the whole answer;"
  echo "token accuracy: the answer's tokens (and the end-of-turn marker) that are the most likely next token with the"
  echo "reference fed in; loss: mean cross-entropy on those tokens. Tokens/s is the median logged rate, memory the"
  echo "process's peak resident set. $cpu, $(nproc) threads."
  echo
  echo "| method | trainable parameters | continue: exact | continue: token acc. | continue: loss | book: exact | book: token acc. | book: loss | tokens/s | peak memory MiB | time s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "What to read in it: before fine-tuning the model has never seen the template and answers nothing; after"
  echo "600 steps it names the book of one unseen verse in four and, on the continuation task, gets nearly half the"
  echo "answer tokens right but few whole answers: its recall of the Bible is that of a 2M-parameter model. LoRA with"
  echo "the token table trainable (the template's two new tokens need rows that learn: \`lora.modules_to_save\`)"
  echo "matches full fine-tuning here at 40% of the trainable parameters; most of them are the token table."
  echo "Packing matters: with one example per padded row the same 600 steps show the model 9,600 examples"
  echo "instead of about 17,700 (1.84 per packed row), and it learns less (book exact match 0.183 against 0.237)."
  echo "Prompt and prefix tuning train 3,840 and 10,240 parameters with the whole model frozen, the template's"
  echo "new tokens included (their rows stay at the mean of the base's). Neither gives a whole answer at this size;"
  echo "prefix tuning, which reaches every layer, takes the book task's token accuracy from 0.03 to 0.30 and is the"
  echo "fastest per token (no gradient for any weight matrix), while prompt tuning, which reaches only the input,"
  echo "barely moves: Lester et al. (2021) found prompt tuning catching up with fine-tuning only near 10B parameters."
  echo
  echo "Command: \`recipes/finetune/run.sh\`"
} > benchmarks/results/finetune.md
cat benchmarks/results/finetune.md
