#!/usr/bin/env python3
"""GGUF fixtures and llama.cpp goldens for `ernie generate --model FILE.gguf` (issue #13 part 3).

Reference: llama.cpp from the pinned PyPI sdist
    llama-cpp-python==0.3.36  (sha256 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e)
    -> vendor/llama.cpp: convert_hf_to_gguf.py (conversion/ernie.py), gguf-py 0.19.0,
       llama-quantize, libllama (called through the sdist's own ctypes bindings, llama_cpp/llama_cpp.py).
Build it as tests/reference/make_quant_reference.py says (outside the repo; CI never runs this).
Needs only the reference venv (torch, safetensors, numpy, sentencepiece, transformers for the HF
tokenizer ids); nothing else is installed.

Run:
    LLAMA_CPP=/work/llama.cpp /work/refenv/bin/python tests/reference/make_gguf_reference.py
    ... --check-file OUT.gguf      # read a GGUF (e.g. one `ernie quantize` wrote) with gguf-py
                                   # and libllama; print its metadata, tensor types and top tokens
Writes tests/fixtures/gguf/:
    dense/, moe/           tiny ERNIE 4.5 checkpoints (bf16 safetensors, the SentencePiece
                           tokenizer of tests/fixtures/spm/ernie), hidden 256 so the K-quant
                           blocks apply to every projection
    dense-bf16.gguf        convert_hf_to_gguf.py --outtype bf16
    dense-q8_0.gguf, dense-q4_k_m.gguf, moe-q8_0.gguf, moe-q4_k_m.gguf   llama-quantize of the
                           converter's bf16 output (the MoE bf16 GGUF, 2.3 MB, is not kept)
    goldens.json           per GGUF file: prompt ids, llama.cpp's last-row logits and top token;
                           per text: the HF tokenizer's ids (AutoTokenizer on dense/) and
                           llama.cpp's own tokenization
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

LLAMA = Path(os.environ.get("LLAMA_CPP", "/work/llama.cpp"))
VENDOR = LLAMA / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
BIN = LLAMA / "build" / "bin"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "gguf"
SPM = ROOT / "tests" / "fixtures" / "spm" / "ernie"

VOCAB = 700  # the pieces of tests/fixtures/spm/ernie/tokenizer.model
COMMON = {
    "hidden_size": 256, "num_attention_heads": 4, "head_dim": 64, "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 4096,
    "vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "use_bias": False,
    "torch_dtype": "bfloat16",
}
CONFIGS = {
    "dense": {**COMMON, "model_type": "ernie4_5", "architectures": ["Ernie4_5ForCausalLM"],
              "num_hidden_layers": 1, "num_key_value_heads": 2, "intermediate_size": 256,
              "tie_word_embeddings": False},
    # intermediate_size / num_key_value_heads = moe_intermediate_size * moe_num_shared_experts:
    # the converter writes the former as the shared-expert width llama.cpp loads.
    "moe": {**COMMON, "model_type": "ernie4_5_moe", "architectures": ["Ernie4_5_MoeForCausalLM"],
            "num_hidden_layers": 1, "num_key_value_heads": 1, "intermediate_size": 256,
            "tie_word_embeddings": True, "moe_num_experts": 3, "moe_k": 2,
            "moe_intermediate_size": 256, "moe_num_shared_experts": 1, "moe_layer_start_index": 0,
            "moe_layer_end_index": -1, "moe_layer_interval": 1, "moe_norm_min": 1e-12,
            "moe_use_aux_free": True},
}
PROMPTS = [[1, 300, 301, 302], [3, 120, 45, 600, 7, 88, 250], [1], [1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]]
TEXTS = ["Hello world", "  two  spaces", "数字 12345", "a<|end_of_sentence|>b", "line\nbreak\ttab", ""]


def weights(name, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    h, nh, kv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    t = {}

    def lin(n, out, inp):
        t[n] = torch.randn(out, inp, generator=g) / inp ** 0.5

    def norm(n, mean=1.0, std=0.2):
        t[n] = mean + std * torch.randn(h, generator=g)

    t["model.embed_tokens.weight"] = 0.5 * torch.randn(VOCAB, h, generator=g)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}"
        norm(f"{p}.input_layernorm.weight")
        lin(f"{p}.self_attn.q_proj.weight", nh * hd, h)
        lin(f"{p}.self_attn.k_proj.weight", kv * hd, h)
        lin(f"{p}.self_attn.v_proj.weight", kv * hd, h)
        lin(f"{p}.self_attn.o_proj.weight", h, nh * hd)
        norm(f"{p}.post_attention_layernorm.weight")
        if name == "moe":
            e, i = cfg["moe_num_experts"], cfg["moe_intermediate_size"]
            t[f"{p}.mlp.gate.weight"] = 0.5 * torch.randn(e, h, generator=g)
            t[f"{p}.mlp.moe_statics.e_score_correction_bias"] = 0.15 * torch.randn(1, e, generator=g)
            for x in range(e):
                lin(f"{p}.mlp.experts.{x}.gate_proj.weight", i, h)
                lin(f"{p}.mlp.experts.{x}.up_proj.weight", i, h)
                lin(f"{p}.mlp.experts.{x}.down_proj.weight", h, i)
            s = i * cfg["moe_num_shared_experts"]
            lin(f"{p}.mlp.shared_experts.gate_proj.weight", s, h)
            lin(f"{p}.mlp.shared_experts.up_proj.weight", s, h)
            lin(f"{p}.mlp.shared_experts.down_proj.weight", h, s)
        else:
            i = cfg["intermediate_size"]
            lin(f"{p}.mlp.gate_proj.weight", i, h)
            lin(f"{p}.mlp.up_proj.weight", i, h)
            lin(f"{p}.mlp.down_proj.weight", h, i)
    norm("model.norm.weight", 3.0, 0.5)
    if not cfg["tie_word_embeddings"]:
        lin("lm_head.weight", VOCAB, h)
    # bf16 storage; the router and correction bias stay f32 as in the released checkpoints.
    return {k: (v.contiguous() if ".mlp.gate.weight" in k or "moe_statics" in k else v.to(torch.bfloat16).contiguous()) for k, v in t.items()}


def write_checkpoint(name, cfg, seed):
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copy(SPM / "tokenizer.model", d / "tokenizer.model")
    tc = json.loads((SPM / "tokenizer_config.json").read_text())
    tc["add_prefix_space"] = False  # ERNIE's setting; the converter writes it as add_space_prefix
    (d / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n")
    t = weights(name, cfg, seed)
    if name == "moe":  # two shards (each < 2 MB) and an index, as released checkpoints are
        keys = sorted(t)
        half = [k for k in keys if ".experts." in k and int(k.split(".experts.")[1].split(".")[0]) >= 2]
        shards = {"model-00001-of-00002.safetensors": [k for k in keys if k not in half],
                  "model-00002-of-00002.safetensors": half}
        wm = {}
        for f, ks in shards.items():
            save_file({k: t[k] for k in ks}, str(d / f), metadata={"format": "pt"})
            wm.update({k: f for k in ks})
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}, indent=2) + "\n")
    else:
        save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})


def run(cmd):
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def convert(name, outtype, out):
    run([sys.executable, VENDOR / "convert_hf_to_gguf.py", OUT / name, "--outtype", outtype, "--outfile", out])


def quantize(src, out, qtype):
    env = dict(os.environ, LD_LIBRARY_PATH=str(BIN))
    print("+ llama-quantize", src.name, out.name, qtype, flush=True)
    subprocess.run([BIN / "llama-quantize", src, out, qtype, "1"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def llama():
    os.environ["LLAMA_CPP_LIB_PATH"] = str(BIN)
    # The sdist's ctypes bindings (llama_cpp/llama_cpp.py) over our build of libllama, without the
    # package __init__ (its high-level wrapper needs diskcache, which the venv does not have).
    import importlib
    import types

    pkg = types.ModuleType("llama_cpp")
    pkg.__path__ = [str(LLAMA / "llama_cpp_python-0.3.36" / "llama_cpp")]
    sys.modules["llama_cpp"] = pkg
    llama_cpp = importlib.import_module("llama_cpp.llama_cpp")

    global _QUIET  # the callback must outlive every libllama call
    _QUIET = llama_cpp.llama_log_callback(lambda level, text, user: None)
    llama_cpp.llama_log_set(_QUIET, None)
    llama_cpp.llama_backend_init()
    return llama_cpp


def llama_logits(lc, path, prompts):
    """Last-row logits of each prompt, each in a fresh context (f32 KV cache, 1 thread)."""
    mp = lc.llama_model_default_params()
    # No AMX / repacked buffers: this build's AMX path dies with SIGILL on the reference box, and
    # the plain CPU buffers run ggml's reference-layout kernels on the file's own bytes.
    mp.use_extra_bufts = False
    model = lc.llama_model_load_from_file(str(path).encode(), mp)
    assert model, f"llama.cpp could not load {path}"
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    out = []
    for ids in prompts:
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 64, 64, 64, 1, 1
        cp.type_k = cp.type_v = 0  # GGML_TYPE_F32
        ctx = lc.llama_init_from_model(model, cp)
        arr = (lc.llama_token * len(ids))(*ids)
        batch = lc.llama_batch_get_one(arr, len(ids))
        assert lc.llama_decode(ctx, batch) == 0
        ptr = lc.llama_get_logits_ith(ctx, -1)
        out.append(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32).copy())
        lc.llama_free(ctx)
    return model, vocab, out


def llama_tokenize(lc, vocab, text):
    buf = (lc.llama_token * 256)()
    n = lc.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 256, False, True)
    return list(buf[:n])


def describe(path):
    sys.path.insert(0, str(VENDOR / "gguf-py"))
    import gguf

    r = gguf.GGUFReader(str(path))
    keys = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("tokenizer.ggml.")}
    tensors = {t.name: (t.tensor_type.name, [int(x) for x in t.shape]) for t in r.tensors}
    return keys, tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-file", type=Path, help="read this GGUF with gguf-py and libllama, print what they see")
    args = ap.parse_args()
    lc = llama()
    if args.check_file:
        keys, tensors = describe(args.check_file)
        print(json.dumps(keys, indent=1, default=str))
        for n, (ty, shape) in tensors.items():
            print(f"{n:40s} {ty:6s} {shape}")
        _, vocab, logits = llama_logits(lc, args.check_file, PROMPTS)
        print("llama.cpp top tokens:", [int(np.argmax(l)) for l in logits])
        print("llama.cpp tokenizes 'Hello world' as", llama_tokenize(lc, vocab, "Hello world"))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        write_checkpoint(name, cfg, 1300 + seed)
    tmp = OUT / "moe-bf16.tmp.gguf"
    convert("dense", "bf16", OUT / "dense-bf16.gguf")
    convert("moe", "bf16", tmp)
    files = {"dense-bf16.gguf": OUT / "dense-bf16.gguf"}
    for src, stem in [(OUT / "dense-bf16.gguf", "dense"), (tmp, "moe")]:
        for q in ["q8_0", "q4_k_m"]:
            f = OUT / f"{stem}-{q}.gguf"
            quantize(src, f, q.upper())
            files[f.name] = f
    goldens = {"prompts": PROMPTS, "files": {}, "texts": TEXTS}
    for name, path in files.items():
        _, _, logits = llama_logits(lc, path, PROMPTS)
        keys, tensors = describe(path)
        goldens["files"][name] = {
            "top": [int(np.argmax(l)) for l in logits],
            "logits": [[round(float(x), 6) for x in l] for l in logits],
            "tensor_types": {n: ty for n, (ty, _) in tensors.items()},
        }
    tmp.unlink()
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(OUT / "dense"))
    model, vocab, _ = llama_logits(lc, OUT / "dense-bf16.gguf", PROMPTS[:1])
    goldens["hf_ids"] = [hf.encode(t, add_special_tokens=False) for t in TEXTS]
    goldens["llama_cpp_ids"] = [llama_tokenize(lc, vocab, t) for t in TEXTS]
    (OUT / "goldens.json").write_text(json.dumps(goldens) + "\n")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
