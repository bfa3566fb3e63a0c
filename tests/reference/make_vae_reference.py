#!/usr/bin/env python3
"""Reference fixtures for the image decoder (runtime/src/model/vision_decoder/) and the
resampling ops (runtime/src/ops/resample.rs); read by tests/model/vision_decoder.rs.

Pinned environment (asserted below): torch 2.15.0, diffusers 0.42.1, safetensors 0.8.0,
numpy 2.4.6. Run from the repository root with the reference venv:

    /work/refenv/bin/python tests/reference/make_vae_reference.py

Writes tests/fixtures/vae/:
  infinity/  Infinity-like BSQ-VAE (z = 16 bits, channel multipliers [1, 2, 4, 4] on 8 channels,
             no mid attention, no quant convs, scaling 1), encoder + decoder, saved in the LDM
             spelling with Infinity's `.conv.` / `.norm.` wrapper segments, `model.safetensors`.
  flux/      FLUX-like (z 16, mid attention, scaling 0.3611, shift 0.1159, no quant convs),
             decoder only, diffusers spelling, `diffusion_pytorch_model.safetensors`.
  flux-ldm/  the same weights in the LDM / FLUX spelling, `ae.safetensors`.
  sd/        SD-like (z 4, mid attention, quant + post-quant convs, scaling 0.18215), encoder +
             decoder, LDM spelling under the `first_stage_model.` prefix, `model.safetensors`.
  each dir:  config.json (AutoencoderKL's own, from save_config) and golden.safetensors:
             latent  [z, h, w]   a pipeline latent (scaled), seeded normal
             z       [z, h, w]   latent / scaling_factor + shift_factor, as the FLUX/SD pipelines compute it
             decoded [3, H, W]   AutoencoderKL.decode(z).sample (unclamped f32)
             rgb8    [H, W, 3]   VaeImageProcessor.postprocess(decoded, "pil") as f32 values 0..255
           and where the checkpoint has an encoder:
             image   [3, H, W]   seeded uniform in [-1, 1]
             mean    [z, h, w]   AutoencoderKL.encode(image).latent_dist.mode()
  infinity/bsq.safetensors: the multi-scale residual BSQ round trip (spec ernie5-generation §4.2,
             after Infinity's BSQ) of the golden image's latent on the schedule 1×1, 2×3, 3×5:
             scales [K, 2], bits_k [16, h_k, w_k] (0/1), summed [16, 3, 5] (Σ_k bilinear-up of
             the codes), rgb8 [H, W, 3] (the summed latent decoded and postprocessed), margin
             (the smallest |value| quantised: how far every bit is from flipping).
  resample.safetensors: F.interpolate goldens: for case i, `bilinear_in_i` / `bilinear_out_i`
             (mode="bilinear", align_corners=False, size=), `area_in_i` / `area_out_i`
             (mode="area", size=), `nearest_in_i` / `nearest_out_i` (mode="nearest", scale_factor=2).

Weights are seeded random (torch.manual_seed), with the GroupNorm affines perturbed away from
1/0 so that they matter. The LDM names are written by inverting diffusers'
`convert_ldm_vae_checkpoint` (diffusers/loaders/single_file_utils.py); the script converts them
back with that function and loads the result with strict=True, asserting no missing or unexpected
key. Deterministic: two runs give byte-identical files.
"""
import json
import os
import re

import numpy as np
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

import diffusers

assert torch.__version__.split("+")[0] == "2.15.0", torch.__version__
assert diffusers.__version__ == "0.42.1", diffusers.__version__
assert safetensors.__version__ == "0.8.0", safetensors.__version__
assert np.__version__ == "2.4.6", np.__version__

OUT = os.path.join("tests", "fixtures", "vae")
torch.set_num_threads(1)


def make_vae(seed, **cfg):
    torch.manual_seed(seed)
    n = len(cfg["block_out_channels"])
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n, **cfg).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name:  # GroupNorm affines: away from the identity so they are exercised
                p.copy_(p + 0.2 * torch.randn_like(p))
            else:
                fan_in = p[0].numel() if p.dim() > 1 else 100
                p.copy_(torch.randn_like(p) * fan_in**-0.5)
    return vae


def diffusers_to_ldm(sd, levels):
    """Inverse of convert_ldm_vae_checkpoint: diffusers names -> LDM names (q/k/v as 1x1 convs)."""
    out = {}
    for k, v in sd.items():
        n = k
        m = re.match(r"(encoder)\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", n)
        if m:
            n = f"encoder.down.{m[2]}.block.{m[3]}.{m[4]}"
        m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", n)
        if m:
            n = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", n)
        if m:
            n = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", n)
        if m:
            n = f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        n = re.sub(r"\.mid_block\.resnets\.0\.", ".mid.block_1.", n)
        n = re.sub(r"\.mid_block\.resnets\.1\.", ".mid.block_2.", n)
        attn = ".mid_block.attentions.0." in n
        n = n.replace(".mid_block.attentions.0.group_norm.", ".mid.attn_1.norm.")
        for a, b in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            n = n.replace(f".mid_block.attentions.0.{a}.", f".mid.attn_1.{b}.")
        n = n.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if attn and v.dim() == 2:
            v = v[:, :, None, None]
        out[n] = v.contiguous()
    return out


def check_ldm(ldm, vae):
    conv = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    fresh = AutoencoderKL.from_config(vae.config)
    missing, unexpected = fresh.load_state_dict(conv, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    for k, v in vae.state_dict().items():
        assert torch.equal(conv[k], v), k


def infinity_wrap(name):
    """Infinity's BSQ-VAE wraps convs and norms in modules holding `.conv` / `.norm`."""
    m = re.match(r"(.*)\.(weight|bias)$", name)
    layer = m[1].rsplit(".", 1)[-1]
    if layer in ("conv1", "conv2", "conv_in", "conv_out", "nin_shortcut", "q", "k", "v", "proj_out", "conv"):
        return f"{m[1]}.conv.{m[2]}"
    if layer in ("norm1", "norm2", "norm_out", "norm"):
        return f"{m[1]}.norm.{m[2]}"
    return name


def write_dir(name, vae, tensors, fname, latent_hw, seed, with_encoder):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    vae.save_config(d)
    save_file(tensors, os.path.join(d, fname))
    cfg = vae.config
    g = torch.Generator().manual_seed(seed)
    h, w = latent_hw
    latent = torch.randn(1, cfg.latent_channels, h, w, generator=g)
    shift = cfg.shift_factor or 0.0
    z = latent / cfg.scaling_factor + shift
    with torch.no_grad():
        decoded = vae.decode(z).sample
    rgb8 = np.array(VaeImageProcessor().postprocess(decoded, output_type="pil")[0]).astype(np.float32)
    golden = {"latent": latent[0], "z": z[0], "decoded": decoded[0], "rgb8": torch.from_numpy(rgb8)}
    if with_encoder:
        s = 2 ** (len(cfg.block_out_channels) - 1)
        image = torch.rand(1, cfg.in_channels, h * s, w * s, generator=g) * 2 - 1
        with torch.no_grad():
            mean = vae.encode(image).latent_dist.mode()
        golden.update(image=image[0], mean=mean[0])
    save_file({k: v.contiguous().float() for k, v in golden.items()}, os.path.join(d, "golden.safetensors"))


def bsq_golden(vae, name, scales):
    """Multi-scale residual BSQ of `mean` (scaling 1, shift 0: the pipeline latent is the mean):
    per scale, area-down the residual, bits = sign of the L2-normalised cell vector, codes
    (2·bit − 1)/√d bilinearly up to the latent grid, subtracted from the residual."""
    d = os.path.join(OUT, name)
    assert vae.config.scaling_factor == 1.0 and not vae.config.shift_factor
    mean = safetensors.torch.load_file(os.path.join(d, "golden.safetensors"))["mean"][None]  # [1, z, h, w]
    z, hf, wf = mean.shape[1:]
    residual, summed, out, margin = mean.clone(), torch.zeros_like(mean), {}, float("inf")
    for k, (h, w) in enumerate(scales):
        down = F.interpolate(residual, size=(h, w), mode="area")
        margin = min(margin, float(down.abs().min()))
        bits = (down / down.norm(dim=1, keepdim=True) > 0).float()
        up = F.interpolate((2 * bits - 1) / z ** 0.5, size=(hf, wf), mode="bilinear", align_corners=False)
        residual, summed = residual - up, summed + up
        out[f"bits_{k}"] = bits[0]
    with torch.no_grad():
        decoded = vae.decode(summed).sample
    rgb8 = np.array(VaeImageProcessor().postprocess(decoded, output_type="pil")[0]).astype(np.float32)
    out.update(scales=torch.tensor(scales, dtype=torch.float32), summed=summed[0], rgb8=torch.from_numpy(rgb8),
               margin=torch.tensor([margin]))
    save_file({k: v.contiguous().float() for k, v in out.items()}, os.path.join(d, "bsq.safetensors"))
    print(f"{name} BSQ: smallest |quantised value| {margin:.3e}")


def resample_goldens():
    g = torch.Generator().manual_seed(7)
    t = {}
    bilinear = [((4, 4), (8, 8)), ((3, 5), (7, 11)), ((8, 8), (3, 3)), ((13, 9), (5, 6)), ((16, 16), (9, 9)),
                ((5, 3), (2, 9)), ((1, 1), (4, 4)), ((5, 3), (5, 9)), ((7, 4), (3, 4)), ((6, 6), (6, 6)), ((2, 2), (32, 32)),
                ((32, 32), (1, 1)), ((4, 8), (16, 32))]
    area = [((8, 8), (4, 4)), ((7, 5), (3, 2)), ((9, 13), (4, 5)), ((6, 6), (1, 1)), ((3, 3), (5, 4)), ((32, 32), (2, 2)), ((16, 16), (16, 16))]
    nearest = [(3, 5), (1, 1), (4, 4)]
    for i, ((h, w), size) in enumerate(bilinear):
        x = torch.randn(3, h, w, generator=g)
        t[f"bilinear_in_{i}"] = x
        t[f"bilinear_out_{i}"] = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    for i, ((h, w), size) in enumerate(area):
        x = torch.randn(3, h, w, generator=g)
        t[f"area_in_{i}"] = x
        t[f"area_out_{i}"] = F.interpolate(x[None], size=size, mode="area")[0]
    for i, (h, w) in enumerate(nearest):
        x = torch.randn(2, h, w, generator=g)
        t[f"nearest_in_{i}"] = x
        t[f"nearest_out_{i}"] = F.interpolate(x[None], scale_factor=2.0, mode="nearest")[0]
    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT, "resample.safetensors"))


def main():
    os.makedirs(OUT, exist_ok=True)
    common = dict(in_channels=3, out_channels=3, act_fn="silu")

    inf = make_vae(1, block_out_channels=(8, 16, 32, 32), layers_per_block=1, latent_channels=16, norm_num_groups=8,
                   mid_block_add_attention=False, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.0, **common)
    ldm = diffusers_to_ldm(inf.state_dict(), 4)
    check_ldm(ldm, inf)
    write_dir("infinity", inf, {infinity_wrap(k): v for k, v in ldm.items()}, "model.safetensors", (3, 5), 11, True)
    bsq_golden(inf, "infinity", [(1, 1), (2, 3), (3, 5)])

    flux = make_vae(2, block_out_channels=(8, 16, 16), layers_per_block=2, latent_channels=16, norm_num_groups=4,
                    mid_block_add_attention=True, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
                    shift_factor=0.1159, **common)
    dec_only = {k: v.contiguous() for k, v in flux.state_dict().items() if k.startswith("decoder.")}
    write_dir("flux", flux, dec_only, "diffusion_pytorch_model.safetensors", (4, 3), 12, False)
    ldm = diffusers_to_ldm(flux.state_dict(), 3)
    check_ldm(ldm, flux)
    write_dir("flux-ldm", flux, {k: v for k, v in ldm.items() if k.startswith("decoder.")}, "ae.safetensors", (4, 3), 12, False)

    sd = make_vae(3, block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  mid_block_add_attention=True, use_quant_conv=True, use_post_quant_conv=True, scaling_factor=0.18215, **common)
    ldm = diffusers_to_ldm(sd.state_dict(), 2)
    check_ldm(ldm, sd)
    write_dir("sd", sd, {f"first_stage_model.{k}": v for k, v in ldm.items()}, "model.safetensors", (5, 6), 13, True)

    resample_goldens()
    sizes = {f: os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs}
    print(json.dumps(sizes, indent=1), "total", sum(sizes.values()))


if __name__ == "__main__":
    main()
