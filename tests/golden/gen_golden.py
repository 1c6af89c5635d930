#!/usr/bin/python3
"""Generate golden forward/backward data for llmtk's tiny GPT-2, Llama, MoE and hybrid
decoders, a BERT encoder and a T5 encoder-decoder.

Independent plain-PyTorch implementation of the formulas in docs/engine.md,
docs/moe.md and docs/encoder-decoder.md (imports no project code). Weights are drawn
in float32 and the computation is done in float64. Writes tests/golden/gpt2_tiny.json,
llama_tiny.json, moe_tiny.json, hybrid_tiny.json, bert_tiny.json and t5_tiny.json.

Run with Debian's PyTorch:  /usr/bin/python3 tests/golden/gen_golden.py
Add --check to also run a float64 finite-difference check of a few gradients.

Random draw order (per model, after torch.manual_seed(seed)): every parameter in
the order it appears in the "params" object (the order of param_specs below),
then ids = randint(0, V, (B, T)), then targets = randint(0, V, (B, T)); finally
targets[0, 3] = targets[1, 7] = -100. BERT and T5 draw their own inputs after the
parameters (make_inputs below): masked-token targets, token types and padding lengths
for BERT; a padded source and a decoder row for T5.
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
# BERT (post-norm, learned positions, token types, the MLM head tied to the embedding) and T5
# v1.0 (RMSNorm pre-norm, ReLU, relative position bias, cross-attention, the scaled tied head).
# T5's source (12) is long enough to reach the encoder's logarithmic buckets (|offset| >= 8)
# and its decoder (18) the decoder's (offset <= -16).
CONFIGS["bert"] = dict(vocab=40, d_model=16, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=32,
                       max_seq=16, bias=True, norm_eps=1e-12, rope_base=10000.0, type_vocab=2)
CONFIGS["t5"] = dict(vocab=40, d_model=16, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=24,
                     max_seq=32, bias=False, norm_eps=1e-6, rope_base=10000.0)
SEEDS = {"gpt2": 1234, "llama": 5678, "moe": 91011, "hybrid": 121314, "bert": 151617, "t5": 181920}
OUTFILES = {"gpt2": "gpt2_tiny.json", "llama": "llama_tiny.json", "moe": "moe_tiny.json", "hybrid": "hybrid_tiny.json",
            "bert": "bert_tiny.json", "t5": "t5_tiny.json"}
SHAPES = {"bert": (2, 8), "t5": (2, 18)}  # (B, T) where not the decoders' (B, T)
T5_SOURCE = 12
T5_BUCKETS, T5_MAX_DISTANCE = 32, 128


def is_recurrent(cfg, i):
    return "pattern" in cfg and cfg["pattern"][i % len(cfg["pattern"])] == "mingru"


def param_specs(arch, cfg):
    """(name, shape, kind) in declaration order; kind in {matrix, norm, bias}."""
    if arch == "bert":
        return bert_specs(cfg)
    if arch == "t5":
        return t5_specs(cfg)
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


def bert_specs(cfg):
    V, C, Fd = cfg["vocab"], cfg["d_model"], cfg["d_ff"]
    specs = [("embed.tokens", [V, C], "matrix"), ("embed.positions", [cfg["max_seq"], C], "matrix"),
             ("embed.types", [cfg["type_vocab"], C], "matrix"),
             ("embed_norm.weight", [C], "norm"), ("embed_norm.bias", [C], "bias")]
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        for w in ("q", "k", "v", "o"):
            specs += [(p + "attn.w" + w, [C, C], "matrix"), (p + "attn.b" + w, [C], "bias")]
        specs += [(p + "attn.norm.weight", [C], "norm"), (p + "attn.norm.bias", [C], "bias"),
                  (p + "mlp.w_fc", [Fd, C], "matrix"), (p + "mlp.b_fc", [Fd], "bias"),
                  (p + "mlp.w_proj", [C, Fd], "matrix"), (p + "mlp.b_proj", [C], "bias"),
                  (p + "mlp.norm.weight", [C], "norm"), (p + "mlp.norm.bias", [C], "bias")]
    specs += [("head.transform.weight", [C, C], "matrix"), ("head.transform.bias", [C], "bias"),
              ("head.norm.weight", [C], "norm"), ("head.norm.bias", [C], "bias"), ("head.bias", [V], "bias")]
    return specs


def t5_specs(cfg):
    V, C, H, Fd = cfg["vocab"], cfg["d_model"], cfg["n_heads"], cfg["d_ff"]
    specs = [("embed.tokens", [V, C], "matrix")]
    for side in ("encoder", "decoder"):
        specs.append((side + ".relative_bias", [T5_BUCKETS, H], "bias"))
        for i in range(cfg["n_layers"]):
            p = f"{side}.blocks.{i}."
            for mixer in ("attn", "cross") if side == "decoder" else ("attn",):
                specs.append((p + mixer + ".norm.weight", [C], "norm"))
                specs += [(p + mixer + ".w" + w, [C, C], "matrix") for w in ("q", "k", "v", "o")]
            specs += [(p + "mlp.norm.weight", [C], "norm"), (p + "mlp.w_fc", [Fd, C], "matrix"),
                      (p + "mlp.w_proj", [C, Fd], "matrix")]
        specs.append((side + ".final_norm.weight", [C], "norm"))
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
    if arch in ("bert", "t5"):
        return params, make_inputs(arch, cfg)
    ids = torch.randint(0, cfg["vocab"], (B, T))
    targets = torch.randint(0, cfg["vocab"], (B, T))
    targets[0, 3] = IGNORE
    targets[1, 7] = IGNORE
    return params, {"ids": ids, "targets": targets}


def make_inputs(arch, cfg):
    """BERT: ids, targets only at the masked positions (-100 elsewhere and at padding), token types
    (A then B) and lengths (row 0 padded). T5: a source with row 0 padded, the decoder's ids and
    targets (one ignored)."""
    Bn, Tn = SHAPES[arch]
    V = cfg["vocab"]
    if arch == "bert":
        ids = torch.randint(0, V, (Bn, Tn))
        targets = torch.randint(0, V, (Bn, Tn))
        selected = torch.zeros(Bn, Tn, dtype=torch.bool)
        selected[0, [1, 3, 4]] = True
        selected[1, [0, 2, 5, 7]] = True
        targets[~selected] = IGNORE
        types = (torch.arange(Tn) >= 3).long().expand(Bn, Tn).clone()
        return {"ids": ids, "targets": targets, "token_types": types, "lengths": torch.tensor([5, Tn])}
    source = torch.randint(0, V, (Bn, T5_SOURCE))
    ids = torch.randint(0, V, (Bn, Tn))
    targets = torch.randint(0, V, (Bn, Tn))
    targets[1, 4] = IGNORE
    return {"ids": ids, "targets": targets, "source": source, "source_lengths": torch.tensor([9, T5_SOURCE])}


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


def forward(arch, cfg, P, inputs, stats=None):
    """logits and the loss training differentiates: the cross-entropy, plus each MoE layer's
    moe_aux_coef · aux + moe_z_coef · z (the statistics go to `stats` when given)."""
    if arch == "bert":
        return bert_forward(cfg, P, inputs)
    if arch == "t5":
        return t5_forward(cfg, P, inputs)
    ids, targets = inputs["ids"], inputs["targets"]
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


def mha(cfg, x, memory, P, p, key_lengths=None, causal=False, bias=None):
    """Multi-head attention of queries from x over keys and values from memory: scores scaled by
    1/sqrt(D), plus bias [H, Tq, Tk] when given; keys at or past a row's length never attended."""
    Bn, Tq, C = x.shape
    Tk, H = memory.shape[1], cfg["n_heads"]
    D = C // H
    q = linear(x, P, p + "wq", p + "bq").view(Bn, Tq, H, D).transpose(1, 2)
    k = linear(memory, P, p + "wk", p + "bk").view(Bn, Tk, H, D).transpose(1, 2)
    v = linear(memory, P, p + "wv", p + "bv").view(Bn, Tk, H, D).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)   # [B, H, Tq, Tk]
    if bias is not None:
        scores = scores + bias[None]
    allowed = torch.ones(Bn, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(Tq, Tk, dtype=torch.bool).tril()
    if key_lengths is not None:
        allowed = allowed & (torch.arange(Tk)[None, :] < key_lengths[:, None])[:, None, None, :]
    att = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    out = (att @ v).transpose(1, 2).reshape(Bn, Tq, H * D)
    return linear(out, P, p + "wo", p + "bo")


def bert_forward(cfg, P, inputs):
    """BertForMaskedLM with the tanh GELU: embeddings (token + position + type) then LayerNorm,
    post-norm blocks x = LN(x + f(x)), the MLM head LN(GELU(dense(x))) · E^T + bias; the loss is
    the mean cross-entropy over the selected positions."""
    ids, eps = inputs["ids"], cfg["norm_eps"]

    def ln(x, prefix):
        return F.layer_norm(x, (x.shape[-1],), P[prefix + ".weight"], P[prefix + ".bias"], eps)

    x = P["embed.tokens"][ids] + P["embed.positions"][: ids.shape[1]][None] + P["embed.types"][inputs["token_types"]]
    x = ln(x, "embed_norm")
    for i in range(cfg["n_layers"]):
        p = f"blocks.{i}."
        x = ln(x + mha(cfg, x, x, P, p + "attn.", key_lengths=inputs["lengths"]), p + "attn.norm")
        h = F.gelu(linear(x, P, p + "mlp.w_fc", p + "mlp.b_fc"), approximate="tanh")
        x = ln(x + linear(h, P, p + "mlp.w_proj", p + "mlp.b_proj"), p + "mlp.norm")
    h = ln(F.gelu(linear(x, P, "head.transform.weight", "head.transform.bias"), approximate="tanh"), "head.norm")
    logits = h @ P["embed.tokens"].t() + P["head.bias"]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs["targets"].reshape(-1), ignore_index=IGNORE)
    return logits, loss


def t5_bucket(rel, bidirectional):
    """T5's bucket of a key at offset rel = key - query (Transformers' _relative_position_bucket)."""
    n, ret = T5_BUCKETS, 0
    if bidirectional:
        n //= 2
        ret += n if rel > 0 else 0
        rel = abs(rel)
    else:
        rel = -min(rel, 0)
    exact_below = n // 2
    if rel < exact_below:
        return ret + rel
    large = exact_below + int(math.log(rel / exact_below) / math.log(T5_MAX_DISTANCE / exact_below) * (n - exact_below))
    return ret + min(large, n - 1)


def t5_bias(P, table, Tq, Tk, bidirectional):
    buckets = torch.tensor([[t5_bucket(j - i, bidirectional) for j in range(Tk)] for i in range(Tq)])
    return P[table][buckets].permute(2, 0, 1)  # [H, Tq, Tk]


def t5_forward(cfg, P, inputs):
    """T5 v1.0 without dropout, with llmtk's 1/sqrt(D) score scale: pre-norm RMSNorm blocks, ReLU
    feed-forward, one relative-bias table per stack, the decoder's cross-attention over the
    encoder's normed output (the source's padding never attended), the tied head on d^-1/2 x."""
    eps = cfg["norm_eps"]

    def rms(x, prefix):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * P[prefix + ".weight"]

    def ffn(x, p):
        return linear(torch.relu(linear(x, P, p + "w_fc", None)), P, p + "w_proj", None)

    source, lengths, ids = inputs["source"], inputs["source_lengths"], inputs["ids"]
    S, Tn = source.shape[1], ids.shape[1]
    x = P["embed.tokens"][source]
    bias = t5_bias(P, "encoder.relative_bias", S, S, True)
    for i in range(cfg["n_layers"]):
        p = f"encoder.blocks.{i}."
        h = rms(x, p + "attn.norm")
        x = x + mha(cfg, h, h, P, p + "attn.", key_lengths=lengths, bias=bias)
        x = x + ffn(rms(x, p + "mlp.norm"), p + "mlp.")
    memory = rms(x, "encoder.final_norm")
    y = P["embed.tokens"][ids]
    bias = t5_bias(P, "decoder.relative_bias", Tn, Tn, False)
    for i in range(cfg["n_layers"]):
        p = f"decoder.blocks.{i}."
        h = rms(y, p + "attn.norm")
        y = y + mha(cfg, h, h, P, p + "attn.", causal=True, bias=bias)
        y = y + mha(cfg, rms(y, p + "cross.norm"), memory, P, p + "cross.", key_lengths=lengths)
        y = y + ffn(rms(y, p + "mlp.norm"), p + "mlp.")
    y = rms(y, "decoder.final_norm") * cfg["d_model"] ** -0.5
    logits = y @ P["embed.tokens"].t()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs["targets"].reshape(-1), ignore_index=IGNORE)
    return logits, loss


# ---------------------------------------------------------------- output

def exact(t):
    # float32-valued doubles: repr round-trips, and parsing to float gives the same float32.
    return [float(v) for v in t.reshape(-1).tolist()]


def sig10(t):
    return [float(f"{v:.10g}") for v in t.reshape(-1).tolist()]


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def write_json(path, arch, cfg, P, inputs, logits, loss, grads, extra=None):
    lines = ["{"]
    lines.append(f'"arch":{dumps(arch)},')
    lines.append(f'"config":{dumps(cfg)},')
    Bn, Tn = inputs["ids"].shape
    lines.append(f'"batch":{Bn},"seq":{Tn},')
    if "source" in inputs:
        lines.append(f'"source_seq":{inputs["source"].shape[1]},')
    for k, v in inputs.items():  # ids, targets, and token_types, lengths, source, source_lengths where given
        lines.append(f'{dumps(k)}:{dumps(v.reshape(-1).tolist())},')
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


def fd_check(arch, cfg, P, inputs, grads, n_checks=6, h=1e-6):
    g = torch.Generator().manual_seed(0)
    names = list(P)
    worst = 0.0
    with torch.no_grad():
        for c in range(n_checks):
            n = names[int(torch.randint(0, len(names), (1,), generator=g))]
            if c < 2:
                n = ["embed.tokens", "decoder.relative_bias" if arch == "t5" else "blocks.0.attn.wo"][c]
            flat = P[n].view(-1)
            idx = int(torch.randint(0, flat.numel(), (1,), generator=g))
            old = flat[idx].item()
            flat[idx] = old + h
            lp = forward(arch, cfg, P, inputs)[1].item()
            flat[idx] = old - h
            lm = forward(arch, cfg, P, inputs)[1].item()
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
    for arch in ("gpt2", "llama", "moe", "hybrid", "bert", "t5"):
        cfg = CONFIGS[arch]
        P, inputs = make_params(arch, cfg)
        leaf = {n: v.clone().requires_grad_(True) for n, v in P.items()}
        stats = {"aux": [], "z": []}
        logits, loss = forward(arch, cfg, leaf, inputs, stats)
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
        write_json(path, arch, cfg, P, inputs, logits.detach(), loss.item(), grads, extra)
        count = sum(v.numel() for v in P.values())
        print(f"{arch}: {len(P)} tensors, {count} params, loss {loss.item():.10g} -> {path}")
        if check:
            fd_check(arch, cfg, {n: v.clone() for n, v in P.items()}, inputs, grads)


if __name__ == "__main__":
    main()
