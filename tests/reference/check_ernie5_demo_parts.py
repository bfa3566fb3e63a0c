#!/usr/bin/env python3
# Pinned reference versions: torch==2.15.0, transformers==5.25.0, diffusers==0.42.1.
"""Checks the ERNIE 5.0 demo checkpoint's external parts (runtime/src/tools/demo/ernie5.rs)
against their reference libraries:

1. `audio_codec/`: transformers `MimiModel.from_pretrained(..., output_loading_info=True)` reports
   no missing, unexpected or mismatched keys and no load errors; it then encodes one second of a
   440 Hz tone into codes of shape [1, 8, 13] (12.5 frames/s), all below `codebook_size`, and
   decodes them back to finite samples.
2. `vision_decoder/`: diffusers `AutoencoderKL.from_pretrained(..., output_loading_info=True)`
   reports no missing, unexpected or mismatched keys; a [1, 16, 16, 16] latent decodes to a
   finite [1, 3, 128, 128] image (the size `ernie generate --output x.png` writes).
3. `model.safetensors` holds exactly the `visual_gen.*` and `audio.*` tensors the config implies.
4. With `--ernie BIN` (a built `ernie` binary): `ernie codec encode` gives transformers' codes for
   the tone (as 16-bit PCM, exact), and `ernie codec decode --latent` gives diffusers' pixels for
   the latent (8-bit RGB, at most 1 level apart: f32 summation order).

The language model itself has no transformers class (model_type ernie5 is our reading of the
closed model), so it is checked by the Rust tests only.

Usage, from the repository root (no network; CI never runs this):

    ERNIE_DEMO_OUT=/tmp/ernie5-demo cargo test -p ernie-runtime --lib \\
        demo::tests::write_ernie5_to_env_dir -- --ignored
    /work/refenv/bin/python tests/reference/check_ernie5_demo_parts.py /tmp/ernie5-demo \
        [--ernie target/release/ernie]

Exits non-zero on any mismatch.
"""

import argparse
import json
import math
import os
import subprocess
import tempfile
import wave

import numpy as np
from safetensors.torch import save_file

import torch
from diffusers import AutoencoderKL
from safetensors import safe_open
from transformers import MimiModel

torch.set_num_threads(1)


def check_loading_info(what, info):
    print(f"{what}: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), f"{what}: {key} = {info[key]}"


def check_mimi(folder):
    model, info = MimiModel.from_pretrained(os.path.join(folder, "audio_codec"), output_loading_info=True)
    check_loading_info("MimiModel", info)
    cfg = model.config
    model.eval()
    t = torch.arange(cfg.sampling_rate, dtype=torch.float32) / cfg.sampling_rate
    wav = (0.5 * torch.sin(2 * math.pi * 440 * t)).reshape(1, 1, -1)
    with torch.no_grad():
        codes = model.encode(wav).audio_codes
        print(f"  codes {tuple(codes.shape)}, range [{int(codes.min())}, {int(codes.max())}], first level {codes[0, 0].tolist()}")
        assert tuple(codes.shape) == (1, cfg.num_quantizers, 13), codes.shape
        assert int(codes.max()) < cfg.codebook_size
        audio = model.decode(codes).audio_values
    rms = float(audio.pow(2).mean().sqrt())
    print(f"  decoded {tuple(audio.shape)}, rms {rms:.4g}, peak {float(audio.abs().max()):.4g}")
    assert torch.isfinite(audio).all()
    return cfg


def check_vae(folder):
    vae, info = AutoencoderKL.from_pretrained(os.path.join(folder, "vision_decoder"), output_loading_info=True)
    check_loading_info("AutoencoderKL", info)
    vae.eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, vae.config.latent_channels, 16, 16, generator=gen)
    with torch.no_grad():
        img = vae.decode(z).sample
    print(f"  decoded {tuple(img.shape)}, mean {float(img.mean()):.4g}, std {float(img.std()):.4g}")
    assert tuple(img.shape) == (1, 3, 128, 128) and torch.isfinite(img).all()
    return vae.config


def check_heads(folder, mimi_cfg, vae_cfg):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    h, vg, au = cfg["hidden_size"], cfg["visual_generation"], cfg["audio"]
    d, k = vg["bits"], len(vg["scales"])
    q, v = au["num_levels"], au["codebook_size"]
    want = {
        "visual_gen.word_embed.weight": (h, d),
        "visual_gen.word_embed.bias": (h,),
        "visual_gen.scale_embed.weight": (k + 1, h),
        "visual_gen.head_norm.weight": (h,),
        "visual_gen.head.weight": (2 * d, h),
        "visual_gen.head.bias": (2 * d,),
        "audio.embed_tokens.weight": (q * v, h),
    }
    for level in range(q):
        want[f"audio.head_norms.{level}.weight"] = (h,)
        want[f"audio.heads.{level}.weight"] = (v + 1 if level == 0 else v, h)
    got = {n: s for n, s in shapes.items() if n.startswith(("visual_gen.", "audio."))}
    assert got == want, (sorted(set(got.items()) ^ set(want.items())))
    assert vae_cfg.latent_channels == d, "vision_decoder latent_channels must equal visual_generation.bits"
    assert v <= mimi_cfg.codebook_size and q <= mimi_cfg.num_quantizers, "the codec must hold the model's codes"
    print(f"model.safetensors: {len(shapes)} tensors; visual_gen.* and audio.* as the config implies ({len(want)})")


def check_against_ernie(folder, ernie):
    """Our codec and decoder on the demo's parts against transformers' and diffusers'."""
    with tempfile.TemporaryDirectory() as tmp:
        model = MimiModel.from_pretrained(os.path.join(folder, "audio_codec")).eval()
        sr = model.config.sampling_rate
        t = np.arange(sr) / sr
        pcm = np.round(0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
        wav_path = os.path.join(tmp, "tone.wav")
        with wave.open(wav_path, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(pcm.tobytes())
        with torch.no_grad():
            want = model.encode(torch.from_numpy(pcm.astype(np.float32) / 32768.0).reshape(1, 1, -1)).audio_codes[0].tolist()
        out = subprocess.run([ernie, "codec", "encode", "--codec", os.path.join(folder, "audio_codec"), "--audio", wav_path],
                             check=True, capture_output=True, text=True)
        got = json.loads(out.stdout)["codes"]
        print(f"ernie codec encode vs transformers: {'equal' if got == want else 'DIFFERENT'} ({len(got)} levels x {len(got[0])} frames)")
        assert got == want

        vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vision_decoder")).eval()
        z = torch.randn(1, vae.config.latent_channels, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            img = vae.decode(z).sample[0].clamp(-1, 1)
        want_px = np.round(((img / 2 + 0.5).clamp(0, 1) * 255).permute(1, 2, 0).numpy()).astype(np.int16)
        lat_path, png_path = os.path.join(tmp, "latent.safetensors"), os.path.join(tmp, "x.png")
        save_file({"latent": z[0].contiguous()}, lat_path)
        subprocess.run([ernie, "codec", "decode", "--codec", os.path.join(folder, "vision_decoder"), "--latent", lat_path,
                        "--out", png_path], check=True, capture_output=True)
        from PIL import Image
        got_px = np.asarray(Image.open(png_path).convert("RGB")).astype(np.int16)
        diff = int(np.abs(got_px - want_px).max())
        print(f"ernie codec decode --latent vs diffusers: {got_px.shape}, max |Δ| {diff} levels")
        assert got_px.shape == want_px.shape and diff <= 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--ernie", help="an ernie binary: also compare its codec and decoder with the references")
    args = ap.parse_args()
    mimi_cfg = check_mimi(args.folder)
    vae_cfg = check_vae(args.folder)
    check_heads(args.folder, mimi_cfg, vae_cfg)
    if args.ernie:
        check_against_ernie(args.folder, args.ernie)
    print("OK")


if __name__ == "__main__":
    main()
