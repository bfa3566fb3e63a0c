"""Write a 4-layer ERNIE-4.5-21B-A3B-shaped checkpoint with random bf16 weights, for benchmarks.

Shapes are those of baidu/ERNIE-4.5-21B-A3B-PT (spec §2.1) with num_hidden_layers = 4: layer 0 dense,
layers 1-3 MoE (64 experts, top-6, expert width 1536, 2 shared experts), 20/4 heads of 128,
vocab 103424, tied head; experts in the transformers-5 stacked layout. About 5.5 GB; never committed.

Needs only numpy (pinned in requirements.txt). Usage, from the repo root:
    python tests/reference/make_bench_checkpoint.py OUT_DIR
The tokenizer files are copied from tests/fixtures/tokenizer (its ids are < vocab_size).
"""

import json
import os
import shutil
import struct
import sys

import numpy as np

H, I_DENSE, L, NH, NKV, HD, V = 2560, 12288, 4, 20, 4, 128, 103424
E, K, IM, SHARED = 64, 6, 1536, 2


def tensors():
    """Yield (name, dtype, shape); weights are bf16 except the router and its bias (f32)."""
    yield "model.embed_tokens.weight", "BF16", [V, H]
    for l in range(L):
        p = f"model.layers.{l}"
        yield f"{p}.input_layernorm.weight", "BF16", [H]
        yield f"{p}.post_attention_layernorm.weight", "BF16", [H]
        yield f"{p}.self_attn.q_proj.weight", "BF16", [NH * HD, H]
        yield f"{p}.self_attn.k_proj.weight", "BF16", [NKV * HD, H]
        yield f"{p}.self_attn.v_proj.weight", "BF16", [NKV * HD, H]
        yield f"{p}.self_attn.o_proj.weight", "BF16", [H, NH * HD]
        if l == 0:
            for n, s in (("gate_proj", [I_DENSE, H]), ("up_proj", [I_DENSE, H]), ("down_proj", [H, I_DENSE])):
                yield f"{p}.mlp.{n}.weight", "BF16", s
        else:
            yield f"{p}.mlp.gate.weight", "F32", [E, H]
            yield f"{p}.mlp.gate.moe_statics.e_score_correction_bias", "F32", [1, E]
            yield f"{p}.mlp.experts.gate_up_proj", "BF16", [E, 2 * IM, H]
            yield f"{p}.mlp.experts.down_proj", "BF16", [E, H, IM]
            for n, s in (("gate_proj", [IM * SHARED, H]), ("up_proj", [IM * SHARED, H]), ("down_proj", [H, IM * SHARED])):
                yield f"{p}.mlp.shared_experts.{n}.weight", "BF16", s
    yield "model.norm.weight", "BF16", [H]


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    # One 64 MiB pool of bf16 values (normal, std 0.02) reused at rolling offsets: generating 2.7 G
    # independent values would take minutes and buys nothing for a timing benchmark.
    pool = (rng.standard_normal(1 << 25, dtype=np.float32) * 0.02).view(np.uint32) >> 16
    pool = pool.astype(np.uint16)
    header, offset, specs = {}, 0, list(tensors())
    for name, dt, shape in specs:
        n = int(np.prod(shape)) * (2 if dt == "BF16" else 4)
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        start = 0
        for name, dt, shape in specs:
            n = int(np.prod(shape))
            if dt == "F32":
                f.write((rng.standard_normal(n, dtype=np.float32) * (0.05 if "gate" in name else 0.001)).tobytes())
                continue
            if name.endswith("norm.weight"):
                f.write(np.full(n, 0x3F80, dtype=np.uint16).tobytes())  # bf16 1.0
                continue
            done = 0
            while done < n:
                take = min(n - done, len(pool) - start)
                f.write(pool[start:start + take].tobytes())
                done += take
                start = (start + take + 12345) % (len(pool) - 1)
    config = {
        "architectures": ["Ernie4_5_MoeForCausalLM"], "model_type": "ernie4_5_moe",
        "hidden_size": H, "intermediate_size": I_DENSE, "num_hidden_layers": L,
        "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": HD, "vocab_size": V,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "use_bias": False, "tie_word_embeddings": True, "hidden_act": "silu",
        "moe_num_experts": E, "moe_k": K, "moe_intermediate_size": IM, "moe_num_shared_experts": SHARED,
        "moe_layer_start_index": 1, "moe_layer_end_index": -1, "moe_layer_interval": 1,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    src = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tokenizer")
    for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, fn), out)
    # generation_config without eos: the benchmark always runs the full token budget.
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [], "bos_token_id": 1, "pad_token_id": 0}, f)
    print(f"wrote {out} ({offset / 1e9:.2f} GB of weights)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
