#!/usr/bin/env bash
# The quickstart model measured as papers measure (docs/evaluation.md), beside the same model at
# its random initialisation: accuracy on the kjv-next-verse multiple-choice task (its held-out
# split, with 95% intervals) and perplexity of two texts with a sliding window — the Book of Ruth
# (the quickstart's domain; most chapters were in its training data) and the GNU GPL v3 (modern
# legal English it never read). Writes benchmarks/results/evaluation.md.
# Needs ./setup.sh first (build/bin/llmtk, data/corpus/kjv.txt, runs/quickstart).
#   recipes/evaluate.sh        (about 8 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
llmtk=build/bin/llmtk
[[ -x $llmtk && -f data/corpus/kjv.txt && -d runs/quickstart/checkpoints ]] ||
  { echo "run ./setup.sh first: this needs build/bin/llmtk, data/corpus/kjv.txt and runs/quickstart" >&2; exit 2; }
mkdir -p benchmarks/results
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The quickstart's recipe at learning rate 0 for one step: its initial weights, saved as a run.
$llmtk train recipes/quickstart.toml --set train.steps=1 --set optim.lr=0 --set schedule.min_lr=0 \
  --set schedule.warmup=0 --run-dir "$work/init" > "$work/init.txt" || { cat "$work/init.txt"; exit 1; }
$llmtk data synth kjv-next-verse --split test --out "$work/next-verse.jsonl" > /dev/null
bible -l 1000 Ruth1:1-Ruth4:22 > "$work/ruth.txt"
cp /usr/share/common-licenses/GPL-3 "$work/gpl-3.txt"
for run in runs/quickstart "$work/init"; do
  name=$([[ $run == runs/quickstart ]] && echo quickstart || echo init)
  $llmtk eval "$run" --task "$work/next-verse.jsonl" --json > "$work/$name-task.json"
  for text in ruth gpl-3; do $llmtk eval "$run" --text "$work/$text.txt" --json > "$work/$name-$text.json"; done
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
python3 - "$work" "$cpu" > benchmarks/results/evaluation.md <<'PY'
import json, sys
work, cpu = sys.argv[1], sys.argv[2]
get = lambda n: json.load(open(f"{work}/{n}.json"))
print("# Evaluation: the quickstart model against its random initialisation\n")
print("Made by `recipes/evaluate.sh` (after `./setup.sh`); docs/evaluation.md explains each figure.\n")
t = get("quickstart-task")
print(f"**kjv-next-verse** (`llmtk data synth kjv-next-verse --split test`: {t['items']} items, the verse that follows a")
print("verse among four verses of its book of about its length; `llmtk eval RUN --task FILE`):\n")
print("| model | accuracy (lowest mean loss per token) | 95% interval | accuracy (lowest total loss) | 95% interval | chance |")
print("|---|---|---|---|---|---|")
for n, label in (("quickstart", "quickstart (1000 steps)"), ("init", "random initialisation")):
    j = get(f"{n}-task")
    print(f"| {label} | {j['accuracy']:.3f} | [{j['accuracy_ci95'][0]:.3f}, {j['accuracy_ci95'][1]:.3f}] | {j['accuracy_total']:.3f} | "
          f"[{j['accuracy_total_ci95'][0]:.3f}, {j['accuracy_total_ci95'][1]:.3f}] | {j['chance']:.2f} |")
r = get("quickstart-ruth")
print(f"\n**Perplexity** (`llmtk eval RUN --text FILE`: windows of {r['window']} tokens moved by {r['stride']}, every token")
print("scored once with at least half a window of context):\n")
print("| model | Ruth (KJV, the training domain) | bits/byte | GNU GPL v3 (never read) | bits/byte |")
print("|---|---|---|---|---|")
for n, label in (("quickstart", "quickstart (1000 steps)"), ("init", "random initialisation")):
    a, b = get(f"{n}-ruth"), get(f"{n}-gpl-3")
    print(f"| {label} | {a['perplexity']:.1f} | {a['bits_per_byte']:.3f} | {b['perplexity']:.1f} | {b['bits_per_byte']:.3f} |")
print(f"\nRuth: {r['tokens']:,} tokens; GPL v3: {get('quickstart-gpl-3')['tokens']:,} tokens. A random initialisation's")
print("perplexity is about the vocabulary's size (4096): every token about equally likely.")
print(f"Computed on {cpu} (2 threads); the figures do not depend on the machine beyond float rounding.")
PY
cat benchmarks/results/evaluation.md
