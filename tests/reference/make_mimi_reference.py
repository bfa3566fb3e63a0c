#!/usr/bin/env python3
"""Record the Mimi audio-codec goldens for `tests/model/audio_codec.rs` (issue 14, the codec part).

Run from the repository root with the reference venv:

    /work/refenv/bin/python tests/reference/make_mimi_reference.py

Pinned (asserted below): torch 2.15.0, transformers 5.25.0, numpy 2.4.6, safetensors 0.8.0.
Deterministic: two runs write byte-identical files.

Writes
  tests/fixtures/mimi/tiny/config.json, model.safetensors
      a SMALL random-weight `MimiModel` with the real structure (SEANet ratios [8, 6, 5, 4] →
      25 Hz, stride-2 downsample → 12.5 Hz, depthwise transposed-conv upsample, split RVQ with
      1 semantic + 7 acoustic levels and in/out projections, 2-layer encoder/decoder transformers)
      but small channels; `num_residual_layers = 2` so dilated residual convs are exercised and
      `sliding_window = 6` is shorter than every clip's transformer sequence (25 Hz steps).
      Written by `save_pretrained`: the flat `kyutai/mimi` tensor layout.
  tests/fixtures/mimi/golden.safetensors   (all f32; codes are small integers stored as f32)
      for each clip c in (speech, chirp, short):
        c.pcm        [samples]          the exact 24 kHz input fed to transformers
        c.codes      [8, frames]        model.encode(pcm).audio_codes (all levels)
        c.audio      [frames * 1920]    model.decode(c.codes).audio_values
      speech.* intermediates: seanet [H, T25], enc_transformer [T25, H], latents [H, F],
        quantized [H, F] (quantizer.decode of the codes), upsampled [H, 2F], dec_transformer [2F, H]
      speech.audio_q3 [F * 1920]: decode of the first 3 levels only
      free.codes [8, 5], free.audio: decode of hand-picked codes that include each codebook's
        low-usage row (cluster_usage < eps, so `embed = embed_sum / eps` is exercised)
      min_margin [1]: the smallest (second-nearest − nearest) code distance over every clip, level
        and frame (the seed is accepted only when it is > MIN_MARGIN)
  tests/fixtures/mimi/real-shapes/config.json, shapes.json
      the published kyutai/mimi configuration (`MimiConfig()` defaults) and the name → shape of
      every tensor its `save_pretrained` writes (no weights), for the Rust shape/config test.

Clips (see ../shared/media/LICENSES.md):
  speech: alsa_front_center_48k_s16_mono.wav (GPL-2), read with the `wave` module, s16/32768,
          48 → 24 kHz by averaging sample pairs (any deterministic rule will do: the exact f32
          samples are stored and fed to both sides)
  chirp:  chirp_8k_f32_mono.wav (CC0), IEEE-float WAV parsed by hand, first 1.2 s, 8 → 24 kHz by
          linear interpolation
  short:  700 samples of a synthetic 440 Hz tone (less than one frame: padding edge case)

Weights: every parameter seeded from one torch.Generator in sorted-name order: conv weights
N(0, 1/fan_in), biases N(0, 0.05), linear weights N(0, 1/fan_in), LayerNorm N(1, 0.1) / N(0, 0.1),
layer scales N(0.3, 0.05) (the 0.01 default would make the transformers nearly identity). Codebooks
are filled after the encoder is fixed: level l's code vectors are N(0, s_l²) with s_l the RMS of
the residual that level sees on the clips; cluster_usage ~ U(0.5, 2) with embed_sum = vector ·
usage, and row 1 of every codebook has usage 1e-7 (< eps 1e-5) and embed_sum = vector · 1e-5.
"""
import json
import os
import struct
import sys
import tempfile
import wave

import numpy as np
import torch
import transformers
import safetensors
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import MimiConfig, MimiModel

PINNED = {"torch": "2.15.0", "transformers": "5.25.0", "numpy": "2.4.6", "safetensors": "0.8.0"}
for mod, ver in [(torch, PINNED["torch"]), (transformers, PINNED["transformers"]), (np, PINNED["numpy"]), (safetensors, PINNED["safetensors"])]:
    got = mod.__version__.split("+")[0]
    if got != ver:
        sys.exit(f"{mod.__name__} {got} != pinned {ver}")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDIA = os.path.join(ROOT, "..", "shared", "media", "audio")
FIX = os.path.join(ROOT, "tests", "fixtures", "mimi")
OUT = os.path.join(FIX, "tiny")
GOLDEN = os.path.join(FIX, "golden.safetensors")
REAL = os.path.join(FIX, "real-shapes")
MIN_MARGIN = 2e-3  # nearest vs second-nearest code distance: far above f32 drift of the latents
LOW_USAGE_ROW = 1

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TINY = dict(
    hidden_size=32, num_filters=4, num_residual_layers=2, codebook_size=64, codebook_dim=16,
    vector_quantization_hidden_dimension=16, num_quantizers=8, num_semantic_quantizers=1,
    num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
    head_dim=8, sliding_window=6, upsample_groups=32, max_position_embeddings=8000,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)


def read_speech():
    with wave.open(os.path.join(MEDIA, "alsa_front_center_48k_s16_mono.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 48000)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    x = x[: len(x) // 2 * 2]
    return ((x[0::2] + x[1::2]) * np.float32(0.5)).astype(np.float32)


def read_chirp():
    d = open(os.path.join(MEDIA, "chirp_8k_f32_mono.wav"), "rb").read()
    assert d[:4] == b"RIFF" and d[8:12] == b"WAVE"
    i, fmt, data = 12, None, None
    while i + 8 <= len(d):
        cid, sz = d[i : i + 4], struct.unpack("<I", d[i + 4 : i + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHI", d[i + 8 : i + 16])
        elif cid == b"data":
            data = d[i + 8 : i + 8 + sz]
        i += 8 + sz + (sz & 1)
    assert fmt == (3, 1, 8000), fmt
    x = np.frombuffer(data, dtype="<f4").astype(np.float64)[: int(8000 * 1.2)]
    t = np.arange(len(x) * 3) / 3.0
    return np.interp(t, np.arange(len(x)), x).astype(np.float32)


def read_short():
    n = np.arange(700, dtype=np.float64)
    return (0.3 * np.sin(2 * np.pi * 440.0 * n / 24000.0)).astype(np.float32)


def init_weights(model, gen):
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(sd):
            p = sd[name]
            if "codebook" in name:
                continue
            if name.endswith("layer_scale.scale"):
                v = 0.3 + 0.05 * torch.randn(p.shape, generator=gen)
            elif "layernorm.weight" in name:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith(".bias"):
                v = (0.1 if "layernorm" in name else 0.05) * torch.randn(p.shape, generator=gen)
            elif p.ndim == 3:  # conv [out, in/g, k]; transposed conv [in, out/g, k]
                conv = _module_of(model, name)
                if isinstance(conv, torch.nn.ConvTranspose1d):
                    # each output sample sums in/g channels × kernel/stride taps
                    fan_in = max(1, p.shape[0] // conv.groups * p.shape[2] // conv.stride[0])
                else:
                    fan_in = p.shape[1] * p.shape[2]
                v = torch.randn(p.shape, generator=gen) / np.sqrt(fan_in)
            elif p.ndim == 2:
                v = torch.randn(p.shape, generator=gen) / np.sqrt(p.shape[1])
            else:
                raise SystemExit(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))


def _module_of(model, name):
    return model.get_submodule(name.rsplit(".", 1)[0])


def projected(rvq, latents):
    x = latents if rvq.input_proj is None else rvq.input_proj(latents)
    return x.permute(0, 2, 1).reshape(-1, x.shape[1])  # [frames, D]


def fill_codebooks(model, latents_list, gen):
    q = model.quantizer
    with torch.no_grad():
        for rvq in (q.semantic_residual_vector_quantizer, q.acoustic_residual_vector_quantizer):
            residual = torch.cat([projected(rvq, l) for l in latents_list])
            for layer in rvq.layers:
                cb = layer.codebook
                s = residual.pow(2).mean().sqrt().item()
                vec = torch.randn(cb.embed_sum.shape, generator=gen) * s
                usage = 0.5 + 1.5 * torch.rand(cb.cluster_usage.shape, generator=gen)
                usage[LOW_USAGE_ROW] = 1e-7
                embed_sum = vec * usage[:, None]
                embed_sum[LOW_USAGE_ROW] = vec[LOW_USAGE_ROW] * cb.epsilon
                cb.embed_sum.copy_(embed_sum)
                cb.cluster_usage.copy_(usage)
                cb._embed = None
                idx = cb.quantize(residual)
                residual = residual - cb.embed[idx]


def margins(model, latents):
    """Smallest (2nd nearest − nearest) distance over every level and frame of one clip."""
    q = model.quantizer
    out = float("inf")
    with torch.no_grad():
        for rvq, n in ((q.semantic_residual_vector_quantizer, q.num_semantic_quantizers), (q.acoustic_residual_vector_quantizer, q.num_acoustic_quantizers)):
            residual = projected(rvq, latents).double()
            for layer in rvq.layers[:n]:
                e = layer.codebook.embed.double()
                d = torch.cdist(residual, e)
                two = d.topk(2, largest=False).values
                out = min(out, (two[:, 1] - two[:, 0]).min().item())
                residual = residual - e[d.argmin(-1)]
    return out


def build(seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = MimiConfig(**TINY)
    cfg._attn_implementation = "eager"
    model = MimiModel(cfg).eval()
    init_weights(model, gen)
    return model, gen


def main():
    clips = {"speech": read_speech(), "chirp": read_chirp(), "short": read_short()}
    for seed in range(100):
        model, gen = build(seed)
        with torch.no_grad():
            lat = [model.encoder(torch.from_numpy(x)[None, None]).latents for x in clips.values()]
        fill_codebooks(model, lat, gen)
        m = min(margins(model, l) for l in lat)
        print(f"seed {seed}: min code margin {m:.3e}")
        if m > MIN_MARGIN:
            break
    else:
        sys.exit("no seed with clear code margins")

    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)
    # Reload from disk: the goldens come from the saved checkpoint, proving it round-trips.
    reloaded = MimiModel.from_pretrained(OUT, attn_implementation="eager").eval()
    for (k, v), (k2, v2) in zip(sorted(model.state_dict().items()), sorted(reloaded.state_dict().items())):
        assert k == k2 and torch.equal(v, v2), k
    model = reloaded

    g = {"min_margin": torch.tensor([m], dtype=torch.float32)}
    with torch.no_grad():
        for name, x in clips.items():
            pcm = torch.from_numpy(x)[None, None]
            codes = model.encode(pcm).audio_codes  # [1, 8, F]
            audio = model.decode(codes).audio_values  # [1, 1, F * 1920]
            g[f"{name}.pcm"] = pcm.flatten()
            g[f"{name}.codes"] = codes[0].float()
            g[f"{name}.audio"] = audio.flatten()
            print(f"{name}: {x.shape[0]} samples, codes {tuple(codes.shape[1:])}, audio rms {audio.pow(2).mean().sqrt():.4f}")
            if name == "speech":
                enc = model.encoder
                seanet = enc.encoder_seanet(pcm)
                tr = enc.encoder_transformer(seanet.transpose(1, 2)).last_hidden_state
                latents = enc.downsample(tr.transpose(1, 2))
                quantized = model.quantizer.decode(codes)
                up = model.decoder.upsample(quantized)
                dtr = model.decoder.decoder_transformer(up.transpose(1, 2)).last_hidden_state
                g["speech.seanet"] = seanet[0]
                g["speech.enc_transformer"] = tr[0]
                g["speech.latents"] = latents[0]
                g["speech.quantized"] = quantized[0]
                g["speech.upsampled"] = up[0]
                g["speech.dec_transformer"] = dtr[0]
                g["speech.audio_q3"] = model.decode(codes[:, :3]).audio_values.flatten()
        free = torch.tensor([[LOW_USAGE_ROW, 0, 63, 5, LOW_USAGE_ROW]] * 8)
        free[1:, 2] = torch.arange(7) * 9  # vary the levels a little
        g["free.codes"] = free.float()
        g["free.audio"] = model.decode(free[None]).audio_values.flatten()
    save_file({k: v.contiguous().float() for k, v in g.items()}, GOLDEN)

    # The published configuration: config + tensor manifest only (no weights committed).
    os.makedirs(REAL, exist_ok=True)
    real = MimiModel(MimiConfig()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        real.save_pretrained(tmp)
        with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}
        with open(os.path.join(tmp, "config.json")) as f:
            cfg_text = f.read()
    with open(os.path.join(REAL, "config.json"), "w") as f:
        f.write(cfg_text)
    with open(os.path.join(REAL, "shapes.json"), "w") as f:
        json.dump(shapes, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"real Mimi: {len(shapes)} tensors, {sum(np.prod(s) for s in shapes.values()) / 1e6:.1f} M values")


if __name__ == "__main__":
    main()
