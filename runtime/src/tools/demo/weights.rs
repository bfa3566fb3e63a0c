//! The demo checkpoint's tensors: every name and shape of `Ernie4_5_VLMoeForConditionalGeneration`
//! at the demo sizes, in the layout transformers 5.24's `save_pretrained` writes (the original
//! Baidu layout), filled from a seeded portable PRNG so the bytes are the same on every machine.

use std::path::Path;

use half::bf16;
use safetensors::tensor::{Dtype, TensorView};

use super::{fnv1a64, DEMO_SEED};
use crate::{Error, Result};

/// How a demo tensor is filled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Init {
    /// Normal(0, std²).
    Normal(f32),
    /// All 1.0 (norm weights).
    Ones,
    /// All 0.0 (biases).
    Zeros,
    /// Every element this value (Mimi's layer scales, codebook counters).
    Const(f32),
    /// Normal(0, std²) with the last row (of a `[rows, cols]` tensor) all 0.0: the ERNIE 5.0
    /// demo's end-of-audio class, so random weights never end speech early.
    NormalZeroLastRow(f32),
}

// Shapes; they must agree with assets/demo/config.json (checked by a test).
pub(super) const VOCAB: usize = 1024;
pub(super) const HIDDEN: usize = 256;
pub(super) const INTER: usize = 512; // dense FFN of layer 0
pub(super) const N_LAYERS: usize = 4;
pub(super) const N_HEADS: usize = 4;
pub(super) const N_KV_HEADS: usize = 2;
pub(super) const HEAD_DIM: usize = 64;
pub(super) const N_EXPERTS: usize = 16; // per modality
pub(super) const MOE_INTER: [usize; 2] = [128, 64]; // [text, vision] expert width
pub(super) const N_SHARED: usize = 1;
pub(super) const VIT_DEPTH: usize = 2;
pub(super) const VIT_HIDDEN: usize = 128;
pub(super) const VIT_INTER: usize = 512;
pub(super) const PATCH_DIM: usize = 3 * 14 * 14; // in_channels · patch²
pub(super) const MERGE: usize = 2; // spatial merge: the resampler sees 2×2 windows
/// Token embedding std: transformers' own init (`initializer_range` 0.02). With the tied head a
/// larger embedding (std 1) makes every logit row dominated by `e_last · e_j`, so greedy decoding
/// echoes the last prompt token whatever the image (measured: 8 × `"\n"` for any picture); at
/// 0.02 the layers, and so the image, decide the output.
pub(super) const EMBED_STD: f32 = 0.02;
/// Router weights: std 1/sqrt(H) (so logits are O(1)).
pub(super) const ROUTER_STD: f32 = 0.0625; // 1 / sqrt(256)
/// Correction bias: small enough that it only breaks near-ties.
pub(super) const BIAS_STD: f32 = 0.01;

/// One checkpoint tensor: its on-disk name, shape, dtype and fill.
#[derive(Clone, Debug)]
pub(super) struct TensorSpec {
    pub(super) name: String,
    pub(super) shape: Vec<usize>,
    pub(super) dtype: Dtype,
    pub(super) init: Init,
}

/// Collects [`TensorSpec`]s; one method per kind of tensor. `.1` is the dtype of linear, norm,
/// bias and conv tensors (bf16 for the language models, f32 for the codec and image decoder).
pub(super) struct Specs(pub(super) Vec<TensorSpec>, pub(super) Dtype);

impl Specs {
    /// A linear weight `[out, in]`, std 1/sqrt(in) so activations stay O(1).
    pub(super) fn linear(&mut self, name: String, out: usize, inp: usize) {
        self.0.push(TensorSpec { name, shape: vec![out, inp], dtype: self.1, init: Init::Normal(1.0 / (inp as f32).sqrt()) });
    }

    /// A convolution weight of any `shape`, std 1/sqrt(fan_in).
    pub(super) fn conv(&mut self, name: String, shape: Vec<usize>, fan_in: usize) {
        self.0.push(TensorSpec { name, shape, dtype: self.1, init: Init::Normal(1.0 / (fan_in.max(1) as f32).sqrt()) });
    }

    /// A norm weight `[n]` of ones.
    pub(super) fn ones(&mut self, name: String, n: usize) {
        self.0.push(TensorSpec { name, shape: vec![n], dtype: self.1, init: Init::Ones });
    }

    /// A bias `[n]` of zeros.
    pub(super) fn zeros(&mut self, name: String, n: usize) {
        self.0.push(TensorSpec { name, shape: vec![n], dtype: self.1, init: Init::Zeros });
    }

    /// The norms and attention projections of decoder layer prefix `p` (`model.layers.{l}`) in the
    /// ERNIE 4.5 names both demos share: hidden `h`, `q_dim` = heads·head_dim, `kv_dim` likewise.
    pub(super) fn attention_layer(&mut self, p: &str, h: usize, q_dim: usize, kv_dim: usize) {
        self.ones(format!("{p}.input_layernorm.weight"), h);
        self.ones(format!("{p}.post_attention_layernorm.weight"), h);
        self.linear(format!("{p}.self_attn.q_proj.weight"), q_dim, h); // [nh·hd, H]
        self.linear(format!("{p}.self_attn.k_proj.weight"), kv_dim, h); // [nkv·hd, H]
        self.linear(format!("{p}.self_attn.v_proj.weight"), kv_dim, h); // [nkv·hd, H]
        self.linear(format!("{p}.self_attn.o_proj.weight"), h, q_dim); // [H, nh·hd]
    }

    /// The dense SwiGLU MLP `{p}.mlp.{gate,up,down}_proj` of width `inter`.
    pub(super) fn dense_mlp(&mut self, p: &str, h: usize, inter: usize) {
        self.linear(format!("{p}.mlp.gate_proj.weight"), inter, h); // [I, H]
        self.linear(format!("{p}.mlp.up_proj.weight"), inter, h); // [I, H]
        self.linear(format!("{p}.mlp.down_proj.weight"), h, inter); // [H, I]
    }

    /// Anything else.
    pub(super) fn other(&mut self, name: String, shape: Vec<usize>, dtype: Dtype, init: Init) {
        self.0.push(TensorSpec { name, shape, dtype, init });
    }
}

/// The demo checkpoint's tensors, in the on-disk layout transformers 5.24 `save_pretrained`
/// writes for `Ernie4_5_VLMoeForConditionalGeneration` (listed from a real save; see the module
/// docs for how these map to transformers' in-memory names). Linear weights are `[out, in]` with
/// std 1/sqrt(in); norms are 1, biases 0, the embedding std [`EMBED_STD`].
pub(super) fn demo_tensors() -> Vec<TensorSpec> {
    let mut t = Specs(Vec::new(), Dtype::BF16);
    let (h, q_dim, kv_dim) = (HIDDEN, N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM);

    t.other("model.embed_tokens.weight".into(), vec![VOCAB, h], Dtype::BF16, Init::Normal(EMBED_STD)); // [V, H]
    for l in 0..N_LAYERS {
        let p = format!("model.layers.{l}");
        t.attention_layer(&p, h, q_dim, kv_dim);
        if l == 0 {
            t.dense_mlp(&p, h, INTER);
            continue;
        }
        // Text experts 0..E (width MOE_INTER[0]), then vision experts E..2E (width MOE_INTER[1]).
        for e in 0..2 * N_EXPERTS {
            let im = MOE_INTER[e / N_EXPERTS];
            t.linear(format!("{p}.mlp.experts.{e}.gate_proj.weight"), im, h); // [Im, H]
            t.linear(format!("{p}.mlp.experts.{e}.up_proj.weight"), im, h); // [Im, H]
            t.linear(format!("{p}.mlp.experts.{e}.down_proj.weight"), h, im); // [H, Im]
        }
        // Routers [H, E] (text `weight`, vision `weight_1`) and correction biases [2, E] in f32, as
        // transformers' `_keep_in_fp32_modules_strict` keeps them: they decide discrete choices.
        let (router, bias) = (Init::Normal(ROUTER_STD), Init::Normal(BIAS_STD));
        t.other(format!("{p}.mlp.gate.weight"), vec![h, N_EXPERTS], Dtype::F32, router);
        t.other(format!("{p}.mlp.gate.weight_1"), vec![h, N_EXPERTS], Dtype::F32, router);
        t.other(format!("{p}.mlp.moe_statics.e_score_correction_bias"), vec![2, N_EXPERTS], Dtype::F32, bias);
        // Shared expert of width Is = MOE_INTER[0] · N_SHARED: gate/up [Is, H], down [H, Is].
        let is = MOE_INTER[0] * N_SHARED;
        t.linear(format!("{p}.mlp.shared_experts.gate_proj.weight"), is, h);
        t.linear(format!("{p}.mlp.shared_experts.up_proj.weight"), is, h);
        t.linear(format!("{p}.mlp.shared_experts.down_proj.weight"), h, is);
    }
    t.ones("model.norm.weight".into(), h);

    // Vision tower: pre-LN ViT blocks (LayerNorm with bias, linears with bias except patch_embed).
    let d = VIT_HIDDEN;
    t.linear("model.vision_model.patch_embed.proj.weight".into(), d, PATCH_DIM); // [D, 3·14·14]
    for b in 0..VIT_DEPTH {
        let p = format!("model.vision_model.blocks.{b}");
        for norm in ["norm1", "norm2"] {
            t.ones(format!("{p}.{norm}.weight"), d);
            t.zeros(format!("{p}.{norm}.bias"), d);
        }
        for (name, out, inp) in [("attn.qkv", 3 * d, d), ("attn.proj", d, d), ("mlp.fc1", VIT_INTER, d), ("mlp.fc2", d, VIT_INTER)] {
            t.linear(format!("{p}.{name}.weight"), out, inp); // [out, in]
            t.zeros(format!("{p}.{name}.bias"), out);
        }
    }
    t.ones("model.vision_model.ln.weight".into(), d);
    t.zeros("model.vision_model.ln.bias".into(), d);

    // Resampler: 2×2 windows (4D) → spatial fc1/fc2 + LN (.0/.2/.3) → temporal fc1 (8D in)/fc2 + LN
    // → mlp to H → after_norm (RMSNorm).
    let w = d * MERGE * MERGE;
    let p = "model.resampler_model";
    for (stage, inp) in [("spatial_linear", w), ("temporal_linear", 2 * w)] {
        t.linear(format!("{p}.{stage}.0.weight"), w, inp); // fc1 [4D, in]
        t.zeros(format!("{p}.{stage}.0.bias"), w);
        t.linear(format!("{p}.{stage}.2.weight"), w, w); // fc2 [4D, 4D]
        t.zeros(format!("{p}.{stage}.2.bias"), w);
        t.ones(format!("{p}.{stage}.3.weight"), w); // LayerNorm
        t.zeros(format!("{p}.{stage}.3.bias"), w);
    }
    t.linear(format!("{p}.mlp.weight"), h, w); // [H, 4D]
    t.zeros(format!("{p}.mlp.bias"), h);
    t.ones(format!("{p}.after_norm.weight"), h);
    t.0
}

/// Serialises every [`demo_tensors`] entry into safetensors bytes (metadata `{"format": "pt"}`,
/// as transformers writes). `path` only names the file in errors.
pub(super) fn demo_safetensors(path: &Path) -> Result<Vec<u8>> {
    safetensors_bytes(&demo_tensors(), DEMO_SEED, path)
}

/// Serialises `specs`, each filled from `seed` ([`tensor_bytes_seeded`]), into safetensors bytes
/// (metadata `{"format": "pt"}`). `path` only names the file in errors.
pub(super) fn safetensors_bytes(specs: &[TensorSpec], seed: u64, path: &Path) -> Result<Vec<u8>> {
    let data: Vec<Vec<u8>> = specs.iter().map(|s| tensor_bytes_seeded(s, seed)).collect();
    let mut views = Vec::with_capacity(specs.len());
    for (spec, bytes) in specs.iter().zip(&data) {
        let view = TensorView::new(spec.dtype, spec.shape.clone(), bytes)
            .map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: format!("{}: {e}", spec.name) })?;
        views.push((spec.name.as_str(), view));
    }
    let metadata = Some([("format".to_string(), "pt".to_string())].into_iter().collect());
    safetensors::tensor::serialize(views, metadata).map_err(|e| Error::Safetensors { path: path.to_path_buf(), reason: e.to_string() })
}

/// The little-endian bytes of one VL demo tensor ([`DEMO_SEED`]).
#[cfg(test)]
pub(super) fn tensor_bytes(spec: &TensorSpec) -> Vec<u8> {
    tensor_bytes_seeded(spec, DEMO_SEED)
}

/// The little-endian bytes of one tensor, filled per its [`Init`] from SplitMix64 seeded with
/// `seed ^ fnv1a64(name)`.
pub(super) fn tensor_bytes_seeded(spec: &TensorSpec, seed: u64) -> Vec<u8> {
    let n: usize = spec.shape.iter().product();
    let cols = spec.shape.last().copied().unwrap_or(1).max(1);
    let mut rng = SplitMix64(seed ^ fnv1a64(spec.name.as_bytes()));
    let value = |rng: &mut SplitMix64, i: usize| match spec.init {
        Init::Normal(std) => rng.normal() * std,
        Init::NormalZeroLastRow(std) => {
            let v = rng.normal() * std; // drawn for every element, so other rows do not shift
            if i >= n - cols { 0.0 } else { v }
        }
        Init::Ones => 1.0,
        Init::Zeros => 0.0,
        Init::Const(c) => c,
    };
    let mut out = Vec::with_capacity(n * if spec.dtype == Dtype::F32 { 4 } else { 2 });
    for i in 0..n {
        let v = value(&mut rng, i);
        if spec.dtype == Dtype::F32 {
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(&bf16::from_f32(v).to_le_bytes());
        }
    }
    out
}

/// SplitMix64 (Steele, Lea & Flood 2014; the seeder of xoshiro): a 64-bit counter passed
/// through a fixed mixing function. Tiny, seedable from any u64, and good enough for weights.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Approximately standard normal: Irwin–Hall, the sum of 12 uniforms minus 6 (mean 0,
    /// variance 1, support ±6). Chosen over Box–Muller because it needs no `ln`/`cos`, whose
    /// last bits vary between libms: the sum of twelve u32 values is an exact integer and the
    /// one conversion to f64 is exact, so the bytes are identical everywhere.
    fn normal(&mut self) -> f32 {
        let mut sum = 0u64;
        for _ in 0..6 {
            let x = self.next_u64();
            sum += (x >> 32) + (x & 0xFFFF_FFFF);
        }
        // sum / 2³² is the sum of 12 uniforms on [0, 1).
        ((sum as f64) / 4_294_967_296.0 - 6.0) as f32
    }
}

