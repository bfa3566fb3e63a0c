"""Write a 4-layer ERNIE-4.5-21B-A3B-shaped `ernie5` checkpoint with image and audio generation
parts (random weights), for the generation benchmarks (scripts/bench-generation.sh; issues #14, #15).

The layout is spec ernie5-generation.md §1-2:
- the decoder: the checkpoint make_bench_checkpoint.py writes (hidden 2560, 20/4 heads of 128,
  layer 0 dense, layers 1-3 with 64 experts top-6 + 2 shared, vocab 103424, bf16), hard-linked
  (symlinked across file systems) as shard 1 of 2, so the 5.5 GB exist once;
- shard 2: `visual_gen.*` for d = 32 bits and a 10-scale schedule up to 32x32 tokens
  (Infinity's 512-px template 1,2,4,6,8,12,16,20,24,32), `audio.*` for Q = 4 levels (one per
  decoder layer: the most 4 layers allow) of 2048 codes; bf16, std 0.02, norms 1;
- `vision_decoder/`: an Infinity-like AutoencoderKL decoder (block_out_channels 128,256,512,512,
  2 resnets per level + 1, no mid attention, z = 32 = d, 8x upsampling: 32x32 tokens -> 256x256
  pixels) in the LDM / FLUX spelling, f32, decoder only; ~50 M values, 200 MB;
- `audio_codec/`: a symlink to the published-size Mimi make_bench_mimi.py writes;
- the ernie5-tiny tokenizer (ids < 1016 < vocab) with <|BOA|>/<|EOA|> added next to <|BOI|>/<|EOI|>,
  and a generation_config without eos, so audio runs its full --max-seconds.

Needs only numpy. Usage, from the repo root:
    python tests/reference/make_generation_bench_checkpoint.py OUT_DIR BASE_DIR MIMI_DIR
BASE_DIR and MIMI_DIR are written first when they hold no model.safetensors.
"""

import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_bench_checkpoint as base_ckpt  # noqa: E402
import make_bench_mimi  # noqa: E402
from make_bench_mimi import write_safetensors  # noqa: E402

H = base_ckpt.H
BITS = 32
SCALES = [1, 2, 4, 6, 8, 12, 16, 20, 24, 32]
LEVELS, CODES = 4, 2048
VAE_CH, VAE_LAYERS, VAE_Z = [128, 256, 512, 512], 2, BITS
FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def head_specs():
    yield "visual_gen.word_embed.weight", [H, BITS]
    yield "visual_gen.word_embed.bias", [H]
    yield "visual_gen.scale_embed.weight", [len(SCALES) + 1, H]
    yield "visual_gen.head_norm.weight", [H]
    yield "visual_gen.head.weight", [2 * BITS, H]
    yield "visual_gen.head.bias", [2 * BITS]
    yield "audio.embed_tokens.weight", [LEVELS * CODES, H]
    for q in range(LEVELS):
        yield f"audio.head_norms.{q}.weight", [H]
        yield f"audio.heads.{q}.weight", [CODES + (1 if q == 0 else 0), H]


def vae_specs():
    """The decoder in LDM names (diffusers' convert_ldm_vae_checkpoint spelling, as FLUX's
    ae.safetensors): up.{i} is level i, applied from the last (widest) level to up.0."""
    def conv(p, cout, cin, k):
        yield f"{p}.weight", [cout, cin, k, k]
        yield f"{p}.bias", [cout]

    def norm(p, c):
        yield f"{p}.weight", [c]
        yield f"{p}.bias", [c]

    def resnet(p, cin, cout):
        yield from norm(f"{p}.norm1", cin)
        yield from conv(f"{p}.conv1", cout, cin, 3)
        yield from norm(f"{p}.norm2", cout)
        yield from conv(f"{p}.conv2", cout, cout, 3)
        if cin != cout:
            yield from conv(f"{p}.nin_shortcut", cout, cin, 1)

    top = VAE_CH[-1]
    yield from conv("decoder.conv_in", top, VAE_Z, 3)
    yield from resnet("decoder.mid.block_1", top, top)
    yield from resnet("decoder.mid.block_2", top, top)
    cin = top
    for i in reversed(range(len(VAE_CH))):
        for j in range(VAE_LAYERS + 1):
            yield from resnet(f"decoder.up.{i}.block.{j}", cin, VAE_CH[i])
            cin = VAE_CH[i]
        if i != 0:
            yield from conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    yield from norm("decoder.norm_out", VAE_CH[0])
    yield from conv("decoder.conv_out", 3, VAE_CH[0], 3)


def vae_config():
    n = len(VAE_CH)
    return {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": VAE_CH,
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "in_channels": 3, "out_channels": 3, "latent_channels": VAE_Z, "layers_per_block": VAE_LAYERS,
        "mid_block_add_attention": False, "norm_num_groups": 32, "sample_size": 256,
        "scaling_factor": 1.0, "shift_factor": None, "force_upcast": True,
        "use_quant_conv": False, "use_post_quant_conv": False,
    }


def link(src, dst):
    """Hard link (same file system), else a symlink: the loader mmaps through either."""
    if os.path.lexists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def tokenizer(out):
    """ernie5-tiny's tokenizer plus <|BOA|>, <|EOA|> as special tokens after the largest id."""
    src = os.path.join(FIX, "ernie5-tiny")
    with open(os.path.join(src, "tokenizer.json")) as f:
        tok = json.load(f)
    with open(os.path.join(src, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    vocab = tok["model"]["vocab"]
    ids = [v if isinstance(v, int) else v[1] for v in (vocab.values() if isinstance(vocab, dict) else enumerate(vocab))]
    nxt = max(max(ids, default=0), max(t["id"] for t in tok["added_tokens"])) + 1
    for k, content in enumerate(("<|BOA|>", "<|EOA|>")):
        entry = {"id": nxt + k, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
        tok["added_tokens"].append(entry)
        tcfg.setdefault("added_tokens_decoder", {})[str(nxt + k)] = {kk: vv for kk, vv in entry.items() if kk != "id"}
    assert nxt + 1 < base_ckpt.V
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)
    shutil.copy(os.path.join(src, "special_tokens_map.json"), out)


def main(out, base, mimi):
    if not os.path.exists(os.path.join(base, "model.safetensors")):
        base_ckpt.main(base)
    if not os.path.exists(os.path.join(mimi, "model.safetensors")):
        make_bench_mimi.main(mimi)
    os.makedirs(os.path.join(out, "vision_decoder"), exist_ok=True)
    rng = np.random.default_rng(1)

    shard1, shard2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    link(os.path.join(base, "model.safetensors"), os.path.join(out, shard1))

    def head_fill(name, dt, shape):
        n = int(np.prod(shape))
        if "norm" in name:
            return np.full(n, 0x3F80, dtype=np.uint16)  # bf16 1.0
        if name.endswith(".bias"):
            return np.zeros(n, dtype=np.uint16)
        return ((rng.standard_normal(n, dtype=np.float32) * 0.02).view(np.uint32) >> 16).astype(np.uint16)

    heads = [(n, "BF16", s) for n, s in head_specs()]
    write_safetensors(os.path.join(out, shard2), heads, head_fill)
    with open(os.path.join(base, "model.safetensors"), "rb") as f:
        hlen = int.from_bytes(f.read(8), "little")
        base_names = [k for k in json.loads(f.read(hlen)) if k != "__metadata__"]
    weight_map = {n: shard1 for n in base_names}
    weight_map.update({n: shard2 for n, _, _ in heads})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)

    def vae_fill(name, dt, shape):
        n = int(np.prod(shape))
        if len(shape) == 1:
            return np.ones(n, dtype=np.float32) if ("norm" in name and name.endswith("weight")) else np.zeros(n, dtype=np.float32)
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(n, dtype=np.float32) * np.float32(1.0 / np.sqrt(fan_in))

    vd = os.path.join(out, "vision_decoder")
    write_safetensors(os.path.join(vd, "ae.safetensors"), [(n, "F32", s) for n, s in vae_specs()], vae_fill)
    with open(os.path.join(vd, "config.json"), "w") as f:
        json.dump(vae_config(), f, indent=2)
    codec = os.path.join(out, "audio_codec")
    if os.path.lexists(codec):
        os.remove(codec)
    os.symlink(os.path.abspath(mimi), codec)

    with open(os.path.join(base, "config.json")) as f:
        config = json.load(f)
    config.update({
        "architectures": ["Ernie5ForCausalLM"], "model_type": "ernie5", "rope_theta": 1000000.0,
        # ERNIE-4.5-VL's band split for head_dim 128 (freq_allocation 20: 22 h, 22 w, 20 t pairs).
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [22, 22, 20]},
        "visual_generation": {"bits": BITS, "scales": [[s, s] for s in SCALES], "resample": "bilinear",
                              "scale_positions": "center", "boi_token": "<|BOI|>", "eoi_token": "<|EOI|>"},
        "audio": {"num_levels": LEVELS, "codebook_size": CODES, "frame_rate": 12.5,
                  "boa_token": "<|BOA|>", "eoa_token": "<|EOA|>"},
    })
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    tokenizer(out)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [], "bos_token_id": 1, "pad_token_id": 0}, f)
    print(f"wrote {out} (decoder linked from {base}, codec -> {mimi})")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
