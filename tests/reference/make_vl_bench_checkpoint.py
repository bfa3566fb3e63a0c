"""Write a 4-layer ERNIE-4.5-VL-28B-A3B-shaped checkpoint with random bf16 weights, for memory benchmarks.

Purpose: back the requirement that weights stay memory-mapped (a 28B-A3B-shaped checkpoint must not
need more resident memory than its bf16 size plus the KV cache) with a measurement of the peak RSS
of `ernie caption` on a checkpoint that has the real shapes but only 4 decoder layers.

Shapes are those of baidu/ERNIE-4.5-VL-28B-A3B (spec §3.1, = the defaults of transformers'
Ernie4_5_VLMoeConfig) except num_hidden_layers = 4, mlp_layer_types ["dense", "sparse" x3]:
text hidden 2560, intermediate 12288, 20/4 heads of 128, vocab 103424, tied head, 64 text experts
of width 1536 + 64 vision experts of width 512 per sparse layer, top-6, 2 shared experts,
mrope_section [22, 22, 20]; vision tower depth 32, hidden 1280, 16 heads, intermediate 5120,
patch 14, spatial/temporal merge 2, quick_gelu; real token ids (image placeholder 100295, ...).
Tensor names, shapes and dtypes are taken from transformers itself (the model is built on the
`meta` device, nothing allocated): the transformers-5.x layout, stacked experts, bf16 weights with
the routers (`gate.weight`, `e_score_correction_bias`) in f32 as transformers keeps them.
Weights are N(0, 0.02) (norm scales 1, routers N(0, 0.05), correction biases N(0, 0.001)), written
tensor by tensor in chunks into safetensors shards of at most --shard-gb GB (default 3) plus
`model.safetensors.index.json`; at most one shard is held in memory. About 8.6 GB on disk; write it
outside the repository and never commit it.

Tokenizer: the 1010-piece BPE of tests/fixtures/vl-preprocess with its named special tokens moved to
the real ERNIE ids (<|IMAGE_PLACEHOLDER|> 100295, <|IMAGE_START|> 101304, ... see SPECIAL_IDS), so
that the token ids of config.json and the tokenizer agree. generation_config.json has no eos: the
benchmark always runs the full token budget.

Pinned versions (the reference env /work/refenv): Python 3.11, torch 2.15 (CPU), transformers 5.24,
safetensors, tokenizers (as installed with transformers 5.24).

Usage, from the repo root:
    /work/refenv/bin/python tests/reference/make_vl_bench_checkpoint.py [OUT_DIR] [--shard-gb 3]
OUT_DIR defaults to /work/bench-vl28.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

LAYERS = 4
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

# Real ERNIE-4.5 ids of the named special tokens (spec §3.1, §4); all < vocab 103424.
SPECIAL_IDS = {
    "<|end_of_sentence|>": 100272,
    "<|begin_of_sentence|>": 100273,
    "<|IMAGE_PLACEHOLDER|>": 100295,
    "<|IMAGE_START|>": 101304,
    "<|IMAGE_END|>": 101305,
    "<|VIDEO_START|>": 101306,
    "<|VIDEO_END|>": 101307,
    "<|VIDEO_PLACEHOLDER|>": 103367,
}


def make_config():
    cfg = Ernie4_5_VLMoeConfig(
        text_config=dict(
            num_hidden_layers=LAYERS,
            mlp_layer_types=["dense"] + ["sparse"] * (LAYERS - 1),
            rope_parameters=dict(rope_type="default", rope_theta=500000.0, mrope_section=[22, 22, 20]),
            bos_token_id=1,
            eos_token_id=[2, SPECIAL_IDS["<|end_of_sentence|>"]],
            pad_token_id=0,
        ),
    )
    cfg.architectures = ["Ernie4_5_VLMoeForConditionalGeneration"]
    cfg.dtype = "bfloat16"
    return cfg


def tensor_specs(cfg):
    """(name, shape, dtype) in state_dict order, from a meta-device model; tied lm_head skipped."""
    with torch.device("meta"):
        model = Ernie4_5_VLMoeForConditionalGeneration(cfg)
    keep_f32 = model._keep_in_fp32_modules_strict or set()
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    specs = []
    for name, t in model.state_dict().items():
        if name in tied:
            continue
        f32 = any(name.endswith(k) or f".{k}." in name for k in keep_f32)
        specs.append((name, tuple(t.shape), torch.float32 if f32 else torch.bfloat16))
    return specs


def fill(name, shape, dtype, chunk=1 << 24):
    """A new tensor of `shape`/`dtype` filled chunk by chunk (bounded temporaries)."""
    if name.endswith("e_score_correction_bias"):
        return torch.randn(shape, dtype=dtype) * 0.001
    if name.endswith("gate.weight") and dtype == torch.float32:
        return torch.randn(shape, dtype=dtype) * 0.05
    is_norm_scale = name.endswith(".weight") and (
        "norm" in name.rsplit(".", 2)[-2] or name.rsplit(".", 2)[-2] == "ln")
    if is_norm_scale:
        return torch.ones(shape, dtype=dtype)
    out = torch.empty(shape, dtype=dtype)
    flat = out.view(-1)
    for s in range(0, flat.numel(), chunk):
        n = min(chunk, flat.numel() - s)
        flat[s:s + n] = torch.randn(n, dtype=dtype).mul_(0.02)
    return out


def nbytes(shape, dtype):
    n = 1
    for d in shape:
        n *= d
    return n * (4 if dtype == torch.float32 else 2)


def write_weights(out, specs, shard_bytes):
    shards, cur, size = [], [], 0
    for spec in specs:
        b = nbytes(spec[1], spec[2])
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(spec)
        size += b
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: fill(name, shape, dtype) for name, shape, dtype in shard}
        save_file(tensors, os.path.join(out, fn), metadata={"format": "pt"})
        del tensors
        for name, shape, dtype in shard:
            weight_map[name] = fn
            total += nbytes(shape, dtype)
        print(f"  {fn}: {len(shard)} tensors, {sum(nbytes(s, d) for _, s, d in shard) / 1e9:.2f} GB", flush=True)
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total


def write_tokenizer(out):
    """The vl-preprocess BPE with the named special tokens moved to their real ids."""
    src = os.path.join(FIXTURES, "vl-preprocess")
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    # tokenizers ignores the ids of `added_tokens` when loading: an added token takes its id from
    # the model vocabulary when it is there (as in the real ERNIE tokenizer, whose 103424-entry
    # vocabulary holds them), else the next free id. So move the entries of the model vocabulary
    # too; the old ids (3, 4, 8..13) are left as holes, never produced.
    for content, i in SPECIAL_IDS.items():
        assert content in vocab
        vocab[content] = i
    for t in tok["added_tokens"]:
        if t["content"] in SPECIAL_IDS:
            t["id"] = SPECIAL_IDS[t["content"]]
    tok["added_tokens"].sort(key=lambda t: t["id"])
    ids = [t["id"] for t in tok["added_tokens"]]
    assert len(set(ids)) == len(ids) and len(set(vocab.values())) == len(vocab), "ids must stay unique"
    assert not set(SPECIAL_IDS.values()) & {v for k, v in vocab.items() if k not in SPECIAL_IDS}
    assert max(ids) < 103424
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)

    with open(os.path.join(src, "tokenizer_config.json")) as f:
        tc = json.load(f)
    dec = {}
    for k, v in tc["added_tokens_decoder"].items():
        dec[str(SPECIAL_IDS.get(v["content"], int(k)))] = v
    tc["added_tokens_decoder"] = dict(sorted(dec.items(), key=lambda kv: int(kv[0])))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2, ensure_ascii=False)
    shutil.copy(os.path.join(src, "special_tokens_map.json"), out)

    from tokenizers import Tokenizer  # the HF library must still load it

    t = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    for content, i in SPECIAL_IDS.items():
        assert t.token_to_id(content) == i, (content, t.token_to_id(content))
    enc = t.encode("Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>")
    assert enc.ids[-3:] == [101304, 100295, 101305], enc.ids


def write_processor_configs(out):
    # Image processor: the real HF defaults (min 56*56, max 28*28*6177 pixels).
    shutil.copy(os.path.join(FIXTURES, "vl-preprocess", "preprocessor_config.json"), out)
    # Video processor: the fixture's file with the real HF default frame sizes.
    with open(os.path.join(FIXTURES, "vl-moe-f32", "video_preprocessor_config.json")) as f:
        v = json.load(f)
    v["size"] = {"longest_edge": 1196 * 28 * 28, "shortest_edge": 299 * 28 * 28}
    with open(os.path.join(out, "video_preprocessor_config.json"), "w") as f:
        json.dump(v, f, indent=2)
    shutil.copy(os.path.join(FIXTURES, "vl-moe-f32", "chat_template.jinja"), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="/work/bench-vl28")
    ap.add_argument("--shard-gb", type=float, default=3.0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    cfg = make_config()
    specs = tensor_specs(cfg)
    total = write_weights(args.out, specs, int(args.shard_gb * 1e9))
    cfg.save_pretrained(args.out)  # config.json
    # No eos: the benchmark always runs the full token budget.
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": [], "pad_token_id": 0}, f)
    write_tokenizer(args.out)
    write_processor_configs(args.out)
    print(f"wrote {args.out} ({len(specs)} tensors, {total / 1e9:.2f} GB of weights)")


if __name__ == "__main__":
    main()
