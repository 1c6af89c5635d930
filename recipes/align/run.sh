#!/usr/bin/env bash
# Alignment of the instruction-tuned quickstart model, measured (docs/alignment.md): DPO, IPO and
# SimPO on preference pairs generated from Debian's bible-kjv, GRPO with an exact-match reward
# on the verse-book task, a reward model on the same pairs and PPO with its rewards; each evaluated before and after on held-out verses: how often the model
# prefers the chosen reply (`llmtk eval --pairs`) and how often it answers exactly (`eval --task`).
# Writes benchmarks/results/align.md. Needs ./setup.sh first; trains the SFT base
# (recipes/finetune/full.toml) if runs/sft-full is missing.
#   recipes/align/run.sh        (about 36 minutes on 2 cores; the SFT base, when missing, adds about 5)
set -euo pipefail
cd "$(dirname "$0")/../.."
llmtk=build/bin/llmtk
source recipes/finetune/lib.sh
[[ -x $llmtk && -f runs/quickstart/checkpoints/best/state.json && -f data/kjv/tokenizer.json && -s data/corpus/kjv.txt ]] ||
  { echo "run ./setup.sh first: this needs build/bin/llmtk, the base model runs/quickstart, data/kjv and data/corpus/kjv.txt" >&2; exit 2; }
pairs_limit=${PAIRS_LIMIT:-1000}  # held-out pairs evaluated per task
task_limit=${LIMIT:-1000}         # held-out records evaluated per task (binomial noise ±0.014 at 0.25)

# The instruction data and the SFT base (as recipes/finetune/run.sh makes them).
mkdir -p data/sft data/pref runs
for task in kjv-continue kjv-book; do
  [[ -s data/sft/$task.jsonl ]] || $llmtk data synth $task --out data/sft/$task.jsonl
  [[ -s data/sft/$task.test.jsonl ]] || $llmtk data synth $task --split test --out data/sft/$task.test.jsonl
done
[[ data/sft-kjv/report.json -nt recipes/data/sft-kjv.toml ]] || $llmtk data prepare recipes/data/sft-kjv.toml
if [[ ! -f runs/sft-full/checkpoints/best/state.json ]]; then
  echo "== the SFT base: llmtk train recipes/finetune/full.toml --run-dir runs/sft-full"
  $llmtk train recipes/finetune/full.toml --run-dir runs/sft-full --overwrite > runs/sft-full.log 2>&1 || { cat runs/sft-full.log; exit 1; }
fi

# Preference pairs: the same prompts, the right answer chosen and a neighbour's rejected; the same
# verses held out as in the instruction tasks. Training uses both tasks together.
for task in kjv-continue-pref kjv-book-pref; do
  [[ -s data/pref/$task.jsonl ]] || $llmtk data synth $task --out data/pref/$task.jsonl
  [[ -s data/pref/$task.test.jsonl ]] || $llmtk data synth $task --split test --out data/pref/$task.test.jsonl
done
cat data/pref/kjv-continue-pref.jsonl data/pref/kjv-book-pref.jsonl > data/pref/kjv.jsonl
cat data/pref/kjv-continue-pref.test.jsonl data/pref/kjv-book-pref.test.jsonl > data/pref/kjv.test.jsonl

pref_acc() {  # pref_acc RUN TASK -> preference accuracy on held-out pairs
  $llmtk eval "$1" --pairs data/pref/$2.test.jsonl --limit "$pairs_limit" | awk '/^preference_accuracy/ {printf "%.3f", $2}'
}
exact() {  # exact RUN TASK -> "exact_match token_accuracy"; every answer into RUN.TASK.jsonl
  $llmtk eval "$1" --task data/sft/$2.test.jsonl --limit "$task_limit" --show 0 --out "$1.$2.jsonl" |
    awk '/^exact_match/ {e=$2} /^token_accuracy/ {a=$2} END {printf "%.3f %.3f\n", e, a}'
}
rows=()
add_row() {  # add_row NAME RUN TRAIN_LOG
  local name=$1 run=$2 log=$3 tps="–" secs="–" mem="–" trainable val="–"
  if [[ -n $log ]]; then
    read -r tps mem secs trainable < <(run_stats "$run" "$log")
    # The last evaluation's measure: reward accuracy (preference runs), exact match (RL).
    val=$(python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$run/metrics.jsonl') if l.strip()]
ev = [r for r in rows if 'val_reward_accuracy' in r or 'val_exact_match' in r]
print('%.3f' % ev[-1].get('val_reward_accuracy', ev[-1].get('val_exact_match'))) if ev else print('–')")
  fi
  read -r ce ca < <(exact "$run" kjv-continue)
  read -r be ba < <(exact "$run" kjv-book)
  rows+=("| $name | $(pref_acc "$run" kjv-continue-pref) | $(pref_acc "$run" kjv-book-pref) | $ce | $ca | $be | $ba | $val | $tps | $secs |")
  echo "${rows[-1]}"
}
run() {  # run NAME RUN_DIR RECIPE [--set ...]
  local name=$1 dir=$2 recipe=$3; shift 3
  echo "== $name: llmtk train $recipe $* --run-dir $dir"
  $llmtk train "$recipe" "$@" --run-dir "$dir" --overwrite > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
  add_row "$name" "$dir" "$dir.log"
}

echo "== the SFT model, before alignment"
add_row "SFT model (runs/sft-full)" runs/sft-full ""
run "DPO, beta 0.5" runs/align-dpo recipes/align/dpo.toml
run "IPO, beta 0.5" runs/align-ipo recipes/align/dpo.toml --set preference.loss=ipo
run "SimPO, beta 2, gamma 0.5" runs/align-simpo recipes/align/dpo.toml --set preference.loss=simpo --set preference.beta=2 \
  --set preference.simpo_gamma=0.5
run "GRPO, exact-match reward on kjv-book" runs/align-grpo recipes/align/grpo.toml

# The reward model: scored by itself on the held-out pairs (llmtk reward); PPO learns from it.
echo "== reward model: llmtk train recipes/align/reward.toml --run-dir runs/align-reward"
$llmtk train recipes/align/reward.toml --run-dir runs/align-reward --overwrite > runs/align-reward.log 2>&1 ||
  { cat runs/align-reward.log; exit 1; }
rm_acc() {  # rm_acc TASK -> the reward model's accuracy on held-out pairs
  $llmtk reward runs/align-reward --data data/pref/$1.test.jsonl --limit "$pairs_limit" | awk '/^reward_accuracy/ {printf "%.3f", $2}'
}
read -r tps mem secs trainable < <(run_stats runs/align-reward runs/align-reward.log)
rm_row="| reward model (Bradley–Terry, recipes/align/reward.toml) | $(rm_acc kjv-continue-pref) | $(rm_acc kjv-book-pref) | $tps | $secs |"
echo "$rm_row"
run "PPO, reward model, KL 0.3, kjv-book" runs/align-ppo recipes/align/ppo.toml
run "PPO, reward model, KL 0.05, kjv-book" runs/align-ppo-kl005 recipes/align/ppo.toml --set rl.beta=0.05
$llmtk report runs/align-dpo runs/align-ipo runs/align-simpo --out benchmarks/results/align-preference.html > /dev/null
$llmtk report runs/align-grpo --out benchmarks/results/align-grpo.html > /dev/null
$llmtk report runs/align-ppo runs/align-ppo-kl005 --out benchmarks/results/align-ppo.html > /dev/null

# Paired: the same held-out book questions answered by the SFT model and by each RL policy. An
# exact sign test on the questions where they differ says whether a change is more than chance.
paired() {  # paired RUN -> "| RUN | fixed | broken | p |"
  python3 - "runs/sft-full.kjv-book.jsonl" "$1.kjv-book.jsonl" "$2" <<'PY'
import json, math, sys
a = [json.loads(l)["exact"] for l in open(sys.argv[1])]
b = [json.loads(l)["exact"] for l in open(sys.argv[2])]
fixed = sum(1 for x, y in zip(a, b) if not x and y)
broken = sum(1 for x, y in zip(a, b) if x and not y)
n, k = fixed + broken, min(fixed, broken)
p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
print(f"| {sys.argv[3]} | {fixed} | {broken} | {p:.3f} |")
PY
}
paired_rows=("$(paired runs/align-grpo "GRPO, exact-match reward")" "$(paired runs/align-ppo "PPO, reward model, KL 0.3")"
             "$(paired runs/align-ppo-kl005 "PPO, reward model, KL 0.05")")
printf '%s\n' "${paired_rows[@]}"

cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
mkdir -p benchmarks/results
{
  echo "# Aligning the instruction-tuned quickstart model"
  echo
  echo "Start: \`runs/sft-full\` (the quickstart model after 600 steps of instruction tuning on two verse tasks,"
  echo "\`recipes/finetune/full.toml\`). Preference data: \`llmtk data synth kjv-continue-pref\` and \`kjv-book-pref\`"
  echo "(the right ending or book chosen, a neighbouring verse's ending or a neighbouring book rejected; 39,701 training"
  echo "pairs). DPO, IPO and SimPO: 300 steps of 16 pairs (\`recipes/align/dpo.toml\`, the loss changed with \`--set\`)."
  echo "GRPO: 100 steps of 16 kjv-book prompts with 16 answers each sampled at temperature 0.7, reward 1 for the exact book"
  echo "(\`recipes/align/grpo.toml\`). Reward model: the SFT model with a score head, 1,500 steps of 16 pairs of the same"
  echo "preference data (\`recipes/align/reward.toml\`). PPO: 150 steps of 16 kjv-book prompts with 4 sampled answers"
  echo "each, scored by the reward model, a per-token KL penalty of 0.3 (and 0.05), a critic starting as the reward model"
  echo "(\`recipes/align/ppo.toml\`). Evaluation on verses never seen in any training: preference accuracy is the"
  echo "share of $pairs_limit held-out pairs per task where the model gives the chosen reply the higher log-probability"
  echo "(\`llmtk eval --pairs\`); exact match and token accuracy as in benchmarks/results/finetune.md, on $task_limit"
  echo "held-out records per task (\`llmtk eval --task\`, greedy). \"Last eval\" is the run's own held-out measure at its"
  echo "end: the implicit reward accuracy on validation pairs (preference runs), exact match on 400 (GRPO) or about 200 (PPO)"
  echo "held-out prompts."
  echo "$cpu, $(nproc) threads."
  echo
  echo "| model | continue: pref. acc. | book: pref. acc. | continue: exact | continue: token acc. | book: exact | book: token acc. | last eval | tokens/s | time s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "The RL policies against the SFT model, question by question, on the $task_limit held-out kjv-book records:"
  echo "answers made right (wrong before) and made wrong (right before), and the two-sided sign test's p on those."
  echo
  echo "| policy | fixed | broken | p |"
  echo "|---|---:|---:|---:|"
  printf '%s\n' "${paired_rows[@]}"
  echo
  echo "The reward model, on the same held-out pairs: the share where it scores the chosen reply higher (\`llmtk reward\`)."
  echo
  echo "| model | continue: accuracy | book: accuracy | tokens/s | time s |"
  echo "|---|---:|---:|---:|---:|"
  echo "$rm_row"
  echo
  echo "Curves: benchmarks/results/align-preference.html (loss, reward accuracy and margin, chosen and rejected"
  echo "log-probabilities of the three preference runs), benchmarks/results/align-grpo.html (reward, KL, entropy,"
  echo "held-out exact match) and benchmarks/results/align-ppo.html (reward, KL penalty, value loss, explained variance)."
  echo
  echo "Command: \`recipes/align/run.sh\`"
} > benchmarks/results/align.md
cat benchmarks/results/align.md
