#!/usr/bin/python3
"""An independent reader of GGUF files written by `llmtk export --gguf`, checked against the same
run's Transformers export (`llmtk export --hf`): the header, every metadata value llama.cpp's
llama architecture reads, the tokenizer, and the tensor table and data.

Written from the published layout (llama.cpp's docs/gguf.md) with numpy only; it imports no
project code. Usage:

    check_gguf.py FILE.gguf HF_DIR --type f32|f16|bf16|q8_0

Checks:
- magic "GGUF", version 3, the counts; the data section aligned to general.alignment (32);
- general.architecture = llama, and llama.* against config.json (sizes, heads, context,
  rope_theta, rms_norm_eps, vocabulary; a Mixtral's expert_count and expert_used_count);
- tokenizer.ggml.model = gpt2, pre = gpt-2, tokens and merges equal to tokenizer.json's (by id),
  CONTROL type for special tokens, bos/eos = <|endoftext|>;
- the tensor table: the names llama.cpp's llama loader looks up, extents innermost first,
  offsets aligned, inside the file and not overlapping; norms and routers f32, matrices of
  --type; a Mixtral layer's experts stacked in ffn_{gate,up,down}_exps (3-d, expert outermost);
- every tensor's values equal the Transformers tensor (q and k rows permuted to llama.cpp's
  adjacent RoPE pairs, as its convert_hf_to_gguf.py does): exactly in f32, within the type's
  rounding otherwise.
Exits 1 with what differs.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

ALIGN = 32
GGML = {0: "f32", 1: "f16", 8: "q8_0", 30: "bf16"}


class Reader:
    def __init__(self, data):
        self.b, self.p = data, 0

    def take(self, n):
        if self.p + n > len(self.b):
            raise SystemExit(f"truncated at offset {self.p} (wanted {n} bytes)")
        out = self.b[self.p:self.p + n]
        self.p += n
        return out

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self):
        return self.take(self.unpack("Q")).decode("utf-8")

    def value(self, t):
        scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 10: "Q", 11: "q", 12: "d"}
        if t in scalar:
            return self.unpack(scalar[t])
        if t == 7:
            return self.unpack("B") != 0
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.unpack("I"), self.unpack("Q")
            return [self.value(et) for _ in range(n)]
        raise SystemExit(f"unknown metadata type {t} at offset {self.p}")


def read_gguf(path):
    data = open(path, "rb").read()
    r = Reader(data)
    if r.take(4) != b"GGUF":
        raise SystemExit("no GGUF magic")
    version, n_tensors, n_kv = r.unpack("I"), r.unpack("Q"), r.unpack("Q")
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        meta[k] = r.value(r.unpack("I"))
    tensors = {}
    for _ in range(n_tensors):
        name = r.string()
        nd = r.unpack("I")
        ne = [r.unpack("Q") for _ in range(nd)]
        tensors[name] = {"ne": ne, "type": r.unpack("I"), "offset": r.unpack("Q")}
    align = meta.get("general.alignment", ALIGN)
    start = (r.p + align - 1) // align * align
    return data, version, meta, tensors, start, align


def nbytes(t):
    n = int(np.prod(t["ne"]))
    return {0: 4 * n, 1: 2 * n, 30: 2 * n, 8: n // 32 * 34}[t["type"]]


def decode(data, start, t):
    raw = data[start + t["offset"]: start + t["offset"] + nbytes(t)]
    n = int(np.prod(t["ne"]))
    if t["type"] == 0:
        v = np.frombuffer(raw, "<f4").astype(np.float64)
    elif t["type"] == 1:
        v = np.frombuffer(raw, "<f2").astype(np.float64)
    elif t["type"] == 30:
        v = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    else:
        blocks = np.frombuffer(raw, np.uint8).reshape(-1, 34)
        d = blocks[:, :2].copy().view("<f2").astype(np.float64)
        q = blocks[:, 2:].copy().view(np.int8).astype(np.float64)
        v = (d * q).reshape(-1)
    assert v.size == n
    return v.reshape(list(reversed(t["ne"])))  # outermost first, as numpy and Transformers


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32", (name, info["dtype"])
        out[name] = np.frombuffer(data[8 + n + a: 8 + n + b], "<f4").reshape(info["shape"]).astype(np.float64)
    return out


def permute(w, n_head):
    """Transformers' half-split RoPE rows to llama.cpp's adjacent pairs (convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("hf")
    ap.add_argument("--type", required=True, choices=["f32", "f16", "bf16", "q8_0"])
    a = ap.parse_args()
    problems = []

    def check(ok, what):
        if not ok:
            problems.append(what)

    data, version, meta, tensors, start, align = read_gguf(a.gguf)
    cfg = json.load(open(os.path.join(a.hf, "config.json")))
    tok = json.load(open(os.path.join(a.hf, "tokenizer.json")))
    check(version == 3, f"version {version}")
    check(start % align == 0 and align == 32, f"data at {start}, alignment {align}")
    want_meta = {
        "general.architecture": "llama",
        "llama.embedding_length": cfg["hidden_size"],
        "llama.block_count": cfg["num_hidden_layers"],
        "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.attention.head_count": cfg["num_attention_heads"],
        "llama.attention.head_count_kv": cfg["num_key_value_heads"],
        "llama.context_length": cfg["max_position_embeddings"],
        "llama.rope.dimension_count": cfg["hidden_size"] // cfg["num_attention_heads"],
        "llama.vocab_size": cfg["vocab_size"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False,
    }
    moe = cfg.get("model_type") == "mixtral"
    if moe:  # MixtralForCausalLM: llama.cpp's llama architecture with experts
        want_meta.update({"llama.expert_count": cfg["num_local_experts"], "llama.expert_used_count": cfg["num_experts_per_tok"]})
    for k, v in want_meta.items():
        check(meta.get(k) == v, f"metadata {k} = {meta.get(k)!r}, want {v!r}")
    for k, v in (("llama.rope.freq_base", cfg["rope_theta"]), ("llama.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])):
        check(k in meta and abs(meta[k] - v) <= 1e-7 * abs(v), f"metadata {k} = {meta.get(k)!r}, want {v!r} (as f32)")
    # The tokenizer, by id.
    V = cfg["vocab_size"]
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    specials = {a_["id"]: a_["content"] for a_ in tok.get("added_tokens", [])}
    by_id.update(specials)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    check(len(tokens) == V and len(types) == V, f"{len(tokens)} tokens, {len(types)} types for a vocabulary of {V}")
    for i in range(min(V, len(tokens))):
        if i in by_id:
            check(tokens[i] == by_id[i], f"token {i} = {tokens[i]!r}, tokenizer.json has {by_id[i]!r}")
            check(types[i] == (3 if i in specials else 1), f"token {i} has type {types[i]}")
        else:
            check(types[i] == 5, f"token {i} past the tokenizer has type {types[i]}, want UNUSED (5)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    check(meta["tokenizer.ggml.merges"] == merges, "merges differ from tokenizer.json's")
    eot = [i for i, s in specials.items() if s == "<|endoftext|>"]
    check(eot and meta.get("tokenizer.ggml.bos_token_id") == eot[0] and meta.get("tokenizer.ggml.eos_token_id") == eot[0],
          "bos/eos are not <|endoftext|>")
    # The tensor table.
    hf = read_safetensors(os.path.join(a.hf, "model.safetensors"))
    L, H, KV = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    # GGUF name -> (Transformers name, rope heads); a list of names is stacked along a new outer
    # dimension (the experts of a Mixtral layer, as convert_hf_to_gguf.py writes ffn_*_exps).
    names = {"token_embd.weight": ("model.embed_tokens.weight", None), "output_norm.weight": ("model.norm.weight", None)}
    for l in range(L):
        p, g = f"model.layers.{l}.", f"blk.{l}."
        names.update({g + "attn_norm.weight": (p + "input_layernorm.weight", None),
                      g + "attn_q.weight": (p + "self_attn.q_proj.weight", H),
                      g + "attn_k.weight": (p + "self_attn.k_proj.weight", KV),
                      g + "attn_v.weight": (p + "self_attn.v_proj.weight", None),
                      g + "attn_output.weight": (p + "self_attn.o_proj.weight", None),
                      g + "ffn_norm.weight": (p + "post_attention_layernorm.weight", None)})
        if moe:
            e = p + "block_sparse_moe."
            names[g + "ffn_gate_inp.weight"] = (e + "gate.weight", None)
            for gg, w in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                names[g + f"ffn_{gg}_exps.weight"] = ([f"{e}experts.{x}.{w}.weight" for x in range(cfg["num_local_experts"])], None)
        else:
            names.update({g + "ffn_gate.weight": (p + "mlp.gate_proj.weight", None),
                          g + "ffn_up.weight": (p + "mlp.up_proj.weight", None),
                          g + "ffn_down.weight": (p + "mlp.down_proj.weight", None)})
    if "lm_head.weight" in hf:
        names["output.weight"] = ("lm_head.weight", None)
    check(set(tensors) == set(names), f"tensors {sorted(set(tensors) ^ set(names))} differ from llama's")
    spans = []
    for name, t in tensors.items():
        check(t["offset"] % align == 0, f"{name} at offset {t['offset']} is not aligned")
        check(start + t["offset"] + nbytes(t) <= len(data), f"{name} runs past the end of the file")
        spans.append((t["offset"], t["offset"] + nbytes(t), name))
        if name not in names:
            continue
        ref_name, rope_heads = names[name]
        ref = np.stack([hf[n] for n in ref_name]) if isinstance(ref_name, list) else hf[ref_name]
        check(list(reversed(t["ne"])) == list(ref.shape), f"{name} has extents {t['ne']} for {list(ref.shape)}")
        # Vectors and the router stay f32 (as llama.cpp's converter keeps ffn_gate_inp).
        want_type = "f32" if ref.ndim == 1 or name.endswith("ffn_gate_inp.weight") else a.type
        check(GGML.get(t["type"]) == want_type, f"{name} is {GGML.get(t['type'], t['type'])}, want {want_type}")
        if rope_heads:
            ref = permute(ref, rope_heads)
        got = decode(data, start, t)
        err = np.abs(got - ref)
        if want_type == "f32":
            check(np.array_equal(got, ref), f"{name} differs from {ref_name} (max {err.max():.3g})")
        elif want_type == "q8_0":
            # Each block of 32 has the step d = max|x| / 127, stored as f16 (relative error up to
            # 2^-11): half a step, plus up to 127 steps times the scale's rounding.
            d = np.abs(ref).reshape(-1, 32).max(axis=1, keepdims=True) / 127
            bound = d * (0.5 + 127 * 2.0 ** -11) * 1.001 + 1e-12
            check(np.all(err.reshape(-1, 32) <= bound), f"{name}: q8_0 error {err.max():.3g} above half a step")
        else:
            rel = 2.0 ** (-11 if want_type == "f16" else -8)
            check(np.all(err <= rel * np.abs(ref) + 6e-8), f"{name}: {want_type} error {err.max():.3g}")
    spans.sort()
    for (a0, a1, n0), (b0, b1, n1) in zip(spans, spans[1:]):
        check(a1 <= b0, f"{n0} and {n1} overlap")
    if problems:
        print(f"{a.gguf}: {len(problems)} problems", *problems[:20], sep="\n  ")
        sys.exit(1)
    print(f"{a.gguf}: GGUF v{version}, {len(meta)} metadata keys, {len(tensors)} tensors ({a.type}) match {a.hf}")


if __name__ == "__main__":
    main()
