#!/usr/bin/env python3
# Pinned reference versions (asserted at run time):
#   torch==2.15.0
#   transformers==5.25.0
#   (also used: safetensors, tokenizers, numpy)
"""Torch oracle of the NFSP loop (spec ``shared/spec/ernie5-generation.md`` §3, §6) and the tiny
``ernie5`` checkpoint it runs on.

Writes ``tests/fixtures/ernie5-tiny/``: ``config.json`` (``model_type: ernie5`` with a
``visual_generation`` section), ``model.safetensors`` (ERNIE 4.5 MoE names in the original
per-expert layout, plus ``visual_gen.*``), the tokenizer of ``tests/fixtures/tokenizer/`` with
``<|BOI|>`` / ``<|EOI|>`` added as special tokens, and ``nfsp_golden.json`` (per-scale bits, the
final accumulated latent, the token the sum slot predicts, for greedy runs with cfg 1 and 3, a
greedy top-left run, and a sampled run fed with stored uniforms).

The decoder is transformers' ``Ernie4_5_MoeForCausalLM`` (eager attention). What is patched, and
why (transformers' ERNIE 4.5 MoE has 1-D integer RoPE and a causal mask only):

* ``model.model.rotary_emb`` is replaced by ``RealRope3D``: it ignores ``position_ids`` and returns
  ``cos``/``sin`` for the real-valued ``(t, h, w)`` rows stashed in it, with the ERNIE-4.5-VL band
  split: rotary pair ``m < hw`` takes axis h (m even) or w (m odd), pair ``m >= hw`` axis t;
  angle = ``coord · inv_freq[m]`` in f32 (the same ``inv_freq`` transformers computes). The
  layout (``cat(freqs, freqs)``) is what transformers' ``apply_rotary_pos_emb`` expects, so the
  interleaved rotation itself is unpatched.
* The attention mask is a 4-D additive float mask ``[1, 1, n, n]`` passed as ``attention_mask``
  (transformers returns a 4-D mask as is): row i sees column j iff ``block[j] <= block[i]``, where
  every prompt token is its own block (causal) and the slots of one scale share one block.
* No KV cache: every forward re-runs the whole sequence so far (an independent check of the
  runtime's cached, one-forward-per-scale loop).

The loop (our reading, documented in ``runtime/src/infer/next_scale.rs``): the prompt ends with
``<|BOI|>``, whose input is ``embed[BOI] + scale_embed[0]``; its output predicts scale 1 (1×1).
Scale k ≥ 2 slots: ``word_embed(bilinear(summed → h_k×w_k)) + scale_embed[k-1]`` at centre-aligned
real positions; their outputs predict scale k. Bit logits = ``head(head_norm(norm(x)))`` →
``[cells, d, 2]``; CFG ``cfg·cond + (1−cfg)·uncond``; codes ``(2b − 1)/√d``;
``summed += bilinear(codes → H_f×W_f)``. The sum slot: ``word_embed(area(summed → 1×1)) +
scale_embed[K]`` at the 1×1 centre position; its text-head argmax is recorded.

Run from the repository root: ``/work/refenv/bin/python tests/reference/make_nfsp_reference.py``.
CI never runs it; its outputs are committed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from transformers import AutoTokenizer, Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM

PINNED = {"torch": "2.15.0", "transformers": "5.25.0"}
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reference"))
from generate import init_weights, to_per_expert_layout  # noqa: E402  (our fixture helpers)

OUT = ROOT / "tests" / "fixtures" / "ernie5-tiny"
TOKENIZER_DIR = ROOT / "tests" / "fixtures" / "tokenizer"
USER_MESSAGE = "Draw a small red fox sitting in the snow."
SEED = 5150
BITS = 16
SCALES = [[1, 1], [2, 2], [3, 3], [4, 4]]
MROPE_SECTION = [2, 2, 4]  # [h, w, t] pairs; head_dim 16 = 2 · (2 + 2 + 4)
HW_PAIRS = MROPE_SECTION[0] + MROPE_SECTION[1]
ROPE_THETA = 1000.0  # small, so position shifts of half a cell move the outputs visibly
MIN_MARGIN = 1e-3  # smallest |l1 − l0| accepted at a greedy decision (the Rust side is ~1e-5 away)

BACKBONE = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "num_hidden_layers": 2,
    "use_bias": False,
    "tie_word_embeddings": False,
    "moe_intermediate_size": 16,
    "moe_num_shared_experts": 1,
    "moe_layer_start_index": 1,
    "moe_layer_end_index": -1,
    "moe_layer_interval": 1,
    "moe_norm_min": 1e-12,
}
NUM_EXPERTS, TOP_K = 4, 2


def check_versions():
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if got != PINNED:
        raise SystemExit(f"pinned {PINNED}, found {got}")


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------


def write_tokenizer(out: Path) -> None:
    """The shared fixture tokenizer plus <|BOI|>, <|EOI|> as added special tokens."""
    for name in ["tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copyfile(TOKENIZER_DIR / name, out / name)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|BOI|>", "<|EOI|>")])
    tok.save(str(out / "tokenizer.json"))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    for t in ("<|BOI|>", "<|EOI|>"):
        cfg["added_tokens_decoder"][str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True,
        }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# the patched decoder
# ---------------------------------------------------------------------------------------------


class RealRope3D(torch.nn.Module):
    """cos/sin for real-valued (t, h, w) rows with the 4.5-VL band split (module docs)."""

    def __init__(self, inv_freq: torch.Tensor):
        super().__init__()
        self.inv_freq = inv_freq  # [head_dim / 2] f32, transformers' own
        self.pos = None  # [n, 3] f32, set before each forward

    def forward(self, x, position_ids):
        half = self.inv_freq.shape[0]
        axis = torch.tensor([0 if m >= HW_PAIRS else (1 if m % 2 == 0 else 2) for m in range(half)])
        coord = self.pos[:, axis]  # [n, half]
        freqs = (coord * self.inv_freq[None, :])[None]  # [1, n, half] f32
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


class VisualGen(torch.nn.Module):
    def __init__(self, h: int, d: int, k: int, eps: float, g: torch.Generator):
        super().__init__()
        n = lambda *s, std=1.0, mean=0.0: torch.randn(s, generator=g) * std + mean  # noqa: E731
        self.word_w, self.word_b = n(h, d, std=1.0), n(h, std=0.1)
        self.scale_embed = n(k + 1, h, std=0.5)
        self.head_norm = n(h, std=0.2, mean=1.0)
        self.head_w, self.head_b = n(2 * d, h, std=2.0 * h**-0.5), n(2 * d, std=0.1)
        self.eps = eps

    def word_embed(self, x):  # [n, d] -> [n, H]
        return F.linear(x, self.word_w, self.word_b)

    def bit_logits(self, hidden):  # [n, H] (after the model's norm) -> [n, d, 2]
        var = hidden.pow(2).mean(-1, keepdim=True)
        normed = self.head_norm * (hidden * torch.rsqrt(var + self.eps))
        return F.linear(normed, self.head_w, self.head_b).reshape(hidden.shape[0], -1, 2)

    def tensors(self):
        return {
            "visual_gen.word_embed.weight": self.word_w, "visual_gen.word_embed.bias": self.word_b,
            "visual_gen.scale_embed.weight": self.scale_embed, "visual_gen.head_norm.weight": self.head_norm,
            "visual_gen.head.weight": self.head_w, "visual_gen.head.bias": self.head_b,
        }


class Seq:
    """One sequence (cond or uncond): input rows, real positions, block ids."""

    def __init__(self, model, vg, ids, boi):
        emb = model.model.embed_tokens(torch.tensor(ids))  # [n, H]
        emb[-1] = emb[-1] + vg.scale_embed[0]  # BOI is scale 1's slot
        self.rows = [emb]
        self.pos = [torch.arange(len(ids), dtype=torch.float32)[:, None].repeat(1, 3)]
        self.blocks = list(range(len(ids)))
        self.s = float(len(ids))  # sequence index of BOI + 1

    def add(self, rows, pos):
        self.rows.append(rows)
        self.pos.append(pos)
        self.blocks += [self.blocks[-1] + 1] * rows.shape[0]

    def forward(self, model, rope):
        x = torch.cat(self.rows)[None]
        rope.pos = torch.cat(self.pos)
        b = torch.tensor(self.blocks)
        mask = torch.where(b[None, :] <= b[:, None], 0.0, torch.finfo(torch.float32).min)[None, None]
        out = model.model(inputs_embeds=x, attention_mask=mask, position_ids=torch.zeros(1, x.shape[1], dtype=torch.long), use_cache=False)
        return out.last_hidden_state[0]  # [n, H], after the final norm


def slot_positions(s, hk, wk, hf, wf, center=True):
    rows = []
    for i in range(hk):
        for j in range(wk):
            if center:
                h = s + (i + 0.5) * hf / hk - 0.5
                w = s + (j + 0.5) * wf / wk - 0.5
            else:
                h, w = s + i * hf / hk, s + j * wf / wk
            rows.append([s, h, w])
    # Formed in f64 as written, then rounded once to f32 (the runtime does the same).
    return torch.tensor(rows, dtype=torch.float64).to(torch.float32)


@torch.no_grad()
def nfsp(model, vg, rope, prompt_ids, uncond_ids, cfg_scale, tau=0.0, top_p=1.0, uniforms=None, center=True):
    d, (hf, wf) = BITS, SCALES[-1]
    seqs = [Seq(model, vg, prompt_ids, None)] + ([Seq(model, vg, uncond_ids, None)] if cfg_scale != 1.0 else [])
    summed = torch.zeros(d, hf, wf)
    bits_out, margins, u_at = [], [], 0
    for k, (hk, wk) in enumerate(SCALES):
        logits = []
        for sq in seqs:
            if k > 0:
                inp = F.interpolate(summed[None], size=(hk, wk), mode="bilinear", align_corners=False)[0]
                inp = vg.word_embed(inp.reshape(d, hk * wk).T) + vg.scale_embed[k]  # [cells, H]
                sq.add(inp, slot_positions(sq.s, hk, wk, hf, wf, center))
            hidden = sq.forward(model, rope)[-hk * wk:]
            logits.append(vg.bit_logits(hidden))  # [cells, d, 2]
        lg = logits[0] if len(logits) == 1 else cfg_scale * logits[0] + (1.0 - cfg_scale) * logits[1]
        if tau == 0.0:
            bits = (lg[..., 1] > lg[..., 0]).to(torch.int64)  # argmax, ties -> 0
            margins.append((lg[..., 1] - lg[..., 0]).abs().min().item())
        else:
            p1 = torch.softmax(lg / tau, dim=-1)[..., 1]
            p1 = torch.where(p1 <= 1 - top_p, torch.zeros_like(p1), p1)
            p1 = torch.where((1 - p1) <= 1 - top_p, torch.ones_like(p1), p1)
            u = torch.tensor(uniforms[u_at:u_at + p1.numel()], dtype=torch.float32).reshape(p1.shape)
            u_at += p1.numel()
            bits = (u < p1).to(torch.int64)
            margins.append((u - p1).abs().min().item())
        bits_out.append(bits.flatten().tolist())  # [cells, d] row-major
        codes = (2 * bits - 1).to(torch.float32) / math.sqrt(d)  # [cells, d]
        codes = codes.T.reshape(d, hk, wk)
        summed = summed + F.interpolate(codes[None], size=(hf, wf), mode="bilinear", align_corners=False)[0]
    # The sum slot (cond sequence only: it predicts EOI with the text head).
    sq = seqs[0]
    pooled = F.interpolate(summed[None], size=(1, 1), mode="area")[0].reshape(d, 1).T
    sq.add(vg.word_embed(pooled) + vg.scale_embed[len(SCALES)], slot_positions(sq.s, 1, 1, hf, wf, center))
    hidden = sq.forward(model, rope)[-1:]
    end_token = int(model.lm_head(hidden).argmax(-1).item())
    return {"bits": bits_out, "latent": summed.flatten().tolist(), "end_token": end_token, "min_margin": min(margins)}


def try_seed(seed, vocab, prompt_ids, uncond_ids):
    """Model, head and the four runs for `seed`, or None when a decision is within MIN_MARGIN."""
    config = Ernie4_5_MoeConfig(
        **BACKBONE, vocab_size=vocab, num_experts=NUM_EXPERTS, num_experts_per_tok=TOP_K,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Ernie4_5_MoeForCausalLM(config).eval()
    init_weights(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    vg = VisualGen(BACKBONE["hidden_size"], BITS, len(SCALES), BACKBONE["rms_norm_eps"], g)
    rope = RealRope3D(model.model.rotary_emb.inv_freq.clone())
    model.model.rotary_emb = rope

    uniforms = torch.rand(sum(h * w for h, w in SCALES) * BITS, generator=g).tolist()
    runs = []
    for name, kw in [
        ("greedy_cfg1", dict(cfg_scale=1.0)),
        ("greedy_cfg3", dict(cfg_scale=3.0)),
        ("greedy_cfg1_top_left", dict(cfg_scale=1.0, center=False)),
        ("sampled_cfg3_uniforms", dict(cfg_scale=3.0, tau=1.0, top_p=0.9, uniforms=uniforms)),
    ]:
        r = nfsp(model, vg, rope, prompt_ids, uncond_ids, **kw)
        if r["min_margin"] <= MIN_MARGIN:
            return None
        runs.append({"name": name, "cfg": kw["cfg_scale"], "temperature": kw.get("tau", 0.0), "top_p": kw.get("top_p", 1.0),
                     "scale_positions": "center" if kw.get("center", True) else "top_left", **r})
        print(name, "min margin", r["min_margin"], "end token", r["end_token"])
    assert runs[0]["bits"] != runs[2]["bits"], "top-left positions gave the centre run's bits; the position test would be void"

    return model, vg, uniforms, runs


def resample_golden():
    """torch F.interpolate (bilinear, align_corners=False, no antialias; and area) on seeded input."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 5, 7, generator=g)  # [c, h, w]
    cases = []
    for size in [(1, 1), (2, 3), (4, 4), (5, 7), (8, 11), (13, 9), (3, 14)]:
        y = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        cases.append({"mode": "bilinear", "size": list(size), "out": y.flatten().tolist()})
    y = F.interpolate(x[None], size=(1, 1), mode="area")[0]
    cases.append({"mode": "area", "size": [1, 1], "out": y.flatten().tolist()})
    return {"input_shape": list(x.shape), "input": x.flatten().tolist(), "cases": cases}


def main():
    check_versions()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    write_tokenizer(OUT)
    tok = AutoTokenizer.from_pretrained(OUT)
    boi, eoi = tok.convert_tokens_to_ids("<|BOI|>"), tok.convert_tokens_to_ids("<|EOI|>")
    bos = tok.convert_tokens_to_ids("<|begin_of_sentence|>")
    ids = tok.apply_chat_template([{"role": "user", "content": USER_MESSAGE}], add_generation_prompt=True, tokenize=True)
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    prompt_ids = [int(i) for i in ids] + [boi]
    uncond_ids = [bos, boi]
    vocab = (len(tok) + 7) // 8 * 8

    for seed in range(SEED, SEED + 64):
        found = try_seed(seed, vocab, prompt_ids, uncond_ids)
        if found is not None:
            break
        print("seed", seed, "rejected: a decision too close to its threshold")
    else:
        raise SystemExit("no seed gave clear margins")
    model, vg, uniforms, runs = found
    sd = to_per_expert_layout({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, BACKBONE["moe_intermediate_size"])
    sd.update({k: v.contiguous() for k, v in vg.tensors().items()})
    save_file(dict(sorted(sd.items())), OUT / "model.safetensors", metadata={"format": "pt"})
    cfg = {
        "architectures": ["Ernie5ForCausalLM"], "model_type": "ernie5", **BACKBONE, "vocab_size": vocab,
        "moe_num_experts": NUM_EXPERTS, "moe_k": TOP_K, "rope_theta": ROPE_THETA,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE_SECTION},
        "visual_generation": {"bits": BITS, "scales": SCALES, "resample": "bilinear", "scale_positions": "center",
                              "boi_token": "<|BOI|>", "eoi_token": "<|EOI|>"},
        "torch_dtype": "float32",
    }
    (OUT / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (OUT / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [2], "pad_token_id": 0}) + "\n")
    golden = {"versions": PINNED, "seed": seed, "user_message": USER_MESSAGE, "prompt_ids": prompt_ids,
              "uncond_ids": uncond_ids, "boi": boi, "eoi": eoi, "uniforms": uniforms, "runs": runs}
    (OUT / "nfsp_golden.json").write_text(json.dumps(golden) + "\n")
    (OUT / "resample_golden.json").write_text(json.dumps(resample_golden()) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
