"""The peer for `llmtk bench step --device cuda`: the same model, sizes and training step
(forward, backward, AdamW) in PyTorch on the GPU, timed the same way (median of N steps after a
warm-up, the GPU synchronised before reading the clock). bf16 autocast, attention through
F.scaled_dot_product_attention; --compile wraps the model in torch.compile. Prints one JSON line.
Model definitions follow benchmarks/step/torch_step.py (the CPU peer), with fused attention."""
import argparse, json, time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--arch", required=True, choices=["gpt2", "llama-124m"])
p.add_argument("--batch", type=int, default=16)
p.add_argument("--seq", type=int, default=1024)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
p.add_argument("--compile", action="store_true")
p.add_argument("--profile", action="store_true", help="also print the GPU time per kernel of one step (stderr)")
a = p.parse_args()

# gpt2: llmtk's preset. llama-124m: llmtk's llama-tiny with the sizes run.sh sets
# (--set model.d_model=768 ... ), a Llama-style model of about GPT-2's size.
PRESETS = {
    "gpt2": dict(kind="gpt2", C=768, L=12, H=12, KV=12, F=3072, V=50257, P=1024),
    "llama-124m": dict(kind="llama", C=768, L=12, H=12, KV=4, F=2048, V=50257, P=1024),
}
cfg = PRESETS[a.arch]
C, L, H, KV, FF, V, P = (cfg[k] for k in ("C", "L", "H", "KV", "F", "V", "P"))
D = C // H
dev = "cuda"


class RMSNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def rope_tables(T, base=10000.0):
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float32, device=dev) / D)
    ang = torch.arange(T, dtype=torch.float32, device=dev)[:, None] * inv[None, :]
    return torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)


def rope(x, cos, sin):  # x: [B, h, T, D], half-split pairs
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

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(B, T, H, D).transpose(1, 2)
        k = self.k(h).view(B, T, KV, D).transpose(1, 2)
        v = self.v(h).view(B, T, KV, D).transpose(1, 2)
        if self.llama:
            cos, sin = cos.to(q.dtype), sin.to(q.dtype)  # keep q, k in the autocast dtype
            q, k = rope(q, cos, sin), rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, H * D))
        h = self.n2(x)
        if self.llama:
            return x + self.down(F.silu(self.gate(h)) * self.up(h))
        return x + self.proj(F.gelu(self.fc(h), approximate="tanh"))


class LM(nn.Module):
    def __init__(self, llama):
        super().__init__()
        self.llama = llama
        self.tok = nn.Embedding(V, C)
        self.pos = None if llama else nn.Embedding(P, C)
        self.blocks = nn.ModuleList(Block(llama) for _ in range(L))
        self.norm = RMSNorm(C) if llama else nn.LayerNorm(C)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.tok(ids)
        if self.pos is not None:
            x = x + self.pos(torch.arange(T, device=dev))
        cos, sin = rope_tables(T) if self.llama else (None, None)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.norm(x) @ self.tok.weight.t()  # tied head
        return F.cross_entropy(logits.view(-1, V).float(), targets.view(-1))


torch.manual_seed(0)
model = LM(cfg["kind"] == "llama").to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
step_model = torch.compile(model) if a.compile else model
ids = torch.randint(0, V, (a.batch, a.seq), device=dev)
tg = torch.roll(ids, -1, 1)


def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        loss = step_model(ids, tg)
    loss.backward()
    opt.step()
    torch.cuda.synchronize()


times = []
for s in range(a.warmup + a.steps):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    dt = (time.perf_counter() - t0) * 1000
    if s >= a.warmup:
        times.append(dt)
if a.profile:  # one more step under the profiler: where PyTorch's GPU time goes, for comparison
    import sys
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90), file=sys.stderr)
times.sort()
ms = times[len(times) // 2]
mode = "torch.compile" if a.compile else "eager"
print(json.dumps({"tool": f"PyTorch {torch.__version__} ({mode}, {torch.cuda.get_device_name()})", "mode": mode,
                  "arch": a.arch, "precision": a.precision, "batch": a.batch, "seq": a.seq,
                  "params": sum(p.numel() for p in model.parameters()), "ms_per_step": ms,
                  "tokens_per_s": a.batch * a.seq / (ms / 1000),
                  "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}))
