#!/usr/bin/env python3
# Pinned reference versions (asserted at run time):
#   torch==2.15.0
#   transformers==5.25.0
#   (also used: safetensors, tokenizers, numpy)
"""Torch oracle for ERNIE 5.0 audio (spec `ernie5-generation.md` §2, §5.2-5.3, §6).

Builds the tiny random `ernie5` checkpoint `tests/fixtures/ernie5-audio-tiny/` (the ERNIE 4.5 MoE
decoder in transformers' names, per-expert layout, + `audio.embed_tokens`, `audio.head_norms.{q}`,
`audio.heads.{q}`; the moe-f32 tokenizer with `<|BOA|>` / `<|EOA|>` added as special tokens) and
records in `ncp_reference.json`:

* `ncp`: greedy next-codec prediction for a chat prompt + `<|BOA|>` (codes `[Q][frames]`);
* `understanding`: a prompt with codes as audio input → last-row logits and greedy text ids;
* `embedding`: the same clip and text without the generation prompt → the final normalised
  hidden state of the last row and the mean over rows (what `Engine::embed` pools).

RoPE: ERNIE 5.0 uses 3-D RoPE with the 4.5-VL band split; under Uni-RoPE every text and audio
token sits at its running index on all three axes, and the band split only chooses *which axis*
feeds pair m, never its frequency (`theta^(-2m/d)`, as `ops::rope_apply` shows), so with t = h = w
the rotation is exactly 1-D interleaved RoPE: transformers' `Ernie4_5_MoeForCausalLM` modules
(1-D RoPE) are the right oracle.

The NCP oracle has no KV cache: for every frame it recomputes the whole sequence layer by layer
(causal mask), adding each audio row's level-q code embedding after layer a+q (a = L − Q). That is
the same function the cached loop computes (every layer's KV of a frame is the one of its pass),
written independently of it.

Run from the repository root: /work/refenv/bin/python tests/reference/make_ncp_reference.py
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoTokenizer, Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import init_weights, r7_list, to_per_expert_layout, write_json  # noqa: E402

PINNED = {"torch": "2.15.0", "transformers": "5.25.0"}
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "ernie5-audio-tiny"
SRC_TOK = ROOT / "tests" / "fixtures" / "moe-f32"
TOK_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

Q, V = 3, 16  # levels, codebook size
LAYERS = 4  # a = LAYERS - Q = 1
MAX_FRAMES = 8
MIN_FRAMES = 3  # the end-of-audio class must fire (seed search), but not before this many frames
MIN_MARGIN = 2e-3  # top1 - top2 at every greedy choice (f32 noise is ~1e-5 here)
TEXT_STEPS = 8
AUDIO_EMBED_STD = 0.5  # level embeddings large enough to steer the top layers
HEAD_NORM_MEAN = 5.0  # like model.norm: O(4) logits
USER_TEXT = "Say hello in a calm voice."
CAPTION_TEXT = "What is said?"
UNDERSTAND_CODES = [[3, 11, 7, 0], [15, 2, 9, 4], [6, 6, 1, 13]]  # [Q][frames]

CONFIG = {
    "architectures": ["Ernie5ForCausalLM"],
    "model_type": "ernie5",
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "intermediate_size": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "num_hidden_layers": LAYERS,
    "vocab_size": 1016,
    "rope_theta": 1000000.0,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
    "use_bias": False,
    "tie_word_embeddings": False,
    "moe_num_experts": 4,
    "moe_k": 2,
    "moe_intermediate_size": 16,
    "moe_num_shared_experts": 1,
    "moe_layer_start_index": 1,
    "moe_layer_end_index": -1,
    "moe_layer_interval": 1,
    "moe_norm_min": 1e-12,
    "torch_dtype": "float32",
    "audio": {"num_levels": Q, "codebook_size": V, "frame_rate": 12.5, "boa_token": "<|BOA|>", "eoa_token": "<|EOA|>"},
}


def check_versions():
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    for k, want in PINNED.items():
        if got[k] != want:
            sys.exit(f"error: {k}=={got[k]} installed, pinned {want}")
    return got


def write_tokenizer():
    for f in TOK_FILES:
        shutil.copyfile(SRC_TOK / f, OUT / f)
    tj = json.loads((OUT / "tokenizer.json").read_text())
    used = {t["id"] for t in tj["added_tokens"]} | set(tj["model"]["vocab"].values())
    nxt = max(used) + 1
    for content in ("<|BOA|>", "<|EOA|>"):
        if not any(t["content"] == content for t in tj["added_tokens"]):
            tj["added_tokens"].append({"id": nxt, "content": content, "single_word": False, "lstrip": False,
                                       "rstrip": False, "normalized": False, "special": True})
            nxt += 1
    assert nxt <= CONFIG["vocab_size"]
    tc = json.loads((OUT / "tokenizer_config.json").read_text())
    for t in tj["added_tokens"]:
        if t["content"] in ("<|BOA|>", "<|EOA|>"):
            tc.setdefault("added_tokens_decoder", {})[str(t["id"])] = {k: v for k, v in t.items() if k != "id"}
    (OUT / "tokenizer_config.json").write_text(json.dumps(tc, ensure_ascii=False, indent=2) + "\n")
    (OUT / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, indent=2) + "\n")
    write_json(OUT / "generation_config.json", {"bos_token_id": 1, "eos_token_id": [2], "pad_token_id": 0})


def build(seed):
    kw = {k: v for k, v in CONFIG.items() if k not in ("architectures", "model_type", "torch_dtype", "audio", "rope_theta")}
    kw["rope_parameters"] = {"rope_type": "default", "rope_theta": CONFIG["rope_theta"]}
    cfg = Ernie4_5_MoeConfig(**kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Ernie4_5_MoeForCausalLM(cfg).eval()
    init_weights(model, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    H = CONFIG["hidden_size"]
    audio = {"audio.embed_tokens.weight": torch.randn(Q * V, H, generator=g) * AUDIO_EMBED_STD}
    for q in range(Q):
        audio[f"audio.head_norms.{q}.weight"] = torch.randn(H, generator=g) * (0.2 * HEAD_NORM_MEAN) + HEAD_NORM_MEAN
        audio[f"audio.heads.{q}.weight"] = torch.randn(V + 1 if q == 0 else V, H, generator=g) * H ** -0.5
    return model, audio


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def causal(n):
    return torch.full((n, n), float("-inf")).triu(1)[None, None]


def run_layers(model, x, layers):
    """x: [1, n, H] at positions 0..n-1 through `layers` (causal, no cache)."""
    n = x.shape[1]
    pos = torch.arange(n)[None]
    pe = model.model.rotary_emb(x, pos)
    for l in layers:
        x = model.model.layers[l](x, attention_mask=causal(n), position_ids=pos, position_embeddings=pe)
    return x


def margin(logits):
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


@torch.no_grad()
def ncp_oracle(model, audio, prompt_ids, boa):
    """Greedy NCP; returns codes [Q][frames], whether level 0 ended the audio, the smallest margin."""
    eps = CONFIG["rms_norm_eps"]
    a = LAYERS - Q
    E = audio["audio.embed_tokens.weight"]
    ids = torch.tensor(prompt_ids + [boa])
    P = len(prompt_ids)  # row of frame 0 (the <|BOA|> row)
    frames, ended, min_m = [], False, float("inf")
    while len(frames) < MAX_FRAMES:
        rows = [model.model.embed_tokens(ids)]
        for f in frames:  # frame j's summed embedding is frame j+1's input
            rows.append(sum(E[q * V + f[q]] for q in range(Q))[None])
        x = torch.cat(rows)[None]  # [1, P + 1 + len(frames), H]
        x = run_layers(model, x, range(a))
        cur = []
        for q in range(Q):
            x = run_layers(model, x, [a + q])
            logits = audio[f"audio.heads.{q}.weight"] @ rms(x[0, -1], audio[f"audio.head_norms.{q}.weight"], eps)
            c = int(torch.argmax(logits))
            min_m = min(min_m, margin(logits))
            if q == 0 and c == V:
                ended = True
                break
            cur.append(c)
            codes = [f[q] for f in frames] + [c]  # level-q codes of every audio row
            add = torch.stack([E[q * V + cc] for cc in codes])
            x = x.clone()
            x[0, P:] += add
        if ended:
            break
        frames.append(cur)
    return [[f[q] for f in frames] for q in range(Q)], ended, min_m


@torch.no_grad()
def understanding(model, audio, ids, audio_start):
    E = audio["audio.embed_tokens.weight"]
    n_frames = len(UNDERSTAND_CODES[0])
    x = model.model.embed_tokens(torch.tensor(ids)).clone()
    for j in range(n_frames):
        x[audio_start + j] = sum(E[q * V + UNDERSTAND_CODES[q][j]] for q in range(Q))
    first = None
    greedy, min_m = [], float("inf")
    for _ in range(TEXT_STEPS):
        out = model(inputs_embeds=x[None], position_ids=torch.arange(x.shape[0])[None], use_cache=False).logits[0, -1]
        if first is None:
            first = out.clone()
        t = int(torch.argmax(out))
        min_m = min(min_m, margin(out))
        greedy.append(t)
        x = torch.cat([x, model.model.embed_tokens(torch.tensor([t]))])
    return first, greedy, min_m


@torch.no_grad()
def embedding_hidden(model, audio, ids, audio_start):
    """Final normalised hidden states [n, H] of `ids` with the clip's frame rows replaced."""
    E = audio["audio.embed_tokens.weight"]
    x = model.model.embed_tokens(torch.tensor(ids)).clone()
    for j in range(len(UNDERSTAND_CODES[0])):
        x[audio_start + j] = sum(E[q * V + UNDERSTAND_CODES[q][j]] for q in range(Q))
    return model.model(inputs_embeds=x[None], position_ids=torch.arange(x.shape[0])[None], use_cache=False).last_hidden_state[0]


def main():
    versions = check_versions()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    write_tokenizer()
    tok = AutoTokenizer.from_pretrained(OUT)
    boa, eoa = tok.convert_tokens_to_ids("<|BOA|>"), tok.convert_tokens_to_ids("<|EOA|>")
    assert isinstance(boa, int) and isinstance(eoa, int) and boa != tok.unk_token_id and eoa != boa
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids = tok.apply_chat_template([{"role": "user", "content": USER_TEXT}], add_generation_prompt=True, tokenize=True)
    prompt_ids = [int(i) for i in (ids if isinstance(ids, list) else ids["input_ids"])]
    # Understanding layout (spec §5.2, the stream format of tokenizers-mm with audio markers):
    # <|begin_of_sentence|>User: Audio 1:<|BOA|> [frames] <|EOA|>{text}\nAssistant: 
    head = enc("<|begin_of_sentence|>User: Audio 1:<|BOA|>")
    n_frames = len(UNDERSTAND_CODES[0])
    u_ids = head + [0] * n_frames + [eoa] + enc(CAPTION_TEXT + "\nAssistant: ")
    for seed in range(100, 200):
        model, audio = build(seed)
        codes, ended, m_ncp = ncp_oracle(model, audio, prompt_ids, boa)
        if not ended or len(codes[0]) < MIN_FRAMES or m_ncp < MIN_MARGIN:
            continue
        logits, greedy, m_txt = understanding(model, audio, u_ids, len(head))
        if m_txt < MIN_MARGIN:
            continue
        break
    else:
        sys.exit("no seed gave clear margins")
    e_ids = head + [0] * n_frames + [eoa] + enc(CAPTION_TEXT)
    hidden = embedding_hidden(model, audio, e_ids, len(head))
    sd = to_per_expert_layout({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, CONFIG["moe_intermediate_size"])
    sd.update({k: v.contiguous() for k, v in audio.items()})
    save_file(dict(sorted(sd.items())), OUT / "model.safetensors", metadata={"format": "pt"})
    write_json(OUT / "config.json", CONFIG)
    write_json(OUT / "ncp_reference.json", {
        "versions": versions, "seed": seed, "boa_id": boa, "eoa_id": eoa,
        "ncp": {"user_text": USER_TEXT, "prompt_ids": prompt_ids, "max_frames": MAX_FRAMES,
                "codes": codes, "ended_by_level0": ended, "min_margin": m_ncp},
        "understanding": {"text": CAPTION_TEXT, "codes": UNDERSTAND_CODES, "input_ids": u_ids,
                          "audio_start": len(head), "last_logits": r7_list(logits),
                          "greedy_ids": greedy, "min_margin": m_txt},
        "embedding": {"text": CAPTION_TEXT, "input_ids": e_ids, "audio_start": len(head),
                      "last": r7_list(hidden[-1]), "mean": r7_list(hidden.mean(0))},
    })
    print(f"seed {seed}: ncp codes {codes} ended={ended} margin {m_ncp:.4f}; text {greedy} margin {m_txt:.4f}")


if __name__ == "__main__":
    main()
