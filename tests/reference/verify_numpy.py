#!/usr/bin/env python3
"""Independent NumPy re-implementation of the ERNIE 4.5 text forward pass
(shared/spec/ernie-architecture.md §2.4), used to cross-check the committed fixtures.

It reads only what the Rust runtime reads (config.json, *.safetensors, expected.json),
in every spelling the fixtures use (4.x/5.x config keys, per-expert/stacked experts,
single/sharded files, tied/untied head), runs the math in float32 without any
transformers code, and compares against expected.json: full-prompt logits, MoE expert
ids + routing weights, and the greedy continuation (recomputed without a KV cache).

Run from the repository root (needs only numpy):

    python tests/reference/verify_numpy.py [FIXTURE ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
LOGIT_ATOL = 2e-4


def load_tensors(d: Path) -> dict[str, np.ndarray]:
    index = d / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_any(d / f))
    return out


def load_any(path: Path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader (F32 / BF16) so bf16 needs no torch."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = data[a:b]
        if info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4")
        elif info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: unsupported dtype {info['dtype']}")
        out[name] = arr.reshape(info["shape"]).astype(np.float32)
    return out


class Cfg:
    def __init__(self, d: dict):
        self.H = d["hidden_size"]
        self.L = d["num_hidden_layers"]
        self.nh = d["num_attention_heads"]
        self.nkv = d.get("num_key_value_heads") or self.nh
        self.hd = d.get("head_dim") or self.H // self.nh
        self.eps = d.get("rms_norm_eps", 1e-5)
        rp = d.get("rope_parameters") or {}
        self.theta = rp.get("rope_theta", d.get("rope_theta", 500000.0))
        self.tied = d.get("tie_word_embeddings", True)
        self.moe = d["model_type"] == "ernie4_5_moe"
        self.E = d.get("moe_num_experts", d.get("num_experts"))
        self.k = d.get("moe_k", d.get("num_experts_per_tok"))
        self.start = d.get("moe_layer_start_index", 1)
        end = d.get("moe_layer_end_index", -1)
        self.end = self.L - 1 if end == -1 else end
        self.interval = d.get("moe_layer_interval", 1)
        self.norm_min = d.get("moe_norm_min", 1e-12)

    def is_moe(self, i: int) -> bool:
        return self.moe and (i + 1) % self.interval == 0 and self.start <= i <= self.end


def rmsnorm(x, w, eps):
    return (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)) * w


def linear(x, W, prefix_bias=None):
    y = x @ W.T
    return y if prefix_bias is None else y + prefix_bias


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope(x, theta):
    """Interleaved (GPT-J) RoPE on [T, heads, hd]: pairs (2m, 2m+1)."""
    T, _, hd = x.shape
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    ang = np.arange(T, dtype=np.float32)[:, None] * inv[None, :]  # [T, hd/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x1 * c + x0 * s
    return y


class Model:
    def __init__(self, d: Path):
        self.cfg = Cfg(json.loads((d / "config.json").read_text()))
        self.w = load_tensors(d)

    def get(self, name):
        return self.w.get(name)

    def mlp(self, x, p):
        g = linear(x, self.w[p + "gate_proj.weight"], self.get(p + "gate_proj.bias"))
        u = linear(x, self.w[p + "up_proj.weight"], self.get(p + "up_proj.bias"))
        return linear(silu(g) * u, self.w[p + "down_proj.weight"], self.get(p + "down_proj.bias"))

    def expert(self, p, e):
        """(gate [I,H], up [I,H], down [H,I]) of expert e in either layout."""
        if p + "experts.gate_up_proj" in self.w:
            gu = self.w[p + "experts.gate_up_proj"][e]
            half = gu.shape[0] // 2
            return gu[:half], gu[half:], self.w[p + "experts.down_proj"][e]
        q = f"{p}experts.{e}."
        return self.w[q + "gate_proj.weight"], self.w[q + "up_proj.weight"], self.w[q + "down_proj.weight"]

    def moe(self, x, p, trace):
        c = self.cfg
        bias = self.get(p + "moe_statics.e_score_correction_bias")
        if bias is None:
            bias = self.w[p + "gate.moe_statics.e_score_correction_bias"]
        logits = x @ self.w[p + "gate.weight"].T
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        scores = probs + bias.reshape(-1)
        sel = np.argsort(-scores, axis=-1, kind="stable")[:, : c.k]
        wsel = np.take_along_axis(probs, sel, -1)
        wsel = wsel / np.maximum(wsel.sum(-1, keepdims=True), c.norm_min)
        trace.append((sel, wsel))
        y = np.zeros_like(x)
        for t in range(x.shape[0]):
            for j in range(c.k):
                g, u, dn = self.expert(p, sel[t, j])
                y[t] += wsel[t, j] * ((silu(g @ x[t]) * (u @ x[t])) @ dn.T)
        if p + "shared_experts.gate_proj.weight" in self.w:
            y += self.mlp(x, p + "shared_experts.")
        return y

    def attention(self, x, p):
        c = self.cfg
        T = x.shape[0]
        q = linear(x, self.w[p + "q_proj.weight"], self.get(p + "q_proj.bias")).reshape(T, c.nh, c.hd)
        k = linear(x, self.w[p + "k_proj.weight"], self.get(p + "k_proj.bias")).reshape(T, c.nkv, c.hd)
        v = linear(x, self.w[p + "v_proj.weight"], self.get(p + "v_proj.bias")).reshape(T, c.nkv, c.hd)
        q, k = rope(q, c.theta), rope(k, c.theta)
        group = c.nh // c.nkv
        out = np.empty((T, c.nh, c.hd), dtype=np.float32)
        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        for h in range(c.nh):
            kv = h // group
            s = (q[:, h] @ k[:, kv].T) * c.hd**-0.5 + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, h] = s @ v[:, kv]
        return linear(out.reshape(T, -1), self.w[p + "o_proj.weight"], self.get(p + "o_proj.bias"))

    def forward(self, ids):
        c = self.cfg
        h = self.w["model.embed_tokens.weight"][ids]
        traces = {}
        for i in range(c.L):
            p = f"model.layers.{i}."
            h = h + self.attention(rmsnorm(h, self.w[p + "input_layernorm.weight"], c.eps), p + "self_attn.")
            f = rmsnorm(h, self.w[p + "post_attention_layernorm.weight"], c.eps)
            if c.is_moe(i):
                traces[i] = []
                h = h + self.moe(f, p + "mlp.", traces[i])
            else:
                h = h + self.mlp(f, p + "mlp.")
        h = rmsnorm(h, self.w["model.norm.weight"], c.eps)
        head = self.w["model.embed_tokens.weight"] if c.tied else self.w["lm_head.weight"]
        logits = h @ head.T
        if "lm_head.bias" in self.w:
            logits = logits + self.w["lm_head.bias"]
        return logits, traces


def verify(name: str) -> None:
    d = FIXTURES_DIR / name
    exp = json.loads((d / "expected.json").read_text())
    m = Model(d)
    ids = exp["prompt_ids"]
    logits, traces = m.forward(ids)
    diff = np.abs(logits - np.array(exp["logits"], dtype=np.float32)).max()
    assert diff < LOGIT_ATOL, f"{name}: prompt logits differ by {diff}"
    for layer, (sel, w) in ((i, t[0]) for i, t in traces.items()):
        assert sel.tolist() == exp["expert_ids"][str(layer)], f"{name}: expert ids differ in layer {layer}"
        wd = np.abs(w - np.array(exp["routing_weights"][str(layer)])).max()
        assert wd < 1e-5, f"{name}: routing weights differ by {wd} in layer {layer}"
    seq = list(ids)
    for _ in exp["greedy_ids"]:
        seq.append(int(m.forward(seq)[0][-1].argmax()))
    assert seq[len(ids) :] == exp["greedy_ids"], f"{name}: greedy ids differ"
    print(f"{name}: ok (max |logit diff| {diff:.2e}, {len(traces)} MoE layers, {len(exp['greedy_ids'])} greedy tokens)")


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(p.parent.name for p in FIXTURES_DIR.glob("*/expected.json"))
    for n in names:
        verify(n)
