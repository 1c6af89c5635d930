#!/usr/bin/env bash
# Builds the GPU benchmark's programs HERE, for a GPU machine that cannot build them (the GPU
# machines' image has nvcc and PyTorch but not this project's Debian -dev packages, and nothing
# can be fetched there). Writes, in the git-ignored build-gpu/ (about 20 MB to carry):
#   build-gpu/bin/llmtk, build-gpu/bin/test_cuda   stripped, CUDA code for the given architecture
#   build-gpu/shlib.tar.xz                         the shared libraries they need that a bare
#                                                  Ubuntu/Debian image lacks (oneDNN, fmt, ...)
# benchmarks/cuda/run.sh --no-build then finds both. CUDA's own libraries (cudart, cuBLASLt,
# cuDNN) are not copied: they come from the GPU machine (its toolkit, or PyTorch's wheels).
#   benchmarks/cuda/bundle.sh [ARCH]    ARCH: CUDA architecture, default 90 (H100, H200)
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${1:-90}
command -v nvcc > /dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] ||
  { echo "bundle.sh: no CUDA toolkit here (nvcc); the bundle needs it to compile the CUDA backend" >&2; exit 1; }
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMTK_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
      -DLLMTK_BENCHMARKS=OFF -DLLMTK_NATIVE=OFF > /dev/null
# LLMTK_NATIVE=OFF: the GPU machine's CPU may lack this one's instructions.
cmake --build build-gpu -j2 --target llmtk test_cuda
rm -rf build-gpu/shlib && mkdir -p build-gpu/shlib
strip build-gpu/bin/llmtk build-gpu/bin/test_cuda
# Every library the two programs load, except the C/C++ runtime every image has and CUDA's own.
ldd build-gpu/bin/llmtk build-gpu/bin/test_cuda | awk '/=> \//{print $1, $3}' | sort -u |
  while read -r name path; do
    case $name in
      libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | libstdc++.so* | libgcc_s.so* | ld-linux*) ;;
      libcuda.so* | libcublas* | libcudnn* | libnccl*) ;;  # the driver, and the large CUDA libraries PyTorch's wheels bring
      *) cp -L "$path" "build-gpu/shlib/$name" ;;
    esac
  done
tar -C build-gpu -cJf build-gpu/shlib.tar.xz shlib
du -sh build-gpu/bin/llmtk build-gpu/bin/test_cuda build-gpu/shlib.tar.xz
echo "On the GPU machine: carry build-gpu/bin/llmtk, build-gpu/bin/test_cuda and build-gpu/shlib.tar.xz, then run benchmarks/cuda/run.sh --no-build (results and the log land in \$OUT)"
