#!/usr/bin/env python3
"""Runs every command of the course (docs/learn/*.md) as a learner would, so the course cannot
drift from the code.

    learn_docs.py ROOT BIN_DIR [PAGE ...]

The pages run in order in one fresh folder (a learner's checkout: the repository's files linked in,
build/bin the built binaries, data/ and runs/ empty), each ```sh block with bash -eo pipefail.
An HTML comment right before a block steers the test; a reader never sees it:

    <!-- test: steps=N -->      every `llmtk train` line runs N steps (the page says the full run's time)
    <!-- test: expect TEXT -->  the block's output must contain TEXT (repeatable)
    <!-- test: fails -->        the block must exit non-zero (a page showing an error message)
    <!-- test: skip REASON -->  not run (it edits the sources); the reason is printed

It also checks that the README links the course and the course's index links every page.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

root, bin_dir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
learn = os.path.join(root, "docs", "learn")
pages = sys.argv[3:] or sorted(p for p in os.listdir(learn) if re.match(r"\d\d-.*\.md$", p))

failures = []

# The README links the course; the course's index links every page.
readme = open(os.path.join(root, "README.md")).read()
if "docs/learn/README.md" not in readme:
    failures.append("README.md does not link docs/learn/README.md")
index = open(os.path.join(learn, "README.md")).read()
for p in sorted(p for p in os.listdir(learn) if re.match(r"\d\d-.*\.md$", p)):
    if f"({p})" not in index:
        failures.append(f"docs/learn/README.md does not link {p}")

# A learner's checkout: the sources linked, build/bin the binaries, data/ and runs/ their own.
work = tempfile.mkdtemp(prefix="llmtk-learn-")
for entry in os.listdir(root):
    if entry not in ("build", "data", "runs", ".git") and not entry.startswith("build-"):
        os.symlink(os.path.join(root, entry), os.path.join(work, entry))
os.makedirs(os.path.join(work, "build"))
os.symlink(bin_dir, os.path.join(work, "build", "bin"))

BLOCK = re.compile(r"((?:<!--\s*test:[^>]*-->\s*\n)*)```sh\n(.*?)```", re.S)
DIRECTIVE = re.compile(r"<!--\s*test:\s*(.*?)\s*-->")


def with_steps(script, steps):
    out = []
    for line in script.splitlines():
        if re.search(r"\bllmtk train\b", line):
            code, _, comment = line.partition("  #")
            line = code.rstrip() + f" --set train.steps={steps}" + (("  #" + comment) if comment else "")
        out.append(line)
    return "\n".join(out) + "\n"


# Page 9 runs mpirun; as root (a container, CI) Open MPI needs to be told, as the page says.
env = dict(os.environ)
if os.geteuid() == 0:
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")

for page in pages:
    text = open(os.path.join(learn, page)).read()
    ran = skipped = 0
    for m in BLOCK.finditer(text):
        directives = DIRECTIVE.findall(m.group(1))
        script = m.group(2)
        line = text[: m.start(2)].count("\n") + 1
        where = f"docs/learn/{page}:{line}"
        skip = [d for d in directives if d.startswith("skip")]
        if skip:
            print(f"== {where}: skipped ({skip[0][4:].strip()})")
            skipped += 1
            continue
        for d in directives:
            if d.startswith("steps="):
                script = with_steps(script, int(d[6:]))
        expects = [d[7:].strip() for d in directives if d.startswith("expect ")]
        should_fail = "fails" in directives
        print(f"== {where}\n{script.rstrip()}", flush=True)
        t0 = time.time()
        r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=work, capture_output=True, text=True, env=env)
        out = r.stdout + r.stderr
        tail = "\n".join(out.rstrip().splitlines()[-12:])
        print(f"-- exit {r.returncode} in {time.time() - t0:.1f} s\n{tail}\n", flush=True)
        ran += 1
        if (r.returncode != 0) != should_fail:
            failures.append(f"{where}: exit {r.returncode}" + (" (the page says it fails)" if should_fail else ""))
        for e in expects:
            if e not in out:
                failures.append(f"{where}: the output does not contain {e!r}")
    print(f"== {page}: {ran} blocks run, {skipped} skipped\n", flush=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    print(f"(the learner's folder is kept: {work})")
    sys.exit(1)
subprocess.run(["rm", "-rf", work])
print(f"the course: {len(pages)} page(s), every command as the pages say")
