#!/usr/bin/python3
"""Check that a checkpoint written by `llmtk export RUN --hf DIR` computes, under Hugging Face
Transformers' model code, the same loss that `llmtk eval` computes from the run itself.

Transformers is not installable here, so this script re-implements the forward pass of
GPT2LMHeadModel, LlamaForCausalLM, MixtralForCausalLM, BertForMaskedLM and T5ForConditionalGeneration from Transformers' own naming, weight
layout and formulas (not llmtk's), reading config.json and model.safetensors with plain Python. It imports no project code.

  /usr/bin/python3 tests/golden/check_hf_export.py HF_DIR SHARD --run RUN [--llmtk build/bin/llmtk]
      [--peft ADAPTER_DIR] [--batch 4] [--seq 128] [--batches 4] [--dtype float64] [--tol 1e-4]

With --peft, HF_DIR is the base and ADAPTER_DIR holds LoRA adapters written by `llmtk export RUN
--peft DIR`; they are applied as PEFT applies them (apply_peft below: which modules its
target_modules wrap, the tensor names and shapes it expects, rank_pattern / alpha_pattern, the
scale lora_alpha / r, fan_in_fan_out for GPT-2's Conv1D, modules_to_save), and the result must
compute RUN's loss.

A BERT export (an encoder, which has no next-token loss) is checked with --fill-mask PROMPT: the
log-probabilities `llmtk generate RUN --prompt PROMPT --json` prints at each [MASK], over the
whole vocabulary, against BertForMaskedLM's on the same row; a classifier's export
(BertForSequenceClassification) with --classify TEXT: the label probabilities against its pooler
and classifier on the same row. A T5 export (T5ForConditionalGeneration) with --spans PROMPT: the
decoder's log-probabilities at every position of what `llmtk generate --json` wrote for the
prompt's sentinels, and the reference's greedy tokens against llmtk's.

It prints the reference loss, the loss `llmtk eval` prints for RUN (6 decimals), and their absolute
difference, and exits 1 if the difference exceeds --tol (2 on a load/config problem).
Needs Debian's python3-torch (1.13): run it with /usr/bin/python3.
"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys

import torch

# ---------------------------------------------------------------------------------------------
# Files


def read_safetensors(path):
    """name -> tensor, from the safetensors layout: u64 LE header length, JSON header, raw data."""
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32}
    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (a, b) = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in dtypes:
            raise SystemExit(f"{path}: tensor {name} has unsupported dtype {dt}")
        numel = math.prod(shape)
        if b - a != numel * sizes[dt] or b > len(data):
            raise SystemExit(f"{path}: tensor {name} {dt}{shape} has {b - a} bytes at [{a}, {b}) of {len(data)}")
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[dt]) if numel else torch.empty(0, dtype=dtypes[dt])
        out[name] = t.reshape(shape)
    return out


def read_shard(path):
    """llmtk token shard: 64-byte header (magic LLMTKTOK, u32 version, u32 token_bytes, u64 count, ...)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"LLMTKTOK":
        raise SystemExit(f"{path}: not an llmtk token shard")
    version, token_bytes, count = struct.unpack("<IIQ", blob[8:24])
    if token_bytes not in (2, 4) or len(blob) != 64 + count * token_bytes:
        raise SystemExit(f"{path}: version {version}, {token_bytes}-byte tokens, count {count}, "
                         f"but the file has {len(blob)} bytes")
    fmt = "<%d%s" % (count, "H" if token_bytes == 2 else "I")
    return torch.tensor(struct.unpack(fmt, blob[64:]), dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Configs, with the defaults of transformers' GPT2Config / LlamaConfig / PretrainedConfig for any
# key the export leaves out (so that an omitted key is read the way Transformers would read it).


def gpt2_config(c):
    cfg = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
               activation_function="gelu_new", layer_norm_epsilon=1e-5, scale_attn_weights=True,
               scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False, tie_word_embeddings=True)
    cfg.update({k: v for k, v in c.items() if k in cfg})
    if cfg["n_inner"] is None:
        cfg["n_inner"] = 4 * cfg["n_embd"]
    return cfg


def llama_config(c):
    cfg = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
               max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
               attention_bias=False, mlp_bias=False, tie_word_embeddings=False, pretraining_tp=1)
    cfg.update({k: v for k, v in c.items() if k in cfg})
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    if cfg["head_dim"] is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg


def mixtral_config(c):
    # MixtralConfig's defaults (transformers/models/mixtral/configuration_mixtral.py)
    cfg = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
               max_position_embeddings=4096 * 32, rms_norm_eps=1e-5, rope_theta=1e6, sliding_window=None,
               num_experts_per_tok=2, num_local_experts=8, tie_word_embeddings=False)
    cfg.update({k: v for k, v in c.items() if k in cfg})
    if cfg["head_dim"] is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    # Mixtral's attention is Llama's (no biases, no rope_scaling): llama_forward reads these.
    cfg.update(rope_scaling=None, attention_bias=False, mlp_bias=False, pretraining_tp=1)
    return cfg


def check_keys(weights, expected, optional):
    """What from_pretrained would report: missing keys are randomly initialised, unexpected ones dropped."""
    missing = sorted(k for k in expected if k not in weights and k not in optional)
    unexpected = sorted(k for k in weights if k not in expected and k not in optional)
    return missing, unexpected


def want_shape(weights, name, shape):
    got = list(weights[name].shape)
    if got != list(shape):
        raise SystemExit(f"tensor {name}: shape {got}, but Transformers' module expects {list(shape)}")


# ---------------------------------------------------------------------------------------------
# GPT2LMHeadModel (transformers/models/gpt2/modeling_gpt2.py)


def conv1d(x, w, b):
    # transformers.pytorch_utils.Conv1D: weight is [nx (in), nf (out)]; y = x @ W + b
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[-1])


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_forward(cfg, W, ids, dt):
    D, H, L, F = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["n_inner"]
    V, P, eps = cfg["vocab_size"], cfg["n_positions"], cfg["layer_norm_epsilon"]
    if cfg["activation_function"] != "gelu_new":
        raise SystemExit(f"activation_function {cfg['activation_function']!r}: only gelu_new is implemented")
    if cfg["scale_attn_by_inverse_layer_idx"] or cfg["reorder_and_upcast_attn"]:
        raise SystemExit("scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not implemented")
    hd = D // H
    p = "transformer."
    shapes = {p + "wte.weight": [V, D], p + "wpe.weight": [P, D], p + "ln_f.weight": [D], p + "ln_f.bias": [D]}
    for i in range(L):
        q = f"{p}h.{i}."
        shapes.update({q + "ln_1.weight": [D], q + "ln_1.bias": [D], q + "ln_2.weight": [D], q + "ln_2.bias": [D],
                       q + "attn.c_attn.weight": [D, 3 * D], q + "attn.c_attn.bias": [3 * D],
                       q + "attn.c_proj.weight": [D, D], q + "attn.c_proj.bias": [D],
                       q + "mlp.c_fc.weight": [D, F], q + "mlp.c_fc.bias": [F],
                       q + "mlp.c_proj.weight": [F, D], q + "mlp.c_proj.bias": [D]})
    optional = {"lm_head.weight"} | {f"{p}h.{i}.attn.{b}" for i in range(L) for b in ("bias", "masked_bias")}
    missing, unexpected = check_keys(W, shapes, optional)
    for k in shapes:
        if k in W:
            want_shape(W, k, shapes[k])
    if missing:
        raise SystemExit(f"missing tensors (Transformers would initialise them randomly): {missing}")
    w = {k: v.to(dt) for k, v in W.items()}

    B, T = ids.shape
    if T > P:
        raise SystemExit(f"seq {T} is longer than n_positions {P}")
    pos = torch.arange(T)
    h = w[p + "wte.weight"][ids] + w[p + "wpe.weight"][pos][None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        q_ = f"{p}h.{i}."
        x = torch.nn.functional.layer_norm(h, (D,), w[q_ + "ln_1.weight"], w[q_ + "ln_1.bias"], eps)
        qkv = conv1d(x, w[q_ + "attn.c_attn.weight"], w[q_ + "attn.c_attn.bias"])
        q, k, v = qkv.split(D, dim=2)
        q, k, v = (t.view(B, T, H, hd).permute(0, 2, 1, 3) for t in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2))
        if cfg["scale_attn_weights"]:
            att = att / torch.full([], v.size(-1) ** 0.5, dtype=att.dtype)
        att = torch.where(causal, att, torch.full([], torch.finfo(att.dtype).min, dtype=att.dtype))
        att = torch.softmax(att, dim=-1)
        o = torch.matmul(att, v).permute(0, 2, 1, 3).contiguous().view(B, T, D)
        h = h + conv1d(o, w[q_ + "attn.c_proj.weight"], w[q_ + "attn.c_proj.bias"])
        x = torch.nn.functional.layer_norm(h, (D,), w[q_ + "ln_2.weight"], w[q_ + "ln_2.bias"], eps)
        x = conv1d(gelu_new(conv1d(x, w[q_ + "mlp.c_fc.weight"], w[q_ + "mlp.c_fc.bias"])),
                   w[q_ + "mlp.c_proj.weight"], w[q_ + "mlp.c_proj.bias"])
        h = h + x
    h = torch.nn.functional.layer_norm(h, (D,), w[p + "ln_f.weight"], w[p + "ln_f.bias"], eps)
    head = w[p + "wte.weight"] if cfg["tie_word_embeddings"] or "lm_head.weight" not in w else w["lm_head.weight"]
    return h @ head.T, unexpected


# ---------------------------------------------------------------------------------------------
# LlamaForCausalLM (transformers/models/llama/modeling_llama.py)


def rms_norm(x, weight, eps):
    # LlamaRMSNorm: variance in float32 (kept in float64 when computing in float64), then weight * x
    in_dtype = x.dtype
    xs = x.to(torch.promote_types(in_dtype, torch.float32))
    var = xs.pow(2).mean(-1, keepdim=True)
    xs = xs * torch.rsqrt(var + eps)
    return weight * xs.to(in_dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):
    b, kv, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


def mixtral_moe(cfg, w, p, x, act):
    """MixtralSparseMoeBlock: router softmax in float32 (as Transformers computes it), top-k, renormalised; each
    expert w2(act(w1 x) * w3 x); outputs weighted and summed. Computed densely per expert with a
    mask (the result is the same as Transformers' index_add over routed tokens)."""
    E, K = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    B, T, D = x.shape
    h = x.reshape(-1, D)
    logits = torch.nn.functional.linear(h, w[p + "block_sparse_moe.gate.weight"])
    probs = torch.softmax(logits, dim=1, dtype=torch.float32)
    weights, chosen = torch.topk(probs, K, dim=-1)
    weights = (weights / weights.sum(dim=-1, keepdim=True)).to(h.dtype)
    out = torch.zeros_like(h)
    for e in range(E):
        q = p + f"block_sparse_moe.experts.{e}."
        rows, slot = torch.where(chosen == e)
        if rows.numel() == 0:
            continue
        xe = h[rows]
        ye = torch.nn.functional.linear(act(torch.nn.functional.linear(xe, w[q + "w1.weight"])) *
                                        torch.nn.functional.linear(xe, w[q + "w3.weight"]), w[q + "w2.weight"])
        out.index_add_(0, rows, ye * weights[rows, slot, None])
    return out.reshape(B, T, D)


def llama_forward(cfg, W, ids, dt):
    D, L, F, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KV, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    # transformers.activations.ACT2FN for the activations implemented here: LlamaMLP applies it
    # to gate_proj's output (Gemma-style checkpoints use gelu_pytorch_tanh, i.e. GeGLU).
    acts = {"silu": torch.nn.functional.silu, "gelu_new": gelu_new,
            "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}
    if cfg["hidden_act"] not in acts:
        raise SystemExit(f"hidden_act {cfg['hidden_act']!r}: only {', '.join(acts)} are implemented")
    act = acts[cfg["hidden_act"]]
    if cfg["rope_scaling"] not in (None, {}) or cfg["pretraining_tp"] != 1:
        raise SystemExit("rope_scaling / pretraining_tp are not implemented")
    if H % KV:
        raise SystemExit(f"num_attention_heads {H} is not a multiple of num_key_value_heads {KV}")
    ab, mb = cfg["attention_bias"], cfg["mlp_bias"]
    shapes = {"model.embed_tokens.weight": [V, D], "model.norm.weight": [D]}
    for i in range(L):
        q = f"model.layers.{i}."
        shapes.update({q + "input_layernorm.weight": [D], q + "post_attention_layernorm.weight": [D],
                       q + "self_attn.q_proj.weight": [H * hd, D], q + "self_attn.k_proj.weight": [KV * hd, D],
                       q + "self_attn.v_proj.weight": [KV * hd, D], q + "self_attn.o_proj.weight": [D, H * hd]})
        if "num_local_experts" in cfg:
            E = cfg["num_local_experts"]
            shapes[q + "block_sparse_moe.gate.weight"] = [E, D]
            for e in range(E):
                x = q + f"block_sparse_moe.experts.{e}."
                shapes.update({x + "w1.weight": [F, D], x + "w3.weight": [F, D], x + "w2.weight": [D, F]})
        else:
            shapes.update({q + "mlp.gate_proj.weight": [F, D], q + "mlp.up_proj.weight": [F, D],
                           q + "mlp.down_proj.weight": [D, F]})
        if ab:
            shapes.update({q + "self_attn.q_proj.bias": [H * hd], q + "self_attn.k_proj.bias": [KV * hd],
                           q + "self_attn.v_proj.bias": [KV * hd], q + "self_attn.o_proj.bias": [D]})
        if mb:
            shapes.update({q + "mlp.gate_proj.bias": [F], q + "mlp.up_proj.bias": [F], q + "mlp.down_proj.bias": [D]})
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = [V, D]
    optional = {"lm_head.weight"} | {f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(L)}
    missing, unexpected = check_keys(W, shapes, optional)
    for k in shapes:
        if k in W:
            want_shape(W, k, shapes[k])
    if missing:
        raise SystemExit(f"missing tensors (Transformers would initialise them randomly): {missing}")
    w = {k: v.to(dt) for k, v in W.items()}
    lin = lambda x, name: torch.nn.functional.linear(x, w[name + ".weight"], w.get(name + ".bias"))  # [out, in]

    B, T = ids.shape
    # LlamaRotaryEmbedding (default rope): inv_freq over the full head_dim, cos/sin of cat(freqs, freqs)
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).to(dt) / hd))
    freqs = torch.arange(T, dtype=dt)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))

    h = w["model.embed_tokens.weight"][ids]
    for i in range(L):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = lin(x, p + "self_attn.q_proj").view(B, T, H, hd).transpose(1, 2)
        k = lin(x, p + "self_attn.k_proj").view(B, T, KV, hd).transpose(1, 2)
        v = lin(x, p + "self_attn.v_proj").view(B, T, KV, hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
        att = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
        att = att.masked_fill(~causal, torch.finfo(att.dtype).min)
        att = torch.softmax(att, dim=-1, dtype=torch.promote_types(att.dtype, torch.float32)).to(q.dtype)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, H * hd)
        h = h + lin(o, p + "self_attn.o_proj")
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        if "num_local_experts" in cfg:
            x = mixtral_moe(cfg, w, p, x, act)
        else:
            x = lin(act(lin(x, p + "mlp.gate_proj")) * lin(x, p + "mlp.up_proj"), p + "mlp.down_proj")
        h = h + x
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return h @ head.T, unexpected


# ---------------------------------------------------------------------------------------------
# BertForMaskedLM (transformers/models/bert/modeling_bert.py): post-norm layers, the MLM head
# (BertOnlyMLMHead: transform dense + act + LayerNorm, decoder tied to the word embeddings, its
# bias cls.predictions.bias).


def bert_config(c):
    cfg = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
               layer_norm_eps=1e-12, position_embedding_type="absolute", is_decoder=False,
               tie_word_embeddings=True)
    cfg.update({k: v for k, v in c.items() if k in cfg})
    return cfg


def bert_forward(cfg, W, ids, dt, types=None, classifier=False):
    D, L, F, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    H, P, TV, eps = cfg["num_attention_heads"], cfg["max_position_embeddings"], cfg["type_vocab_size"], cfg["layer_norm_eps"]
    acts = {"gelu": torch.nn.functional.gelu, "gelu_new": gelu_new,
            "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}
    if cfg["hidden_act"] not in acts:
        raise SystemExit(f"hidden_act {cfg['hidden_act']!r}: only {', '.join(acts)} are implemented")
    if cfg["position_embedding_type"] != "absolute" or cfg["is_decoder"]:
        raise SystemExit("only absolute positions and encoder (not is_decoder) BERT are implemented")
    act = acts[cfg["hidden_act"]]
    hd = D // H
    e = "bert.embeddings."
    shapes = {e + "word_embeddings.weight": [V, D], e + "position_embeddings.weight": [P, D],
              e + "token_type_embeddings.weight": [TV, D], e + "LayerNorm.weight": [D], e + "LayerNorm.bias": [D],
              }
    if classifier:  # BertForSequenceClassification: BertPooler and the classifier
        K = cfg["num_labels"]
        shapes.update({"bert.pooler.dense.weight": [D, D], "bert.pooler.dense.bias": [D],
                       "classifier.weight": [K, D], "classifier.bias": [K]})
    else:
        shapes.update({"cls.predictions.transform.dense.weight": [D, D], "cls.predictions.transform.dense.bias": [D],
                       "cls.predictions.transform.LayerNorm.weight": [D], "cls.predictions.transform.LayerNorm.bias": [D],
                       "cls.predictions.bias": [V]})
    for i in range(L):
        q = f"bert.encoder.layer.{i}."
        for m, (o, n) in {"attention.self.query": (D, D), "attention.self.key": (D, D), "attention.self.value": (D, D),
                          "attention.output.dense": (D, D), "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
            shapes.update({q + m + ".weight": [o, n], q + m + ".bias": [o]})
        for m in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes.update({q + m + ".weight": [D], q + m + ".bias": [D]})
    if not cfg["tie_word_embeddings"] and not classifier:
        shapes["cls.predictions.decoder.weight"] = [V, D]
    optional = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "bert.embeddings.position_ids"}
    missing, unexpected = check_keys(W, shapes, optional)
    for k in shapes:
        if k in W:
            want_shape(W, k, shapes[k])
    if missing:
        raise SystemExit(f"missing tensors (Transformers would initialise them randomly): {missing}")
    w = {k: v.to(dt) for k, v in W.items()}
    lin = lambda x, name: torch.nn.functional.linear(x, w[name + ".weight"], w[name + ".bias"])
    ln = lambda x, name: torch.nn.functional.layer_norm(x, (D,), w[name + ".weight"], w[name + ".bias"], eps)

    B, T = ids.shape
    if T > P:
        raise SystemExit(f"seq {T} is longer than max_position_embeddings {P}")
    types = torch.zeros_like(ids) if types is None else types
    h = w[e + "word_embeddings.weight"][ids] + w[e + "token_type_embeddings.weight"][types] + \
        w[e + "position_embeddings.weight"][torch.arange(T)][None]
    h = ln(h, e + "LayerNorm")
    for i in range(L):
        p = f"bert.encoder.layer.{i}."
        q, k, v = (lin(h, p + "attention.self." + n).view(B, T, H, hd).transpose(1, 2) for n in ("query", "key", "value"))
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd), dim=-1)  # every key: no mask
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, D)
        h = ln(lin(o, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")  # BertSelfOutput
        x = act(lin(h, p + "intermediate.dense"))                                        # BertIntermediate
        h = ln(lin(x, p + "output.dense") + h, p + "output.LayerNorm")                    # BertOutput
    if classifier:  # BertPooler: tanh(dense(h[:, 0])), then the classifier (dropout is off in eval)
        pooled = torch.tanh(lin(h[:, 0], "bert.pooler.dense"))
        return lin(pooled, "classifier"), unexpected
    t = ln(act(lin(h, "cls.predictions.transform.dense")), "cls.predictions.transform.LayerNorm")
    dec = w["cls.predictions.decoder.weight"] if not cfg["tie_word_embeddings"] else w[e + "word_embeddings.weight"]
    return t @ dec.T + w["cls.predictions.bias"], unexpected


def t5_config(c):
    cfg = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=None, num_heads=8,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
               feed_forward_proj="relu", tie_word_embeddings=True, is_encoder_decoder=True)
    cfg.update({k: v for k, v in c.items() if k in cfg})
    if cfg["num_decoder_layers"] is None:
        cfg["num_decoder_layers"] = cfg["num_layers"]
    return cfg


def t5_bucket(rel, bidirectional, num_buckets, max_distance):
    """T5Attention._relative_position_bucket: rel = key position - query position."""
    ret = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        ret += (rel > 0).to(torch.long) * num_buckets
        n = torch.abs(rel)
    else:
        n = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return ret + torch.where(is_small, n, large)


def t5_forward(cfg, W, source, decoder_ids, dt):
    """T5ForConditionalGeneration (v1.0: ReLU feed-forward, tied head) on one source and decoder row."""
    D, F, H, dk, V = cfg["d_model"], cfg["d_ff"], cfg["num_heads"], cfg["d_kv"], cfg["vocab_size"]
    L, Ld, eps = cfg["num_layers"], cfg["num_decoder_layers"], cfg["layer_norm_epsilon"]
    NB, MD = cfg["relative_attention_num_buckets"], cfg["relative_attention_max_distance"]
    if cfg["feed_forward_proj"] != "relu" or not cfg["tie_word_embeddings"]:
        raise SystemExit("only T5 v1.0 (feed_forward_proj relu, tied head) is implemented")
    shapes = {"shared.weight": [V, D], "encoder.final_layer_norm.weight": [D], "decoder.final_layer_norm.weight": [D],
              "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": [NB, H],
              "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": [NB, H]}
    for side, n, layers in (("encoder", L, ("SelfAttention",)), ("decoder", Ld, ("SelfAttention", "EncDecAttention"))):
        for i in range(n):
            for j, att in enumerate(layers):
                p = f"{side}.block.{i}.layer.{j}."
                shapes.update({p + att + ".q.weight": [H * dk, D], p + att + ".k.weight": [H * dk, D],
                               p + att + ".v.weight": [H * dk, D], p + att + ".o.weight": [D, H * dk],
                               p + "layer_norm.weight": [D]})
            p = f"{side}.block.{i}.layer.{len(layers)}."
            shapes.update({p + "DenseReluDense.wi.weight": [F, D], p + "DenseReluDense.wo.weight": [D, F],
                           p + "layer_norm.weight": [D]})
    optional = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    missing, unexpected = check_keys(W, shapes, optional)
    for k in shapes:
        if k in W:
            want_shape(W, k, shapes[k])
    if missing:
        raise SystemExit(f"missing tensors (Transformers would initialise them randomly): {missing}")
    w = {k: v.to(dt) for k, v in W.items()}

    def norm(x, name):  # T5LayerNorm: no mean, no bias
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w[name]

    def bias(name, q_len, k_len, bidirectional):
        rel = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
        return w[name][t5_bucket(rel, bidirectional, NB, MD)].permute(2, 0, 1)[None]  # [1, H, q, k]

    def attention(x, kv, name, position_bias):
        B, Tq, Tk = x.shape[0], x.shape[1], kv.shape[1]
        q = (x @ w[name + ".q.weight"].T).view(B, Tq, H, dk).transpose(1, 2)
        k = (kv @ w[name + ".k.weight"].T).view(B, Tk, H, dk).transpose(1, 2)
        v = (kv @ w[name + ".v.weight"].T).view(B, Tk, H, dk).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) + position_bias  # T5 does not scale by 1/sqrt(d_kv)
        o = torch.softmax(scores, dim=-1) @ v
        return o.transpose(1, 2).reshape(B, Tq, H * dk) @ w[name + ".o.weight"].T

    def ff(x, p):
        return torch.relu(x @ w[p + "DenseReluDense.wi.weight"].T) @ w[p + "DenseReluDense.wo.weight"].T

    S, T = source.shape[1], decoder_ids.shape[1]
    h = w["shared.weight"][source]
    enc_bias = bias("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", S, S, True)
    for i in range(L):
        p = f"encoder.block.{i}.layer."
        h = h + attention(norm(h, p + "0.layer_norm.weight"), norm(h, p + "0.layer_norm.weight"), p + "0.SelfAttention", enc_bias)
        h = h + ff(norm(h, p + "1.layer_norm.weight"), p + "1.")
    memory = norm(h, "encoder.final_layer_norm.weight")
    causal = torch.full((T, T), float("-inf"), dtype=dt).triu(1)[None, None]
    dec_bias = bias("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", T, T, False) + causal
    h = w["shared.weight"][decoder_ids]
    for i in range(Ld):
        p = f"decoder.block.{i}.layer."
        x = norm(h, p + "0.layer_norm.weight")
        h = h + attention(x, x, p + "0.SelfAttention", dec_bias)
        h = h + attention(norm(h, p + "1.layer_norm.weight"), memory, p + "1.EncDecAttention", 0.0)  # no position bias
        h = h + ff(norm(h, p + "2.layer_norm.weight"), p + "2.")
    h = norm(h, "decoder.final_layer_norm.weight") * D ** -0.5  # the tied head's rescaling
    return h @ w["shared.weight"].T, unexpected


def check_spans(a, cfg, W, cfg_raw):
    """T5: for each --spans prompt, `llmtk generate RUN --prompt P --json` prints the source it encoded,
    the decoder row ([PAD] then what it wrote) and the decoder's log-probabilities at every position;
    the reference computes them from the export."""
    dt = getattr(torch, a.dtype)
    worst = 0.0
    print(f"export      {a.hf_dir} ({cfg_raw.get('architectures', ['?'])[0]}, {len(W)} tensors, "
          f"{sum(t.numel() for t in W.values()):,} params)")
    for prompt in a.spans:
        j = llmtk_generate_json(a, prompt, ("--temperature", "0", "--max-tokens", "24"))
        logits, unexpected = t5_forward(cfg, W, torch.tensor([j["source_ids"]], dtype=torch.int64),
                                        torch.tensor([j["decoder_ids"]], dtype=torch.int64), dt)
        if unexpected:
            print(f"unexpected  {len(unexpected)} tensors Transformers would ignore: {unexpected}")
        ref = torch.log_softmax(logits.to(torch.float64)[0], dim=-1)
        got = torch.tensor(j["logprobs"], dtype=torch.float64)
        diff = float((ref - got).abs().max())
        worst = max(worst, diff)
        greedy = ref[:-1].argmax(-1).tolist() == j["output_ids"]
        print(f"spans       {prompt!r}: {len(j['source_ids'])} source tokens, {len(j['decoder_ids'])} decoder positions, "
              f"max |log p diff| {diff:.3e}; reference's greedy tokens {'match' if greedy else 'DIFFER from'} llmtk's")
        worst = worst if greedy else max(worst, float("inf"))
    print(f"worst       {worst:.3e}  (tolerance {a.tol:g})")
    ok = worst <= a.tol
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


def llmtk_generate_json(a, prompt, extra=()):
    """What `llmtk generate RUN --prompt PROMPT --json` prints, parsed."""
    cmd = [a.llmtk, "generate", a.run, "--prompt", prompt, "--json", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def check_classify(a, cfg, W, cfg_raw):
    """BertForSequenceClassification: for each --classify text, `llmtk generate RUN --prompt T --json`
    prints the row it read and each label's probability; the reference computes them from the export."""
    dt = getattr(torch, a.dtype)
    id2label = {int(k): v for k, v in cfg_raw.get("id2label", {}).items()}
    cfg["num_labels"] = len(id2label) if id2label else cfg_raw.get("num_labels", 2)
    worst = 0.0
    print(f"export      {a.hf_dir} ({cfg_raw.get('architectures', ['?'])[0]}, {len(W)} tensors, labels {id2label})")
    for text in a.classify:
        j = llmtk_generate_json(a, text)
        logits, unexpected = bert_forward(cfg, W, torch.tensor([j["ids"]], dtype=torch.int64), dt, classifier=True)
        if unexpected:
            print(f"unexpected  {len(unexpected)} tensors Transformers would ignore: {unexpected}")
        ref = torch.softmax(logits.to(torch.float64)[0], dim=-1)
        diff = max(abs(float(ref[k]) - j["probabilities"][id2label[k]]) for k in range(cfg["num_labels"]))
        worst = max(worst, diff)
        print(f"classify    {text!r}: reference {[round(float(x), 6) for x in ref]}, llmtk {j['probabilities']}, max diff {diff:.3e}")
    print(f"worst       {worst:.3e}  (tolerance {a.tol:g})")
    ok = worst <= a.tol
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


def check_fill_mask(a, cfg, W, cfg_raw):
    """BERT: for each --fill-mask prompt, `llmtk generate RUN --prompt P --json` prints the row it read
    and its log-probabilities at every [MASK]; the reference computes them from the export."""
    dt = getattr(torch, a.dtype)
    worst = 0.0
    print(f"export      {a.hf_dir} ({cfg_raw.get('architectures', ['?'])[0]}, {len(W)} tensors, "
          f"{sum(t.numel() for t in W.values()):,} params)")
    for prompt in a.fill_mask:
        j = llmtk_generate_json(a, prompt)
        ids = torch.tensor([j["ids"]], dtype=torch.int64)
        logits, unexpected = bert_forward(cfg, W, ids, dt)
        if unexpected:
            print(f"unexpected  {len(unexpected)} tensors Transformers would ignore: {unexpected}")
        ref = torch.log_softmax(logits.to(torch.float64)[0], dim=-1)
        for pos, got in zip(j["positions"], j["logprobs"]):
            diff = float((ref[pos] - torch.tensor(got, dtype=torch.float64)).abs().max())
            worst = max(worst, diff)
            top = int(ref[pos].argmax())
            print(f"fill-mask   {prompt!r} position {pos}: max |log p diff| over {len(got)} tokens {diff:.3e}; "
                  f"reference argmax {top}, llmtk's top ordinary guess {j['masks'][j['positions'].index(pos)][0]['id']}")
    print(f"worst       {worst:.3e}  (tolerance {a.tol:g})")
    ok = worst <= a.tol
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------------------------------------
# PEFT's LoRA (peft/tuners/lora): a wrapped module computes base(x) + scale * lora_B(lora_A(x)),
# i.e. its weight plus scale * B @ A (transposed for fan_in_fan_out modules), which is what
# merge_and_unload writes; modules_to_save replace a module's weight with the saved one.


def pattern_value(patterns, module, default):
    # peft.utils.other.get_pattern_key: a key matches a module whose name ends with it (as a regex)
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def apply_peft(cfg, W, peft_dir):
    conf = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    if conf.get("peft_type") != "LORA":
        raise SystemExit(f"peft_type {conf.get('peft_type')!r}: only LORA is implemented")
    if conf.get("use_dora") or conf.get("bias", "none") != "none" or conf.get("layers_to_transform"):
        raise SystemExit("use_dora / bias / layers_to_transform are not implemented")
    A = read_safetensors(os.path.join(peft_dir, "adapter_model.safetensors"))
    targets = conf["target_modules"]
    if isinstance(targets, str):
        raise SystemExit("target_modules as a regex is not implemented")
    pre = "base_model.model."
    # The modules PEFT wraps: every linear/Conv1D module whose name is a target or ends with "." + target.
    modules = sorted(k[:-7] for k in W if k.endswith(".weight") and W[k].dim() == 2 and "wte" not in k
                     and "wpe" not in k and "embed_tokens" not in k)
    if not cfg["tie_word_embeddings"] or "lm_head.weight" in W:
        modules.append("lm_head")
    wrapped = [m for m in modules if any(m == t or m.endswith("." + t) for t in targets)]
    saved = []
    for name in conf.get("modules_to_save") or []:
        saved += [m for m in sorted({k[:-7] for k in W if k.endswith(".weight")} | {"lm_head"})
                  if m == name or m.endswith("." + name)]
    expected = {pre + m + s for m in wrapped for s in (".lora_A.weight", ".lora_B.weight")} | {pre + m + ".weight" for m in saved}
    missing, unexpected = sorted(expected - set(A)), sorted(set(A) - expected)
    if missing or unexpected:
        raise SystemExit(f"{peft_dir}: PEFT would wrap {len(wrapped)} modules; adapter tensors missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    fifo = conf.get("fan_in_fan_out", False)
    for m in wrapped:
        r = pattern_value(conf.get("rank_pattern") or {}, m, conf["r"])
        alpha = pattern_value(conf.get("alpha_pattern") or {}, m, conf["lora_alpha"])
        scale = alpha / (math.sqrt(r) if conf.get("use_rslora") else r)
        w = W[m + ".weight"]
        in_f, out_f = (w.shape[0], w.shape[1]) if fifo else (w.shape[1], w.shape[0])
        a, b = A[pre + m + ".lora_A.weight"], A[pre + m + ".lora_B.weight"]
        if list(a.shape) != [r, in_f] or list(b.shape) != [out_f, r]:
            raise SystemExit(f"{m}: lora_A {list(a.shape)}, lora_B {list(b.shape)}; PEFT creates [{r}, {in_f}] and [{out_f}, {r}]")
        delta = (b.double() @ a.double()) * scale
        W[m + ".weight"] = (w.double() + (delta.T if fifo else delta)).to(w.dtype)
    for m in saved:
        W[m + ".weight"] = A[pre + m + ".weight"]
        if m == "lm_head":
            cfg["tie_word_embeddings"] = False  # the wrapper holds its own copy: the head no longer follows the embedding
    return len(wrapped), saved


# ---------------------------------------------------------------------------------------------


def llmtk_eval(llmtk, run, shard, B, T, N):
    cmd = [llmtk, "eval", run, "--data", shard, "--batch", str(B), "--seq", str(T), "--batches", str(N)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    loss = re.search(r"^loss (\S+)$", r.stdout, re.M)
    ckpt = re.search(r"^checkpoint (.*)$", r.stdout, re.M)
    toks = re.search(r"^(\d+) tokens in (\d+) batches$", r.stdout, re.M)
    if not loss:
        raise SystemExit(f"no loss line in the output of {' '.join(cmd)}:\n{r.stdout}")
    return float(loss.group(1)), loss.group(1), ckpt.group(1) if ckpt else "?", toks.groups() if toks else None, cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir", help="directory written by llmtk export --hf")
    ap.add_argument("shard", help="llmtk token shard (.bin)")
    ap.add_argument("--run", required=True, help="the run (or checkpoint) directory that was exported")
    ap.add_argument("--llmtk", default="build/bin/llmtk", help="llmtk binary (default: build/bin/llmtk)")
    ap.add_argument("--peft", help="LoRA adapters in PEFT's layout to apply to HF_DIR (llmtk export RUN --peft DIR)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=None, help="default: the config's context length")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--classify", action="append", default=[],
                    help="BertForSequenceClassification: compare the label probabilities for this text (repeatable)")
    ap.add_argument("--spans", action="append", default=[],
                    help="T5: compare the decoder's log-probabilities for this prompt with sentinels (repeatable)")
    ap.add_argument("--fill-mask", action="append", default=[],
                    help="BERT: compare the log-probabilities at each [MASK] of this prompt (repeatable)")
    a = ap.parse_args()

    cfg_raw = json.load(open(os.path.join(a.hf_dir, "config.json")))
    W = read_safetensors(os.path.join(a.hf_dir, "model.safetensors"))
    mt = cfg_raw.get("model_type")
    if mt == "gpt2":
        cfg, fwd = gpt2_config(cfg_raw), gpt2_forward
        ctx = cfg["n_positions"]
    elif mt == "llama":
        cfg, fwd = llama_config(cfg_raw), llama_forward
        ctx = cfg["max_position_embeddings"]
    elif mt == "bert" and cfg_raw.get("architectures", [""])[0] == "BertForSequenceClassification":
        if not a.classify:
            raise SystemExit("a BERT classifier is checked through --classify TEXT (its label probabilities)")
        check_classify(a, bert_config(cfg_raw), W, cfg_raw)
    elif mt == "bert":
        if not a.fill_mask:
            raise SystemExit("a BERT export is checked through --fill-mask PROMPT (its masked-token log-probabilities)")
        check_fill_mask(a, bert_config(cfg_raw), W, cfg_raw)
    elif mt == "t5":
        if not a.spans:
            raise SystemExit("a T5 export is checked through --spans PROMPT (its decoder's log-probabilities)")
        check_spans(a, t5_config(cfg_raw), W, cfg_raw)
    elif mt == "mixtral":  # Llama's attention with MixtralSparseMoeBlock for the MLP
        cfg, fwd = mixtral_config(cfg_raw), llama_forward
        ctx = cfg["max_position_embeddings"]
        if cfg["sliding_window"] is not None:
            raise SystemExit("sliding_window is not implemented")
    else:
        raise SystemExit(f"model_type {mt!r}: only gpt2, llama, mixtral, bert and t5 are implemented")
    dt = getattr(torch, a.dtype)
    B, T = a.batch, a.seq or ctx
    if a.peft:
        n_wrapped, saved = apply_peft(cfg, W, a.peft)
        print(f"peft        {a.peft}: LoRA on {n_wrapped} modules, modules_to_save {saved}")

    toks = read_shard(a.shard)
    if toks.numel() and int(toks.max()) >= cfg["vocab_size"]:
        raise SystemExit(f"the shard holds token {int(toks.max())} >= vocab_size {cfg['vocab_size']}")
    # llmtk eval's windows: window k = tokens [k*T, k*T+T]; batch i = windows i*B .. i*B+B-1
    windows = (toks.numel() - 1) // T
    N = min(a.batches, windows // B)
    if N < 1:
        raise SystemExit(f"the shard holds {windows} windows of {T}, fewer than one batch of {B}")

    torch.set_grad_enabled(False)
    per_batch = []
    unexpected = []
    for i in range(N):
        starts = [(i * B + b) * T for b in range(B)]
        ids = torch.stack([toks[s:s + T] for s in starts])
        tg = torch.stack([toks[s + 1:s + T + 1] for s in starts])
        logits, unexpected = fwd(cfg, W, ids, dt)
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        per_batch.append(float(-logp.gather(-1, tg[..., None]).mean()))
    ref = sum(per_batch) / N

    got, got_text, ckpt, ntok, cmd = llmtk_eval(a.llmtk, a.run, a.shard, B, T, N)
    diff = abs(ref - got)
    print(f"export      {a.hf_dir} ({cfg_raw.get('architectures', ['?'])[0]}, {len(W)} tensors, "
          f"{sum(t.numel() for t in W.values()):,} params)")
    if unexpected:
        print(f"unexpected  {len(unexpected)} tensors Transformers would ignore: {unexpected}")
    print(f"windows     {N} batches x {B} windows x {T} tokens = {N * B * T} tokens of {a.shard}")
    print(f"hf-ref      loss {ref:.10f}  ({a.dtype} forward, float64 cross-entropy; "
          f"per batch {', '.join(f'{x:.6f}' for x in per_batch)})")
    print(f"llmtk eval  loss {got_text}  (checkpoint {ckpt}; {' '.join(cmd)})")
    if ntok and (int(ntok[0]), int(ntok[1])) != (N * B * T, N):
        print(f"WARNING: llmtk eval covered {ntok[0]} tokens in {ntok[1]} batches")
    print(f"abs diff    {diff:.3e}  (tolerance {a.tol:g}; llmtk prints 6 decimals, so up to 5e-7 is rounding)")
    ok = diff <= a.tol
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
