"""Writes PyTorch-layout weights (safetensors) and the outputs numpy computes
for them, for rill's parity test (nodes/ml/tests/parity.rs).

The layouts are PyTorch's: nn.Linear stores weight [out, in], nn.Conv1d
weight [out, in, kernel]; the names are those of torch modules with the
attributes `layers` (MLP), `encoder.layers` / `decoder.layers`
(autoencoder), `convs` / `head` (1-D conv net).

usage: python make_weights.py OUT_DIR
"""

import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(20261124)


def linear(name, n_in, n_out, tensors):
    bound = 1.0 / np.sqrt(n_in)
    tensors[f"{name}.weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
    tensors[f"{name}.bias"] = rng.uniform(-bound, bound, (n_out,)).astype(np.float32)


def apply_linear(name, x, t):
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp(prefix, sizes, tensors):
    for i in range(len(sizes) - 1):
        linear(f"{prefix}layers.{i}", sizes[i], sizes[i + 1], tensors)


def apply_mlp(prefix, sizes, x, t):
    n = len(sizes) - 1
    for i in range(n):
        x = apply_linear(f"{prefix}layers.{i}", x, t)
        if i < n - 1:
            x = relu(x)
    return x


def conv1d_same(x, w, b):
    # x [c_in, L], w [c_out, c_in, k]: zero padding k // 2 on both sides
    c_out, c_in, k = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p)))
    length = x.shape[1]
    out = np.empty((c_out, length), dtype=np.float64)
    for i in range(length):
        out[:, i] = np.tensordot(w, xp[:, i : i + k], axes=([1, 2], [0, 1]))
    return out + b[:, None]


def write(out, name, tensors, arch, inputs, expected):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    save_file(tensors, os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(arch, f)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"inputs": inputs, "expected": expected}, f)


def main(out):
    # MLP classifier 6 -> 16 -> 8 -> 3
    sizes = [6, 16, 8, 3]
    t = {}
    mlp("", sizes, t)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    p = softmax(apply_mlp("", sizes, x.astype(np.float64), t))
    write(out, "mlp", t, {"kind": "mlp", "layers": sizes}, x.tolist(), p.tolist())

    # MLP regressor 5 -> 12 -> 1
    sizes = [5, 12, 1]
    t = {}
    mlp("", sizes, t)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    y = apply_mlp("", sizes, x.astype(np.float64), t)
    write(out, "regress", t, {"kind": "mlp", "layers": sizes}, x.tolist(), y.tolist())

    # autoencoder 8 -> 4 -> 2 | 2 -> 4 -> 8; score = mean squared error
    enc, dec = [8, 4, 2], [2, 4, 8]
    t = {}
    mlp("encoder.", enc, t)
    mlp("decoder.", dec, t)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    xd = x.astype(np.float64)
    r = apply_mlp("decoder.", dec, relu(apply_mlp("encoder.", enc, xd, t)), t)
    score = ((r - xd) ** 2).mean(axis=1)
    arch = {"kind": "autoencoder", "encoder": enc, "decoder": dec}
    write(out, "autoencoder", t, arch, x.tolist(), [[s] for s in score.tolist()])

    # 1-D conv net: 2 -> 6 -> 4 channels, kernel 3, head to 3 classes;
    # sequences of different lengths
    channels, k, outputs = [2, 6, 4], 3, 3
    t = {}
    for i in range(len(channels) - 1):
        c_in, c_out = channels[i], channels[i + 1]
        bound = 1.0 / np.sqrt(c_in * k)
        t[f"convs.{i}.weight"] = rng.uniform(-bound, bound, (c_out, c_in, k)).astype(np.float32)
        t[f"convs.{i}.bias"] = rng.uniform(-bound, bound, (c_out,)).astype(np.float32)
    linear("head", channels[-1], outputs, t)
    inputs, expected = [], []
    for n in range(12):
        length = 3 + (n * 5) % 11
        x = rng.normal(size=(channels[0], length)).astype(np.float32)
        h = x.astype(np.float64)
        for i in range(len(channels) - 1):
            h = relu(conv1d_same(h, t[f"convs.{i}.weight"], t[f"convs.{i}.bias"]))
        pooled = h.mean(axis=1)
        logits = pooled @ t["head.weight"].T + t["head.bias"]
        inputs.append(x.tolist())
        expected.append(softmax(logits[None, :])[0].tolist())
    arch = {"kind": "conv1d", "channels": channels, "kernel_size": k, "outputs": outputs}
    write(out, "conv1d", t, arch, inputs, expected)


if __name__ == "__main__":
    main(sys.argv[1])
