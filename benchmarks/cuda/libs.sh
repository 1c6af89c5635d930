# Sourced by run.sh and profile.sh (bash, from the repository root, with $py set): finds the
# programs in build-gpu/bin and the libraries they need, and sets
#   bin        build-gpu/bin
#   llmtk_env  (env LD_LIBRARY_PATH=... LLMTK_GOLDEN_DIR=...): put before llmtk's programs
#   llama_sets the --set options that make llama-tiny the Llama-style model of GPT-2's size
bin=build-gpu/bin
[[ -x $bin/llmtk ]] || { echo "${0##*/}: $bin/llmtk is missing (build first, or drop --no-build, or carry the output of benchmarks/cuda/bundle.sh)" >&2; exit 1; }
# A bundle built elsewhere (benchmarks/cuda/bundle.sh) brings its libraries in build-gpu/shlib.tar.xz;
# cuDNN and cuBLAS may live only in PyTorch's wheels here.
# (Unpacked afresh: a machine used before may hold an older copy.) PyTorch's CUDA 13 wheels keep cuBLAS and
# cudart in nvidia/cu13/lib and cuDNN in nvidia/cudnn/lib: every nvidia/*/lib goes on the path.
if [[ -f build-gpu/shlib.tar.xz ]]; then
  rm -rf build-gpu/shlib
  tar -C build-gpu -xJf build-gpu/shlib.tar.xz 2> /dev/null ||
    $py -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' build-gpu/shlib.tar.xz build-gpu
fi
# The toolkit's own libraries come before the wheels': where both have a library of the same
# version (soname), llmtk gets the one of the toolkit it was built against (and whose cuDNN
# tests/test_cudnn_plans.cpp checked); the wheels fill in what the toolkit lacks.
libs=$PWD/build-gpu/shlib
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [[ -d $d ]] && libs+=":$d"; done
while IFS= read -r d; do libs+=":$d"; done < <($py -c '
import os, nvidia
for root in nvidia.__path__:
    for sub in sorted(os.listdir(root)):
        if os.path.isdir(os.path.join(root, sub, "lib")): print(os.path.join(root, sub, "lib"))' 2> /dev/null || true)
# Only llmtk's programs get these libraries (PyTorch keeps its own).
llmtk_env=(env "LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "LLMTK_GOLDEN_DIR=$PWD/tests/golden")
missing=$("${llmtk_env[@]}" ldd "$bin/llmtk" "$bin/test_cuda" 2>&1 | grep "not found" || true)
[[ -z $missing ]] || { echo "${0##*/}: libraries not found (LD_LIBRARY_PATH=$libs):" >&2; echo "$missing" >&2; exit 1; }
# A Llama-style model of about GPT-2 124M's size (torch_gpu_step.py's llama-124m).
llama_sets=(--set model.d_model=768 --set model.n_layers=12 --set model.n_heads=12 --set model.n_kv_heads=4
            --set model.d_ff=2048 --set model.vocab=50257 --set model.max_seq=1024)
