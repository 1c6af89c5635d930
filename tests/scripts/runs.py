"""Reading and comparing training runs, for the test scripts that check one run against another
(distributed.sh, tensor_parallel.sh, nccl_emulated.sh): their losses from metrics.jsonl, their
weights from a checkpoint's safetensors (read with the standard library), and the comparisons with
a stated tolerance. Used as `PYTHONPATH=tests/scripts python3 - <<'PY'` then `from runs import ...`.
"""
import json
import struct


def losses(run):
    """{step: loss, ("val", step): val_loss} from RUN/metrics.jsonl."""
    out = {}
    for line in open(f"{run}/metrics.jsonl"):
        m = json.loads(line)
        if "loss" in m: out[m["step"]] = m["loss"]
        if "val_loss" in m: out[("val", m["step"])] = m["val_loss"]
    return out


def safetensors(path):
    """{name: (shape, values)} of an f32 safetensors file."""
    f = open(path, "rb").read()
    n = struct.unpack("<Q", f[:8])[0]
    header = json.loads(f[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__": continue
        a, b = t["data_offsets"]
        assert t["dtype"] == "F32", (path, name, t["dtype"])
        out[name] = (tuple(t["shape"]), struct.unpack(f"<{(b - a) // 4}f", f[8 + n + a:8 + n + b]))
    return out


def weights(run, step, name="model"):
    """{parameter: values} of RUN's checkpoint at STEP (name: model, optimizer.m, critic/model, ...)."""
    return {k: v for k, (_, v) in safetensors(f"{run}/checkpoints/step_{step:08d}/{name}.safetensors").items()}


def grad_norms(run):
    """{(step, layer): gradient norm} from RUN/internals.jsonl."""
    out = {}
    for line in open(f"{run}/internals.jsonl"):
        rec = json.loads(line)
        for layer in rec["layers"]:
            if "grad_norm" in layer: out[(rec["step"], layer["name"])] = layer["grad_norm"]
    return out


def close(a, b, rel, what):
    """Asserts two {key: value} maps have the same keys and values within REL relative; prints the worst."""
    assert a.keys() == b.keys(), (what, sorted(map(str, a.keys() ^ b.keys())))
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-30) for k in a)
    print(f"{what}: worst relative difference {worst:.2e} (tolerance {rel:.0e})")
    assert worst <= rel, what


def max_weight_diff(a, b):
    """The largest absolute difference between two {parameter: values} maps of the same parameters."""
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    return max(max(abs(x - y) for x, y in zip(a[k], b[k])) for k in a)
