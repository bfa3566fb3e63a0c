//! The ERNIE 5.0 demo's `model.safetensors`: the ERNIE 4.5 MoE decoder in the on-disk text layout
//! (unified routing: one router over one expert pool per MoE layer), the visual-generation head
//! (`visual_gen.*`, `model/visual_gen.rs`) and the audio level embeddings and heads (`audio.*`,
//! `model/audio_lm.rs`), at the sizes of `runtime/assets/demo-ernie5/config.json`.

use safetensors::tensor::Dtype;

use super::weights::{Init, Specs, TensorSpec, BIAS_STD, EMBED_STD, ROUTER_STD};

// Shapes; they must agree with assets/demo-ernie5/config.json (checked by a test).
pub(super) const VOCAB: usize = 1024;
pub(super) const HIDDEN: usize = 256;
pub(super) const INTER: usize = 512; // dense FFN of layer 0
pub(super) const N_LAYERS: usize = 4;
pub(super) const N_HEADS: usize = 4;
pub(super) const N_KV_HEADS: usize = 2;
pub(super) const HEAD_DIM: usize = 64;
pub(super) const N_EXPERTS: usize = 16; // one pool: unified routing
pub(super) const MOE_INTER: usize = 128;
pub(super) const N_SHARED: usize = 1;
/// `visual_generation.bits`: d, also the image decoder's `latent_channels`.
pub(super) const BITS: usize = 16;
/// `visual_generation.scales`: K scales, coarse to fine (the last is the 16×16 final grid).
pub(super) const N_SCALES: usize = 5;
/// `audio.num_levels`: Q (≤ the codec's 8 quantizers, ≤ the 4 decoder layers).
pub(super) const AUDIO_LEVELS: usize = 4;
/// `audio.codebook_size`: V (= the codec's codebook).
pub(super) const AUDIO_CODEBOOK: usize = 256;

/// The ERNIE 5.0 demo's tensors. Linear weights `[out, in]` bf16 with std 1/sqrt(in); norms 1,
/// biases 0; routers and correction biases f32 (as the VL demo); token and audio embeddings std
/// [`EMBED_STD`] (the head is tied, see there); the scale embedding std 0.02. Level 0's audio
/// head has its end-of-audio row (row V) zero: with random weights a zero logit is below the
/// largest of V random ones, so greedy speech runs to `--max-seconds` instead of ending at once.
pub(super) fn ernie5_tensors() -> Vec<TensorSpec> {
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
        for e in 0..N_EXPERTS {
            t.linear(format!("{p}.mlp.experts.{e}.gate_proj.weight"), MOE_INTER, h); // [Im, H]
            t.linear(format!("{p}.mlp.experts.{e}.up_proj.weight"), MOE_INTER, h); // [Im, H]
            t.linear(format!("{p}.mlp.experts.{e}.down_proj.weight"), h, MOE_INTER); // [H, Im]
        }
        // ERNIE 4.5 text layout: router [E, H], correction bias [1, E].
        t.other(format!("{p}.mlp.gate.weight"), vec![N_EXPERTS, h], Dtype::F32, Init::Normal(ROUTER_STD));
        t.other(format!("{p}.mlp.moe_statics.e_score_correction_bias"), vec![1, N_EXPERTS], Dtype::F32, Init::Normal(BIAS_STD));
        let is = MOE_INTER * N_SHARED;
        t.linear(format!("{p}.mlp.shared_experts.gate_proj.weight"), is, h); // [Is, H]
        t.linear(format!("{p}.mlp.shared_experts.up_proj.weight"), is, h); // [Is, H]
        t.linear(format!("{p}.mlp.shared_experts.down_proj.weight"), h, is); // [H, Is]
    }
    t.ones("model.norm.weight".into(), h);

    // Visual generation head (model/visual_gen.rs).
    t.linear("visual_gen.word_embed.weight".into(), h, BITS); // [H, d]
    t.zeros("visual_gen.word_embed.bias".into(), h);
    t.other("visual_gen.scale_embed.weight".into(), vec![N_SCALES + 1, h], Dtype::BF16, Init::Normal(0.02)); // [K + 1, H]
    t.ones("visual_gen.head_norm.weight".into(), h);
    t.linear("visual_gen.head.weight".into(), 2 * BITS, h); // [2d, H]
    t.zeros("visual_gen.head.bias".into(), 2 * BITS);

    // Audio level embeddings and NCP heads (model/audio_lm.rs).
    let (q, v) = (AUDIO_LEVELS, AUDIO_CODEBOOK);
    t.other("audio.embed_tokens.weight".into(), vec![q * v, h], Dtype::BF16, Init::Normal(EMBED_STD)); // [Q·V, H]
    for level in 0..q {
        t.ones(format!("audio.head_norms.{level}.weight"), h);
        let name = format!("audio.heads.{level}.weight");
        let std = 1.0 / (h as f32).sqrt();
        if level == 0 {
            t.other(name, vec![v + 1, h], Dtype::BF16, Init::NormalZeroLastRow(std)); // [V + 1, H]
        } else {
            t.other(name, vec![v, h], Dtype::BF16, Init::Normal(std)); // [V, H]
        }
    }
    t.0
}
