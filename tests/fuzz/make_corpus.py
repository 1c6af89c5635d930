#!/usr/bin/env python3
"""The hand-made part of the seed corpora (tests/fuzz/README.md): small, valid examples of the
binary and JSON formats, written byte by byte from their specifications so that each seed is a
few hundred bytes (libFuzzer mutates small inputs fastest). make_corpus.sh adds the seeds that
llmtk itself writes (tokenizers, recipes, checkpoints, exports). Deterministic: run it again and
git sees no change."""
import json
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)


# ---- safetensors: u64 header length, JSON header, data ------------------------------------------
def safetensors(tensors, metadata=None, pad=True):
    header, blob = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


f32 = lambda *v: struct.pack("<%df" % len(v), *v)
put("safetensors", "params", safetensors({"a": ("F32", [2, 3], f32(1, 2, 3, 4, 5, 6)), "b": ("F32", [4], f32(.5, -.5, 0, 1))},
                                         {"format": "pt", "step": "10"}))
put("safetensors", "extra", safetensors({"a": ("F32", [2, 3], f32(*range(6))), "b": ("F32", [4], f32(*range(4))),
                                         "c": ("F32", [1], f32(7))}))
put("safetensors", "bf16", safetensors({"a": ("BF16", [2, 3], b"\x80\x3f" * 6), "b": ("F32", [4], f32(*range(4)))}))
put("safetensors", "scalar", safetensors({"a": ("F32", [], f32(1)), "b": ("I32", [2], struct.pack("<2i", 1, -1))}, pad=False))
put("safetensors", "empty", safetensors({}))

# ---- token shards: the 64-byte header of framework/data/shard.hpp, tokens, loss mask ------------
def shard(tokens, width=2, mask=None, vocab=300, eot=0, h=0x1234_5678_9ABC_DEF0):
    version, flags = (2, 1) if mask is not None else (1, 0)
    docs = sum(1 for t in tokens if t == eot)
    head = b"LLMTKTOK" + struct.pack("<IIQQIIQI12x", version, width, len(tokens), h, vocab, eot, docs, flags)
    assert len(head) == 64
    body = struct.pack("<%d%s" % (len(tokens), "H" if width == 2 else "I"), *tokens)
    return head + body + (bytes(mask) if mask is not None else b"")


doc = [0, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0, 30, 31, 32, 33, 34, 35, 36, 37, 0, 40, 41, 42, 43, 44, 45, 46, 47, 48]
put("shard", "u16", shard(doc))
put("shard", "u32", shard(doc, width=4, vocab=70000))
put("shard", "sft", shard(doc, mask=[0] + [0] * 5 + [1] * 6 + [0] * 4 + [1] * 5 + [0] * 10))
put("shard", "short_docs", shard([0, 1, 0, 2, 0, 3, 0, 4, 5, 0, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]))

# ---- --set values: one assignment per line ------------------------------------------------------
put("set", "lr", "optim.lr=3e-4\n")
put("set", "several", "train.steps=5\nmodel.arch=llama-tiny\ntrain.batch=2\ntrain.seq=32\nname=run1\n")
put("set", "strings", "data.dir=\"data/other\"\nschedule.kind=cosine\noptim.betas=[0.9, 0.95]\n")
put("set", "tables", "log.every=1\neval.every=5\ncheckpoint.every=5\ncheckpoint.keep=2\nmodel.dims={d_model = 32}\n")

# ---- GPT-2's files: encoder.json, a line "=====", vocab.bpe -----------------------------------
def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b), cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


chars = byte_chars()
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r")]
enc = {c: i for i, c in enumerate(chars)}
for a, b in merges:
    enc[a + b] = len(enc)
enc["<|endoftext|>"] = len(enc)
put("gpt2_bpe", "small", json.dumps(enc, ensure_ascii=False) + "\n=====\n#version: 0.2\n" +
    "".join(f"{a} {b}\n" for a, b in merges))
put("gpt2_bpe", "no_merges", json.dumps({c: i for i, c in enumerate(chars)}, ensure_ascii=False) + "\n=====\n#version: 0.2\n")

# ---- Transformers config.json, one per family llmtk imports ---------------------------------------
configs = {
    "gpt2": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2, "n_head": 4,
             "vocab_size": 300, "n_positions": 128, "n_inner": None, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"},
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 172, "vocab_size": 300,
              "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": True, "rope_scaling": None},
    "mixtral": {"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 128, "vocab_size": 300,
                "max_position_embeddings": 128, "num_local_experts": 4, "num_experts_per_tok": 2,
                "router_aux_loss_coef": 0.01, "sliding_window": None, "tie_word_embeddings": False},
    "bert": {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "hidden_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 300,
             "max_position_embeddings": 128, "type_vocab_size": 2, "hidden_act": "gelu_new",
             "id2label": {"0": "old", "1": "new"}, "position_embedding_type": "absolute"},
    "t5": {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 64, "num_layers": 2,
           "num_decoder_layers": 2, "num_heads": 4, "d_kv": 16, "d_ff": 256, "vocab_size": 300,
           "feed_forward_proj": "relu", "tie_word_embeddings": True, "relative_attention_num_buckets": 32,
           "relative_attention_max_distance": 128},
}
for name, c in configs.items():
    put("hf_config", name, json.dumps(c, indent=2) + "\n")

# ---- JSON Lines: conversations, preferences, replies, labelled texts, multiple choice ------------
put("jsonl", "chat", "\n".join(json.dumps(r) for r in [
    {"messages": [{"role": "user", "content": "Which book begins: In the beginning?"}, {"role": "assistant", "content": "Genesis"}]},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Next verse?"},
                  {"role": "assistant", "content": "And the earth was without form."}], "ref": "Gen 1:2"},
    {"instruction": "Define: light", "input": "", "output": "electromagnetic radiation that can produce a visual sensation"}]) + "\n")
put("jsonl", "preference", "\n".join(json.dumps(r) for r in [
    {"prompt": "Which book: Jesus wept.", "chosen": "John", "rejected": "Luke"},
    {"prompt": [{"role": "user", "content": "Next verse?"}], "chosen": [{"role": "assistant", "content": "A"}],
     "rejected": [{"role": "assistant", "content": "B"}]}]) + "\n")
put("jsonl", "replies", "\n".join(json.dumps(r) for r in [
    {"prompt": "Which book: Jesus wept.", "completion": "John"},
    {"messages": [{"role": "user", "content": "Which book?"}, {"role": "assistant", "content": "Luke"}]}]) + "\n")
put("jsonl", "labelled", "\n".join(json.dumps(r) for r in [
    {"text": "In the beginning God created the heaven and the earth.", "label": "old"},
    {"text": "Jesus wept.", "label": "new"}, {"text": "Blessed are the meek.", "label": "new"}]) + "\n")
put("jsonl", "choices", "\n".join(json.dumps(r) for r in [
    {"context": "In the beginning God created", "endings": [" the heaven and the earth.", " a fish."], "label": 0, "ref": "Gen 1:1"},
    {"context": "Jesus", "endings": [" slept.", " wept.", " ran."], "label": 1}]) + "\n")
