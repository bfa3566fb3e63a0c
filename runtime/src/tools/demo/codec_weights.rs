//! The ERNIE 5.0 demo's two external parts, as their reference libraries save them (f32):
//!
//! - `vision_decoder/diffusion_pytorch_model.safetensors`: a diffusers `AutoencoderKL` (encoder,
//!   `quant_conv`, `post_quant_conv`, decoder) in diffusers spelling, for
//!   `runtime/assets/demo-ernie5/vision_decoder/config.json`;
//! - `audio_codec/model.safetensors`: a transformers `MimiModel` (SEANet encoder / decoder, the
//!   two small transformers, the down/up-sampling convs, the split RVQ with its EMA codebooks),
//!   for `runtime/assets/demo-ernie5/audio_codec/config.json`.
//!
//! `tests/reference/check_demo_checkpoint.py --ernie5` loads both with diffusers / transformers and
//! asserts no missing or unexpected keys.

use safetensors::tensor::Dtype;

use super::weights::{Init, Specs, TensorSpec};

// AutoencoderKL sizes; they must agree with vision_decoder/config.json (checked by a test).
pub(super) const VAE_BLOCKS: [usize; 4] = [16, 32, 32, 64]; // block_out_channels: 2^3 = 8× downsampling
pub(super) const VAE_LAYERS_PER_BLOCK: usize = 1;
pub(super) const VAE_LATENT: usize = 16; // latent_channels = visual_generation.bits
pub(super) const VAE_IMAGE_CHANNELS: usize = 3;

// MimiConfig sizes; they must agree with audio_codec/config.json (checked by a test).
pub(super) const MIMI_RATIOS: [usize; 4] = [8, 6, 5, 4]; // upsampling_ratios (decoder order)
pub(super) const MIMI_FILTERS: usize = 4; // num_filters
pub(super) const MIMI_RESIDUAL_LAYERS: usize = 2;
pub(super) const MIMI_COMPRESS: usize = 2; // residual blocks' bottleneck and the 2× down/upsampling
pub(super) const MIMI_KERNEL: usize = 7;
pub(super) const MIMI_RESIDUAL_KERNEL: usize = 3;
pub(super) const MIMI_LAST_KERNEL: usize = 3;
pub(super) const MIMI_HIDDEN: usize = 32;
pub(super) const MIMI_INTER: usize = 64; // transformer MLP
pub(super) const MIMI_TRANSFORMER_LAYERS: usize = 2;
pub(super) const MIMI_CODEBOOK: usize = 256;
pub(super) const MIMI_CODEBOOK_DIM: usize = 16;
pub(super) const MIMI_QUANTIZERS: usize = 8;
pub(super) const MIMI_SEMANTIC: usize = 1;
pub(super) const MIMI_LAYER_SCALE: f32 = 0.01; // layer_scale_initial_scale
/// The decoder's last conv has std `MIMI_OUT_GAIN / sqrt(fan_in)`: at gain 1 the random decoder's
/// output had RMS 1.0 and peaks 5.5 (measured with transformers on a 440 Hz tone's codes), noise
/// far past full scale; 0.2 brings it to about −14 dBFS RMS.
pub(super) const MIMI_OUT_GAIN: f32 = 0.2;
/// Std of the codebook vectors (`embed_sum` with `cluster_usage` 1, so the code vectors).
pub(super) const MIMI_CODE_STD: f32 = 1.0;

/// Adds a diffusers `ResnetBlock2D` (`norm1`, `conv1`, `norm2`, `conv2`, and a 1×1
/// `conv_shortcut` when the channel count changes).
fn vae_resnet(t: &mut Specs, p: &str, inp: usize, out: usize) {
    t.ones(format!("{p}.norm1.weight"), inp);
    t.zeros(format!("{p}.norm1.bias"), inp);
    t.conv(format!("{p}.conv1.weight"), vec![out, inp, 3, 3], inp * 9);
    t.zeros(format!("{p}.conv1.bias"), out);
    t.ones(format!("{p}.norm2.weight"), out);
    t.zeros(format!("{p}.norm2.bias"), out);
    t.conv(format!("{p}.conv2.weight"), vec![out, out, 3, 3], out * 9);
    t.zeros(format!("{p}.conv2.bias"), out);
    if inp != out {
        t.conv(format!("{p}.conv_shortcut.weight"), vec![out, inp, 1, 1], inp);
        t.zeros(format!("{p}.conv_shortcut.bias"), out);
    }
}

/// Adds a diffusers `UNetMidBlock2D`: resnet, single-head attention (`to_q/k/v`, `to_out.0` as
/// linears `[c, c]`), resnet.
fn vae_mid(t: &mut Specs, p: &str, c: usize) {
    vae_resnet(t, &format!("{p}.resnets.0"), c, c);
    let a = format!("{p}.attentions.0");
    t.ones(format!("{a}.group_norm.weight"), c);
    t.zeros(format!("{a}.group_norm.bias"), c);
    for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
        t.linear(format!("{a}.{proj}.weight"), c, c); // [c, c]
        t.zeros(format!("{a}.{proj}.bias"), c);
    }
    vae_resnet(t, &format!("{p}.resnets.1"), c, c);
}

/// A 3×3 conv with bias.
fn conv3(t: &mut Specs, p: &str, out: usize, inp: usize) {
    t.conv(format!("{p}.weight"), vec![out, inp, 3, 3], inp * 9);
    t.zeros(format!("{p}.bias"), out);
}

/// Every tensor of the demo's `AutoencoderKL`, in diffusers spelling.
pub(super) fn vae_tensors() -> Vec<TensorSpec> {
    let mut t = Specs(Vec::new(), Dtype::F32);
    let (z, n, last) = (VAE_LATENT, VAE_BLOCKS.len(), VAE_BLOCKS[VAE_BLOCKS.len() - 1]);
    // Encoder: conv_in, down blocks (a 3×3 stride-2 downsampler on all but the last), mid, out.
    conv3(&mut t, "encoder.conv_in", VAE_BLOCKS[0], VAE_IMAGE_CHANNELS);
    let mut prev = VAE_BLOCKS[0];
    for (i, &ch) in VAE_BLOCKS.iter().enumerate() {
        for j in 0..VAE_LAYERS_PER_BLOCK {
            vae_resnet(&mut t, &format!("encoder.down_blocks.{i}.resnets.{j}"), if j == 0 { prev } else { ch }, ch);
        }
        if i + 1 < n {
            conv3(&mut t, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), ch, ch);
        }
        prev = ch;
    }
    vae_mid(&mut t, "encoder.mid_block", last);
    t.ones("encoder.conv_norm_out.weight".into(), last);
    t.zeros("encoder.conv_norm_out.bias".into(), last);
    conv3(&mut t, "encoder.conv_out", 2 * z, last); // mean and log-variance
    t.conv("quant_conv.weight".into(), vec![2 * z, 2 * z, 1, 1], 2 * z);
    t.zeros("quant_conv.bias".into(), 2 * z);
    t.conv("post_quant_conv.weight".into(), vec![z, z, 1, 1], z);
    t.zeros("post_quant_conv.bias".into(), z);
    // Decoder: conv_in, mid, up blocks over the reversed channels (layers_per_block + 1 resnets,
    // a nearest-2× + 3×3 upsampler on all but the last), out.
    conv3(&mut t, "decoder.conv_in", last, z);
    vae_mid(&mut t, "decoder.mid_block", last);
    let mut prev = last;
    for (i, &ch) in VAE_BLOCKS.iter().rev().enumerate() {
        for j in 0..=VAE_LAYERS_PER_BLOCK {
            vae_resnet(&mut t, &format!("decoder.up_blocks.{i}.resnets.{j}"), if j == 0 { prev } else { ch }, ch);
        }
        if i + 1 < n {
            conv3(&mut t, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), ch, ch);
        }
        prev = ch;
    }
    t.ones("decoder.conv_norm_out.weight".into(), VAE_BLOCKS[0]);
    t.zeros("decoder.conv_norm_out.bias".into(), VAE_BLOCKS[0]);
    conv3(&mut t, "decoder.conv_out", VAE_IMAGE_CHANNELS, VAE_BLOCKS[0]);
    t.0
}

/// A `MimiConv1d` / `MimiConvTranspose1d` (`{p}.conv.weight` + bias). `weight` is `[out, in, k]`
/// for a conv and `[in, out, k]` for a transposed one; `fan_in` sets the std.
fn mimi_conv(t: &mut Specs, p: &str, weight: [usize; 3], bias: usize, fan_in: usize) {
    t.conv(format!("{p}.conv.weight"), weight.to_vec(), fan_in);
    t.zeros(format!("{p}.conv.bias"), bias);
}

/// A `MimiResnetBlock` on `dim` channels: ELU, k-conv to dim/compress, ELU, 1×1 conv back
/// (`block.1`, `block.3`; no shortcut conv).
fn mimi_resnet(t: &mut Specs, p: &str, dim: usize) {
    let hidden = dim / MIMI_COMPRESS;
    mimi_conv(t, &format!("{p}.block.1"), [hidden, dim, MIMI_RESIDUAL_KERNEL], hidden, dim * MIMI_RESIDUAL_KERNEL);
    mimi_conv(t, &format!("{p}.block.3"), [dim, hidden, 1], dim, hidden);
}

/// A `MimiTransformerModel` (`{p}.layers.{l}`): LayerNorms with bias, bias-free projections, layer
/// scales.
fn mimi_transformer(t: &mut Specs, p: &str) {
    let h = MIMI_HIDDEN;
    for l in 0..MIMI_TRANSFORMER_LAYERS {
        let p = format!("{p}.layers.{l}");
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            t.ones(format!("{p}.{norm}.weight"), h);
            t.zeros(format!("{p}.{norm}.bias"), h);
        }
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            t.linear(format!("{p}.self_attn.{proj}.weight"), h, h); // [H, H]: heads · head_dim = H
        }
        t.linear(format!("{p}.mlp.fc1.weight"), MIMI_INTER, h);
        t.linear(format!("{p}.mlp.fc2.weight"), h, MIMI_INTER);
        for scale in ["self_attn_layer_scale", "mlp_layer_scale"] {
            t.other(format!("{p}.{scale}.scale"), vec![h], Dtype::F32, Init::Const(MIMI_LAYER_SCALE));
        }
    }
}

/// One `MimiResidualVectorQuantizer` (`input_proj`, `output_proj` 1×1 convs without bias, and
/// `layers` EMA codebooks: `embed_sum` `[V, D]`, `cluster_usage` `[V]` = 1, `initialized` = 1).
fn mimi_rvq(t: &mut Specs, p: &str, levels: usize) {
    let (h, d, v) = (MIMI_HIDDEN, MIMI_CODEBOOK_DIM, MIMI_CODEBOOK);
    t.conv(format!("{p}.input_proj.weight"), vec![d, h, 1], h);
    for q in 0..levels {
        let c = format!("{p}.layers.{q}.codebook");
        t.other(format!("{c}.cluster_usage"), vec![v], Dtype::F32, Init::Ones);
        t.other(format!("{c}.embed_sum"), vec![v, d], Dtype::F32, Init::Normal(MIMI_CODE_STD));
        t.other(format!("{c}.initialized"), vec![1], Dtype::F32, Init::Ones);
    }
    t.conv(format!("{p}.output_proj.weight"), vec![h, d, 1], d);
}

/// Every tensor of the demo's `MimiModel`. SEANet layer indices follow transformers'
/// `MimiEncoder` / `MimiDecoder` `nn.ModuleList`s, ELUs included (they hold no tensors):
/// encoder `0` conv, then per ratio (reversed) `num_residual_layers` resnets, an ELU and a
/// strided conv, then an ELU and the last conv; the decoder mirrors it with transposed convs.
pub(super) fn mimi_tensors() -> Vec<TensorSpec> {
    let mut t = Specs(Vec::new(), Dtype::F32);
    let (h, nf, k, res) = (MIMI_HIDDEN, MIMI_FILTERS, MIMI_KERNEL, MIMI_RESIDUAL_LAYERS);
    // Encoder: 1 → nf → … → nf·2^len → H.
    let mut i = 0;
    mimi_conv(&mut t, &format!("encoder.layers.{i}"), [nf, 1, k], nf, k);
    i += 1;
    let mut dim = nf;
    for &r in MIMI_RATIOS.iter().rev() {
        for _ in 0..res {
            mimi_resnet(&mut t, &format!("encoder.layers.{i}"), dim);
            i += 1;
        }
        i += 1; // ELU
        mimi_conv(&mut t, &format!("encoder.layers.{i}"), [2 * dim, dim, 2 * r], 2 * dim, dim * 2 * r);
        i += 1;
        dim *= 2;
    }
    i += 1; // ELU
    mimi_conv(&mut t, &format!("encoder.layers.{i}"), [h, dim, MIMI_LAST_KERNEL], h, dim * MIMI_LAST_KERNEL);
    mimi_transformer(&mut t, "encoder_transformer");
    // 25 Hz → 12.5 Hz and back: a bias-free stride-2 conv, a depthwise transposed conv.
    t.conv("downsample.conv.weight".into(), vec![h, h, 2 * MIMI_COMPRESS], h * 2 * MIMI_COMPRESS);
    t.conv("upsample.conv.weight".into(), vec![h, 1, 2 * MIMI_COMPRESS], MIMI_COMPRESS);
    mimi_transformer(&mut t, "decoder_transformer");
    mimi_rvq(&mut t, "quantizer.semantic_residual_vector_quantizer", MIMI_SEMANTIC);
    mimi_rvq(&mut t, "quantizer.acoustic_residual_vector_quantizer", MIMI_QUANTIZERS - MIMI_SEMANTIC);
    // Decoder: H → nf·2^len → … → nf → 1.
    let mut i = 0;
    let mut dim = nf << MIMI_RATIOS.len();
    mimi_conv(&mut t, &format!("decoder.layers.{i}"), [dim, h, k], dim, h * k);
    i += 1;
    for &r in &MIMI_RATIOS {
        i += 1; // ELU
        // Transposed: weight [in, out, k]; each output sample sums in·k/r products.
        mimi_conv(&mut t, &format!("decoder.layers.{i}"), [dim, dim / 2, 2 * r], dim / 2, dim * 2);
        i += 1;
        dim /= 2;
        for _ in 0..res {
            mimi_resnet(&mut t, &format!("decoder.layers.{i}"), dim);
            i += 1;
        }
    }
    i += 1; // ELU
    let std = MIMI_OUT_GAIN / ((dim * MIMI_LAST_KERNEL) as f32).sqrt();
    t.other(format!("decoder.layers.{i}.conv.weight"), vec![1, dim, MIMI_LAST_KERNEL], Dtype::F32, Init::Normal(std));
    t.zeros(format!("decoder.layers.{i}.conv.bias"), 1);
    t.0
}
