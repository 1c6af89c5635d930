#!/usr/bin/env python3
"""Rewrites a .cu file of the CUDA backend as C++ for the emulated build (tests/cuda_emu):
includes device.hpp first and turns each launch `kernel<<<grid, block, shared, stream>>>(args);`
into `cuda_emu::launch_kernel<B>(grid, block, shared, stream, [&] { kernel(args); });`, where B
says whether the kernel may wait at a barrier (__syncthreads or a warp shuffle, in its body or in
a __device__ function of the same file that it calls): threads of kernels that never wait run as
plain calls, the others as fibers.
Usage: to_cpp.py IN.cu OUT.cpp"""
import re
import sys


def matching_paren(text, open_at):
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise SystemExit(f"{sys.argv[1]}: unbalanced parentheses after a launch")


def bodies(text, qualifier):
    """{name: body text} of the functions declared with `qualifier` (__global__ or __device__)."""
    found = {}
    for m in re.finditer(qualifier + r"[^;{]*?\b([A-Za-z_]\w*)\s*\(", text):
        brace = text.find("{", m.end())
        semicolon = text.find(";", m.end())
        if brace < 0 or (0 <= semicolon < brace and ")" not in text[m.end():semicolon]):
            continue
        depth = 0
        for i in range(brace, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found[m.group(1)] = found.get(m.group(1), "") + text[brace:i + 1]
                break
    return found


def waiting_kernels(text):
    text = re.sub(r"__launch_bounds__\s*\([^)]*\)", "", text)
    waits = re.compile(r"__syncthreads|__shfl")
    device = bodies(text, "__device__")
    waiting_helpers = {n for n, b in device.items() if waits.search(b)}
    for _ in range(3):  # helpers calling helpers
        waiting_helpers |= {n for n, b in device.items() if any(re.search(rf"\b{h}\s*[(<]", b) for h in waiting_helpers)}
    return {n for n, b in bodies(text, "__global__").items()
            if waits.search(b) or any(re.search(rf"\b{h}\s*[(<]", b) for h in waiting_helpers)}


def rewrite(text):
    waiting = waiting_kernels(text)
    out, pos = [], 0
    launch = re.compile(r"([A-Za-z_]\w*(?:<[^<>;]*>)?)\s*<<<")
    while True:
        m = launch.search(text, pos)
        if not m:
            out.append(text[pos:])
            return "".join(out)
        end_cfg = text.index(">>>", m.end())
        config = text[m.end():end_cfg]
        open_at = end_cfg + 3
        while text[open_at].isspace():
            open_at += 1
        if text[open_at] != "(":
            raise SystemExit(f"{sys.argv[1]}: a launch without arguments")
        close_at = matching_paren(text, open_at)
        args = text[open_at + 1:close_at]
        out.append(text[pos:m.start()])
        name = re.match(r"\w+", m.group(1)).group(0)
        may_wait = "true" if name in waiting else "false"
        out.append(f"::cuda_emu::launch_kernel<{may_wait}>({config}, [&] {{ {m.group(1)}({args}); }})")
        pos = close_at + 1


def poison_shared(text):
    """After each `__shared__ T a[..], b[..];`, a call that fills a and b with NaN bytes once per
    block (the first thread to get there), so reading shared memory before writing it shows."""
    def add(m):
        names = [re.match(r"\s*(\w+)", d).group(1) for d in split_top(m.group(2))]
        calls = " ".join(f"::cuda_emu::poison_shared({n}, sizeof({n}));" for n in names)
        return m.group(0) + " " + calls
    return re.sub(r"(__shared__\s+[\w:]+\s+)([^;]*);", add, text)


def split_top(decls):
    """Declarators separated by commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in decls:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    body = poison_shared(rewrite(text))
    if "<<<" in body:
        raise SystemExit(f"{src}: a launch was not rewritten")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(f'#include "device.hpp"  // generated from {src} by tests/cuda_emu/to_cpp.py\n#line 1 "{src}"\n{body}')


main()
