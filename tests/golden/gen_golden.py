#!/usr/bin/python3
"""Generate golden forward/backward data for llmtk's tiny GPT-2 and Llama models.

Independent plain-PyTorch implementation of the formulas in docs/engine.md and
docs/moe.md (imports no project code). Weights are drawn in float32 and the
computation is done in float64. Writes tests/golden/gpt2_tiny.json,
llama_tiny.json, moe_tiny.json and hybrid_tiny.json.

Run with Debian's PyTorch:  /usr/bin/python3 tests/golden/gen_golden.py
Add --check to also run a float64 finite-difference check of a few gradients.

Random draw order (per model, after torch.manual_seed(seed)): every parameter in
the order it appears in the "params" object (the order of param_specs below),
then ids = randint(0, V, (B, T)), then targets = randint(0, V, (B, T)); finally
targets[0, 3] = targets[1, 7] = -100.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

B, T = 2, 8
IGNORE = -100

CONFIGS = {
    "gpt2": dict(vocab=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128,
                 max_seq=16, bias=True, norm_eps=1e-5, rope_base=10000.0),
    "llama": dict(vocab=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
                  max_seq=16, bias=False, norm_eps=1e-5, rope_base=10000.0),
}
# The MoE model: Llama's with MoE<SwiGLU, TopKRouter> for the feed-forward (docs/moe.md), its
# load-balancing and z-losses in the loss that is differentiated ("loss" stores the cross-entropy).
CONFIGS["moe"] = dict(CONFIGS["llama"], d_ff=24, moe_experts=4, moe_top_k=2, moe_aux_coef=0.05, moe_z_coef=0.01)
# The hybrid: minGRU layers (docs/engine.md, layers/recurrence.hpp) and attention, in the pattern
# recurrent, recurrent, attention; Llama's blocks otherwise.
CONFIGS["hybrid"] = dict(CONFIGS["llama"], n_layers=3, pattern=["mingru", "mingru", "attention"])
SEEDS = {"gpt2": 1234, "llama": 5678, "moe": 91011, "hybrid": 121314}
OUTFILES = {"gpt2": "gpt2_tiny.json", "llama": "llama_tiny.json", "moe": "moe_tiny.json", "hybrid": "hybrid_tiny.json"}


def is_recurrent(cfg, i):
    return "pattern" in cfg and cfg["pattern"][i % len(cfg["pattern"])] == "mingru"


def param_specs(arch, cfg):
    """(name, shape, kind) in declaration order; kind in {matrix, norm, bias}."""
    V, C, H, KV, Fd = cfg["vocab"], cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["d_ff"]
    D = C // H
    bias = cfg["bias"]
    specs = [("embed.tokens", [V, C], "matrix")]
    if arch == "gpt2":
        specs.append(("embed.positions", [cfg["max_seq"], C], "matrix"))
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        specs.append((p + "attn.norm.weight", [C], "norm"))
        if arch == "gpt2" and bias:
            specs.append((p + "attn.norm.bias", [C], "bias"))
        if is_recurrent(cfg, i):
            specs += [(p + "attn.wz", [C, C], "matrix"), (p + "attn.wh", [C, C], "matrix"),
                      (p + "attn.wo", [C, C], "matrix")]
        else:
            for w, b, out in (("wq", "bq", H * D), ("wk", "bk", KV * D), ("wv", "bv", KV * D)):
                specs.append((p + "attn." + w, [out, C], "matrix"))
                if bias:
                    specs.append((p + "attn." + b, [out], "bias"))
            specs.append((p + "attn.wo", [C, H * D], "matrix"))
        if bias:
            specs.append((p + "attn.bo", [C], "bias"))
        specs.append((p + "mlp.norm.weight", [C], "norm"))
        if arch == "gpt2" and bias:
            specs.append((p + "mlp.norm.bias", [C], "bias"))
        if arch == "gpt2":
            specs += [(p + "mlp.w_fc", [Fd, C], "matrix")]
            if bias:
                specs += [(p + "mlp.b_fc", [Fd], "bias")]
            specs += [(p + "mlp.w_proj", [C, Fd], "matrix")]
            if bias:
                specs += [(p + "mlp.b_proj", [C], "bias")]
        elif arch == "moe":
            E = cfg["moe_experts"]
            specs.append((p + "mlp.w_router", [E, C], "matrix"))
            for e in range(E):
                for w, shape in (("w_gate", [Fd, C]), ("w_up", [Fd, C]), ("w_down", [C, Fd])):
                    specs.append((p + f"mlp.experts.{e}." + w, shape, "matrix"))
        else:
            for w, b, shape in (("w_gate", "b_gate", [Fd, C]), ("w_up", "b_up", [Fd, C]),
                                ("w_down", "b_down", [C, Fd])):
                specs.append((p + "mlp." + w, shape, "matrix"))
                if bias:
                    specs.append((p + "mlp." + b, [shape[0]], "bias"))
    specs.append(("final_norm.weight", [C], "norm"))
    if arch == "gpt2" and bias:
        specs.append(("final_norm.bias", [C], "bias"))
    return specs


def make_params(arch, cfg):
    torch.manual_seed(SEEDS[arch])
    params = {}
    for name, shape, kind in param_specs(arch, cfg):
        r = torch.randn(shape, dtype=torch.float32)
        if kind == "matrix":
            v = 0.2 * r
        elif kind == "norm":
            v = 1.0 + 0.1 * r
        else:
            v = 0.1 * r
        # v is float32; float64 conversion is exact.
        params[name] = v.to(torch.float64)
    ids = torch.randint(0, cfg["vocab"], (B, T))
    targets = torch.randint(0, cfg["vocab"], (B, T))
    targets[0, 3] = IGNORE
    targets[1, 7] = IGNORE
    return params, ids, targets


# ---------------------------------------------------------------- model

def linear(x, P, w, b):
    y = x @ P[w].t()
    if b in P:
        y = y + P[b]
    return y


def norm(arch, cfg, x, P, prefix):
    eps = cfg["norm_eps"]
    if arch == "gpt2":
        return F.layer_norm(x, (x.shape[-1],), P[prefix + ".weight"], P.get(prefix + ".bias"), eps)
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * rstd * P[prefix + ".weight"]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope(x, base):
    # x: [B, T, heads, D]; Hugging Face Llama half-split convention.
    Tn, D = x.shape[1], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # [D/2]
    pos = torch.arange(Tn, dtype=torch.float64)
    ang = pos[:, None] * inv_freq[None, :]                                  # [T, D/2]
    emb = torch.cat((ang, ang), dim=-1)                                     # [T, D]
    cos = emb.cos()[None, :, None, :]
    sin = emb.sin()[None, :, None, :]
    return x * cos + rotate_half(x) * sin


def attention(arch, cfg, x, P, p):
    Bn, Tn, C = x.shape
    H, KV = cfg["n_heads"], cfg["n_kv_heads"]
    D = C // H
    q = linear(x, P, p + "wq", p + "bq").view(Bn, Tn, H, D)
    k = linear(x, P, p + "wk", p + "bk").view(Bn, Tn, KV, D)
    v = linear(x, P, p + "wv", p + "bv").view(Bn, Tn, KV, D)
    if arch in ("llama", "moe", "hybrid"):
        q = rope(q, cfg["rope_base"])
        k = rope(k, cfg["rope_base"])
    group = H // KV
    kv_of = torch.arange(H) // group          # query head h reads kv head h // (H/KV)
    k = k[:, :, kv_of, :]                     # [B, T, H, D]
    v = v[:, :, kv_of, :]
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))   # [B, H, T, D]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)   # [B, H, Tq, Tk]
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()  # key j <= query i
    scores = scores.masked_fill(~causal, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    out = (att @ v).transpose(1, 2).reshape(Bn, Tn, H * D)
    return linear(out, P, p + "wo", p + "bo")


def mingru(x, P, p):
    """minGRU (Feng et al. 2024): a = 1 - sigmoid(z), u = sigmoid(z) * h~, h_t = a_t h_{t-1} + u_t,
    step by step from h_{-1} = 0; y = h W_o^T."""
    z = x @ P[p + "wz"].t()
    hh = x @ P[p + "wh"].t()
    s = torch.sigmoid(z)
    a, u = 1 - s, s * hh
    h = torch.zeros_like(x[:, 0])
    steps = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + u[:, t]
        steps.append(h)
    return torch.stack(steps, dim=1) @ P[p + "wo"].t()


def swiglu(x, P, p):
    g = linear(x, P, p + "w_gate", p + "b_gate")
    u = linear(x, P, p + "w_up", p + "b_up")
    return linear(F.silu(g) * u, P, p + "w_down", p + "b_down")


def moe(cfg, x, P, p, stats):
    """Top-k of E experts, probabilities renormalised (Mixtral); each token's experts computed
    on its own row. Adds the layer's load-balancing statistic E·Σ_e f_e·P_e (f_e: pairs routed
    to e / N, a count without gradient) and mean lse² to `stats`."""
    Bn, Tn, C = x.shape
    E, K = cfg["moe_experts"], cfg["moe_top_k"]
    h = x.reshape(-1, C)
    N = h.shape[0]
    logits = h @ P[p + "w_router"].t()
    probs = torch.softmax(logits, dim=-1)
    top, chosen = torch.topk(probs, K, dim=-1)          # descending
    gates = top / top.sum(dim=-1, keepdim=True)
    rows = []
    for n in range(N):
        y = torch.zeros(C, dtype=h.dtype)
        for j in range(K):
            y = y + gates[n, j] * swiglu(h[n], P, p + f"experts.{int(chosen[n, j])}.")
        rows.append(y)
    counts = torch.zeros(E, dtype=h.dtype)
    for e in chosen.reshape(-1).tolist():
        counts[e] += 1
    stats["aux"].append(E * ((counts / N) * probs.mean(dim=0)).sum())
    stats["z"].append(torch.logsumexp(logits, dim=-1).pow(2).mean())
    return torch.stack(rows).reshape(Bn, Tn, C)


def mlp(arch, cfg, x, P, p, stats=None):
    if arch == "moe":
        return moe(cfg, x, P, p, stats)
    if arch == "gpt2":
        h = F.gelu(linear(x, P, p + "w_fc", p + "b_fc"), approximate="tanh")
        return linear(h, P, p + "w_proj", p + "b_proj")
    g = linear(x, P, p + "w_gate", p + "b_gate")
    u = linear(x, P, p + "w_up", p + "b_up")
    return linear(F.silu(g) * u, P, p + "w_down", p + "b_down")


def forward(arch, cfg, P, ids, targets, stats=None):
    """logits and the loss training differentiates: the cross-entropy, plus each MoE layer's
    moe_aux_coef · aux + moe_z_coef · z (the statistics go to `stats` when given)."""
    stats = {"aux": [], "z": []} if stats is None else stats
    x = P["embed.tokens"][ids]                       # [B, T, C]
    if "embed.positions" in P:
        x = x + P["embed.positions"][: ids.shape[1]][None]
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        mixer = mingru if is_recurrent(cfg, i) else (lambda h, P_, q: attention(arch, cfg, h, P_, q))
        x = x + mixer(norm(arch, cfg, x, P, p + "attn.norm"), P, p + "attn.")
        x = x + mlp(arch, cfg, norm(arch, cfg, x, P, p + "mlp.norm"), P, p + "mlp.", stats)
    x = norm(arch, cfg, x, P, "final_norm")
    logits = x @ P["embed.tokens"].t()               # tied head
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)
    for a, z in zip(stats["aux"], stats["z"]):
        loss = loss + cfg["moe_aux_coef"] * a + cfg["moe_z_coef"] * z
    return logits, loss


# ---------------------------------------------------------------- output

def exact(t):
    # float32-valued doubles: repr round-trips, and parsing to float gives the same float32.
    return [float(v) for v in t.reshape(-1).tolist()]


def sig10(t):
    return [float(f"{v:.10g}") for v in t.reshape(-1).tolist()]


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def write_json(path, arch, cfg, P, ids, targets, logits, loss, grads, extra=None):
    lines = ["{"]
    lines.append(f'"arch":{dumps(arch)},')
    lines.append(f'"config":{dumps(cfg)},')
    lines.append(f'"batch":{B},"seq":{T},')
    lines.append(f'"ids":{dumps(ids.reshape(-1).tolist())},')
    lines.append(f'"targets":{dumps(targets.reshape(-1).tolist())},')
    lines.append('"params":{')
    names = list(P)
    for j, n in enumerate(names):
        sep = "," if j + 1 < len(names) else ""
        lines.append(f'{dumps(n)}:{dumps({"shape": list(P[n].shape), "data": exact(P[n])})}{sep}')
    lines.append("},")
    lines.append(f'"logits":{dumps({"shape": list(logits.shape), "data": sig10(logits)})},')
    lines.append(f'"loss":{dumps(float(loss))},')
    for k, v in (extra or {}).items():
        lines.append(f'{dumps(k)}:{dumps(v)},')
    lines.append('"grads":{')
    for j, n in enumerate(names):
        sep = "," if j + 1 < len(names) else ""
        lines.append(f'{dumps(n)}:{dumps({"shape": list(grads[n].shape), "data": sig10(grads[n])})}{sep}')
    lines.append("},")
    lines.append(f'"generator":{dumps("torch " + torch.__version__)}')
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    json.load(open(path))  # sanity: valid JSON


def fd_check(arch, cfg, P, ids, targets, grads, n_checks=6, h=1e-6):
    g = torch.Generator().manual_seed(0)
    names = list(P)
    worst = 0.0
    with torch.no_grad():
        for c in range(n_checks):
            n = names[int(torch.randint(0, len(names), (1,), generator=g))]
            if c < 2:
                n = ["embed.tokens", "blocks.0.attn.wo"][c]
            flat = P[n].view(-1)
            idx = int(torch.randint(0, flat.numel(), (1,), generator=g))
            old = flat[idx].item()
            flat[idx] = old + h
            lp = forward(arch, cfg, P, ids, targets)[1].item()
            flat[idx] = old - h
            lm = forward(arch, cfg, P, ids, targets)[1].item()
            flat[idx] = old
            fd = (lp - lm) / (2 * h)
            an = grads[n].view(-1)[idx].item()
            err = abs(fd - an) / max(1e-8, abs(fd) + abs(an))
            worst = max(worst, err)
            print(f"  fd {n}[{idx}]: analytic {an:.10g}  numeric {fd:.10g}  rel {err:.2e}")
    print(f"  worst relative error {worst:.2e}")


def main():
    check = "--check" in sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    for arch in ("gpt2", "llama", "moe", "hybrid"):
        cfg = CONFIGS[arch]
        P, ids, targets = make_params(arch, cfg)
        leaf = {n: v.clone().requires_grad_(True) for n, v in P.items()}
        stats = {"aux": [], "z": []}
        logits, loss = forward(arch, cfg, leaf, ids, targets, stats)
        loss.backward()
        grads = {n: leaf[n].grad.detach() for n in P}
        path = os.path.join(here, OUTFILES[arch])
        extra = None
        if arch == "moe":  # "loss" is the cross-entropy; the statistics are means over the layers
            aux = float(sum(stats["aux"]) / len(stats["aux"]))
            z = float(sum(stats["z"]) / len(stats["z"]))
            ce = loss.item() - cfg["n_layers"] * (cfg["moe_aux_coef"] * aux + cfg["moe_z_coef"] * z)
            extra = {"moe_aux": aux, "moe_z": z}
            loss = torch.tensor(ce)
        write_json(path, arch, cfg, P, ids, targets, logits.detach(), loss.item(), grads, extra)
        count = sum(v.numel() for v in P.values())
        print(f"{arch}: {len(P)} tensors, {count} params, loss {loss.item():.10g} -> {path}")
        if check:
            fd_check(arch, cfg, {n: v.clone() for n, v in P.items()}, ids, targets, grads)


if __name__ == "__main__":
    main()
