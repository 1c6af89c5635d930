#!/usr/bin/env bash
# Copies the shipped experiments' results into docs/experiments.md (its "Results" section) and
# docs/experiments/*.svg: each experiment's description (its file's opening comment), the command
# that reproduces it, its table and its validation curves. Run after the experiments:
#   for e in experiments/*.toml; do build/bin/llmtk experiment "$e"; done   # base.toml is not one
#   experiments/publish.sh
set -euo pipefail
cd "$(dirname "$0")/.."
llmtk=${LLMTK:-build/bin/llmtk}
mkdir -p docs/experiments
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
for f in experiments/*.toml; do
  name=$(basename "$f" .toml)
  [[ $name == base ]] && continue
  out=runs/experiments/$name
  [[ -f $out/results.jsonl ]] || { echo "$name: not run yet (build/bin/llmtk experiment $f)"; continue; }
  "$llmtk" experiment "$f" --report > /dev/null   # the table and charts from the runs as they are
  cp "$out/val_loss.svg" "docs/experiments/$name.svg"
  [[ -f $out/scaling.svg ]] && cp "$out/scaling.svg" "docs/experiments/$name-scaling.svg"
done
python3 - "$cpu" <<'PY'
import glob, os, re, sys
cpu = sys.argv[1]
parts = []
for f in sorted(glob.glob("experiments/*.toml")):
    name = os.path.basename(f)[:-5]
    out = f"runs/experiments/{name}"
    if name == "base" or not os.path.exists(f"{out}/results.md"):
        continue
    about = []
    for line in open(f):
        if not line.startswith("#"):
            break
        about.append(line[1:].strip())
    about = " ".join(about).split(" Run:")[0]
    md = open(f"{out}/results.md").read()
    table = md[md.index("|"):]
    scaling = ""
    if "## Scaling" in table:
        table, scaling = table.split("## Scaling")
        scaling = "Fitted:" + scaling.strip().replace("\n- ", "\n- ").removeprefix("") + "\n\n"
        scaling += f"![{name}: loss against parameters](experiments/{name}-scaling.svg)\n\n"
    parts.append(f"### {name}\n\n{about}\n\n```sh\nbuild/bin/llmtk experiment {f}\n```\n\n{table.strip()}\n\n{scaling}"
                 f"![{name}: validation loss by step](experiments/{name}.svg)\n")
doc = open("docs/experiments.md").read()
head = doc[:doc.index("## Results")]
intro = ("## Results\n\nMeasured on " + cpu + " (2 vCPUs, two runs at a time, one core each; tokens/s and time "
         "are that machine's, the losses are the same on any). Each table: mean ± standard deviation over the "
         "seeds; `~` marks a point whose difference from the best is within the seed-to-seed spread, so "
         "these runs cannot tell it from the best. Reproduce all with the commands shown, then "
         "`experiments/publish.sh`.\n\n")
open("docs/experiments.md", "w").write(head + intro + "\n".join(parts))
PY
echo "docs/experiments.md and docs/experiments/*.svg updated"
