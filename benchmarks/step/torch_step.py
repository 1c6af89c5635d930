"""The peer for `llmtk bench step`: the same model, sizes and training step (forward, backward,
AdamW) in PyTorch on the CPU, timed the same way (median of N steps after a warm-up). Prints one
JSON line. Run with Debian's python3-torch: /usr/bin/python3 benchmarks/step/torch_step.py ..."""
import argparse, json, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--arch", required=True)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=64)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
p.add_argument("--threads", type=int, default=0)
p.add_argument("--ddp", action="store_true",
               help="under mpirun: DistributedDataParallel over gloo, each rank --batch / ranks rows (the peer of "
                    "benchmarks/distributed/run.sh)")
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
rank, world = 0, 1
if a.ddp:  # the launcher's rank and size (Open MPI's mpirun), and a rendezvous on this machine
    import os
    import torch.distributed as dist
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "0")))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("gloo", rank=rank, world_size=world)

# Sizes of the llmtk presets (framework/models/*.hpp).
PRESETS = {
    "gpt2": dict(kind="gpt2", C=768, L=12, H=12, KV=12, F=3072, V=50257, P=1024),
    "gpt2-tiny": dict(kind="gpt2", C=256, L=4, H=4, KV=4, F=1024, V=4096, P=256),
    "llama-tiny": dict(kind="llama", C=256, L=4, H=8, KV=4, F=688, V=4096, P=256),
}
cfg = PRESETS[a.arch]
C, L, H, KV, FF, V, P = (cfg[k] for k in ("C", "L", "H", "KV", "F", "V", "P"))
D = C // H


class RMSNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def rope(x, base=10000.0):  # x: [B, h, T, D], half-split pairs
    T = x.shape[2]
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Block(nn.Module):
    def __init__(self, llama):
        super().__init__()
        self.llama = llama
        norm = (lambda: RMSNorm(C)) if llama else (lambda: nn.LayerNorm(C))
        self.n1, self.n2 = norm(), norm()
        bias = not llama
        self.q = nn.Linear(C, H * D, bias=bias)
        self.k = nn.Linear(C, KV * D, bias=bias)
        self.v = nn.Linear(C, KV * D, bias=bias)
        self.o = nn.Linear(H * D, C, bias=bias)
        if llama:
            self.gate, self.up, self.down = nn.Linear(C, FF, bias=False), nn.Linear(C, FF, bias=False), nn.Linear(FF, C, bias=False)
        else:
            self.fc, self.proj = nn.Linear(C, FF), nn.Linear(FF, C)

    def forward(self, x):
        B, T, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(B, T, H, D).transpose(1, 2)
        k = self.k(h).view(B, T, KV, D).transpose(1, 2)
        v = self.v(h).view(B, T, KV, D).transpose(1, 2)
        if self.llama:
            q, k = rope(q), rope(k)
        if KV != H:
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        # torch 1.13 (Debian's) has no F.scaled_dot_product_attention: the textbook form.
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        y = torch.softmax(s, -1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(B, T, H * D))
        h = self.n2(x)
        if self.llama:
            return x + self.down(F.silu(self.gate(h)) * self.up(h))
        return x + self.proj(F.gelu(self.fc(h), approximate="tanh"))


class LM(nn.Module):
    def __init__(self, llama):
        super().__init__()
        self.tok = nn.Embedding(V, C)
        self.pos = None if llama else nn.Embedding(P, C)
        self.blocks = nn.ModuleList(Block(llama) for _ in range(L))
        self.norm = RMSNorm(C) if llama else nn.LayerNorm(C)

    def forward(self, ids, targets):
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(ids.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.norm(x) @ self.tok.weight.t()  # tied head
        return F.cross_entropy(logits.view(-1, V), targets.view(-1))


torch.manual_seed(0)
model = LM(cfg["kind"] == "llama")
if a.ddp:
    model = nn.parallel.DistributedDataParallel(model)  # buckets of 25 MB, overlapped with the backward
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(0, V, (a.batch // world, a.seq))
tg = torch.roll(ids, -1, 1)
times = []
for s in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        loss = model(ids, tg)
    loss.backward()
    opt.step()
    dt = (time.perf_counter() - t0) * 1000
    if s >= a.warmup:
        times.append(dt)
times.sort()
ms = times[len(times) // 2]
if rank != 0:
    raise SystemExit(0)
print(json.dumps({"tool": f"PyTorch {torch.__version__} (CPU, {torch.get_num_threads()} threads" + (f", DDP gloo, {world} ranks)" if a.ddp else ")"),
                  "arch": a.arch, "precision": a.precision, "batch": a.batch, "seq": a.seq, "ranks": world,
                  "params": sum(p.numel() for p in model.parameters()), "ms_per_step": ms,
                  "tokens_per_s": a.batch * a.seq / (ms / 1000)}))
