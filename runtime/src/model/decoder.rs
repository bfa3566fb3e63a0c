//! The ERNIE 4.5 text decoder (`Ernie4_5ForCausalLM`, `Ernie4_5_MoeForCausalLM`; spec §2.4):
//! embedding → L × (RMSNorm → attention → residual → RMSNorm → dense or MoE FFN → residual) →
//! RMSNorm → head.
//!
//! Checkpoint names (spec §2.3), all relative to `model.` (an `ernie.` prefix is renamed on open):
//! ```text
//! embed_tokens.weight                                   [v, h]
//! layers.{l}.input_layernorm.weight                     [h]
//! layers.{l}.self_attn.{q,k,v,o}_proj.weight | qkv_proj  see nn/attention.rs
//! layers.{l}.post_attention_layernorm.weight            [h]
//! layers.{l}.mlp.{gate,up,down}_proj | up_gate_proj      dense layers (nn/mlp.rs)
//! layers.{l}.mlp.{gate, moe_statics, experts, shared_experts}  MoE layers (model/moe.rs)
//! norm.weight                                           [h]
//! lm_head.weight (root level)                           [v, h]; absent or ignored when tied
//! mtp_* (model.mtp_emb_norm, mtp_hidden_norm, mtp_linear_proj, mtp_block)  kept for MTP decoding
//! ```

use std::collections::BTreeMap;

use super::elastic::{ElasticOptions, ElasticPlan};
use super::moe::{load_grouped_moe, load_moe_block};
use crate::config::{MlpKind, TextConfig};
use crate::nn::attention::{Attention, Mask};
use crate::nn::kv_cache::{KvCache, LayerKv};
use crate::nn::linear::Linear;
use crate::nn::mlp::SwiGlu;
use crate::nn::moe::{GroupedMoe, MoeBlock, Routing};
use crate::nn::trace::Trace;
use crate::ops::quant::QWeight;
use crate::ops::{rms_norm, RopePositions, RopeTable};
use crate::tensor::{Elems, Tensor};
use crate::weights::Weights;
use crate::{Error, Result};

/// The feed-forward half of a layer.
pub enum Mlp {
    /// A dense SwiGLU FFN.
    Dense(SwiGlu),
    /// A text-MoE layer.
    Moe(MoeBlock),
    /// Routing groups (ERNIE-4.5-VL text / vision experts, or ERNIE 5.0 unified): `nn/moe/grouped.rs`.
    Grouped(GroupedMoe),
}

/// One decoder layer.
pub struct Layer {
    /// Index in the checkpoint (`model.layers.{index}`) and in the KV cache.
    pub index: usize,
    /// `[h]`
    pub input_layernorm: Vec<f32>,
    /// Self-attention.
    pub self_attn: Attention,
    /// `[h]`
    pub post_attention_layernorm: Vec<f32>,
    /// Feed-forward half.
    pub mlp: Mlp,
}

/// Where the rows of one forward pass go: their first KV-cache slot, their rotary positions, and
/// (grouped MoE only) their routing group.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    /// First KV-cache slot written.
    pub slot: usize,
    /// Rotary positions of the rows.
    pub pos: RopePositions<'a>,
    /// `[t]` routing group per row; `None` = group 0 (text).
    pub groups: Option<&'a [u8]>,
    /// Causal (text) or block (the rows of one NFSP scale see each other).
    pub mask: Mask,
}

impl Rows<'_> {
    /// Text rows at slots `slot..` and positions `pos..`, routing group 0.
    pub fn sequential(slot: usize, pos: usize) -> Rows<'static> {
        Rows { slot, pos: RopePositions::Sequential(pos), groups: None, mask: Mask::Causal }
    }
}

/// Which logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// `[v]` for the last row only (generation).
    Last,
    /// `[t, v]` for every row (parity tests, speculative verification).
    All,
    /// None: the final normalised hidden states `[t, h]` instead (embeddings).
    Hidden,
}

/// The decoder and its weights.
pub struct Transformer {
    /// The configuration it was loaded for.
    pub cfg: TextConfig,
    /// `[v, h]` (a shape-only stand-in when `embed_quant` holds the table)
    pub embed_tokens: Tensor,
    /// `[v, h]` in a ggml block format, rows dequantised on lookup: a quantised GGUF file's
    /// `token_embd.weight` (`model/gguf_load.rs`); `None` for every other checkpoint.
    pub embed_quant: Option<QWeight>,
    /// The kept decoder layers, in order (an elastic sub-model skips some indices).
    pub layers: Vec<Layer>,
    /// `[h]`
    pub norm: Vec<f32>,
    /// `[v, h]` (the embedding when tied) with the optional `[v]` bias.
    pub lm_head: Linear,
    /// MTP tensors (`model.mtp_*`), kept for multi-token-prediction decoding.
    pub mtp: BTreeMap<String, Tensor>,
}

impl Layer {
    /// Loads the layer under `prefix` (`model.layers.{l}`, or `model.mtp_block.0` for the MTP
    /// block) with a dense or MoE feed-forward per `kind`.
    pub fn load(w: &mut Weights, prefix: &str, index: usize, kind: MlpKind, cfg: &TextConfig) -> Result<Layer> {
        let h = cfg.hidden_size;
        let mlp = match (kind, &cfg.moe) {
            (MlpKind::Moe, Some(_)) if !cfg.moe_groups.is_empty() => {
                Mlp::Grouped(load_grouped_moe(w, &format!("{prefix}.mlp"), h, &cfg.moe_groups, cfg.use_bias)?)
            }
            (MlpKind::Moe, Some(m)) => Mlp::Moe(load_moe_block(w, &format!("{prefix}.mlp"), h, m, cfg.use_bias)?),
            _ => Mlp::Dense(SwiGlu::load(w, &format!("{prefix}.mlp"), h, cfg.intermediate_size, cfg.use_bias)?),
        };
        Ok(Layer {
            index,
            input_layernorm: w.take_f32(&format!("{prefix}.input_layernorm.weight"), &[h])?,
            self_attn: Attention::load(w, &format!("{prefix}.self_attn"), cfg)?,
            post_attention_layernorm: w.take_f32(&format!("{prefix}.post_attention_layernorm.weight"), &[h])?,
            mlp,
        })
    }

    /// `x += attn(norm(x)); x += ffn(norm(x))` in place. `x`: `[t, h]` in cache slots
    /// `rows.slot..rows.slot+t`, rotated at `rows.pos`; writes this layer's K/V rows into `kv`.
    pub fn forward(&self, x: &mut [f32], kv: &mut LayerKv, rope: &RopeTable, rows: Rows<'_>, eps: f32, trace: Option<&mut Trace>) -> Result<()> {
        let mut normed = vec![0.0f32; x.len()]; // [t, h]
        rms_norm(x, &self.input_layernorm, eps, &mut normed); // attn_norm
        let attn_out = self.self_attn.forward_masked(&normed, kv, rope, rows.slot, rows.pos, rows.mask)?; // [t, h]
        x.iter_mut().zip(&attn_out).for_each(|(a, b)| *a += b);
        rms_norm(x, &self.post_attention_layernorm, eps, &mut normed); // ffn_norm
        let ffn_out = match &self.mlp {
            Mlp::Dense(mlp) => mlp.forward(&normed)?,
            Mlp::Moe(moe) => {
                let (out, routing) = moe.forward(&normed)?; // ffn_moe_out
                if let Some(tr) = trace {
                    tr.record_routing(self.index, routing);
                }
                out
            }
            Mlp::Grouped(moe) => {
                let (out, routing) = moe.forward(&normed, rows.groups)?; // ffn_moe_out
                if let Some(tr) = trace {
                    tr.record_group_routing(self.index, routing);
                }
                out
            }
        };
        x.iter_mut().zip(&ffn_out).for_each(|(a, b)| *a += b); // l_out
        Ok(())
    }
}

impl Transformer {
    /// Takes every tensor the config implies from `w`. Shape errors are returned at once; missing
    /// tensors are collected for `Weights::finish`.
    pub fn load(cfg: &TextConfig, w: &mut Weights) -> Result<Transformer> {
        Transformer::load_elastic(cfg, w, &ElasticOptions::default().resolve(cfg)?)
    }

    /// [`Transformer::load`] for an elastic sub-model: layers the plan drops are consumed from `w`
    /// but never loaded (their pages are never read); masked experts and the top-k override go
    /// into each router.
    pub fn load_elastic(cfg: &TextConfig, w: &mut Weights, plan: &ElasticPlan) -> Result<Transformer> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = w.take("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (l, &kind) in cfg.mlp_layer_types.iter().enumerate() {
            if !plan.keep_layer[l] {
                w.take_prefix(&format!("model.layers.{l}."));
                continue;
            }
            let mut layer = Layer::load(w, &format!("model.layers.{l}"), l, kind, cfg)?;
            match &mut layer.mlp {
                Mlp::Moe(moe) => {
                    moe.router.expert_mask = plan.expert_mask.get(&l).cloned();
                    if let Some(k) = plan.top_k {
                        moe.router.top_k = k;
                    }
                }
                // Routing groups: the top-k override applies to every group (capped at a group's
                // expert count); expert masks are refused for them by `model::load_vl_model`.
                Mlp::Grouped(g) => {
                    if let Some(k) = plan.top_k {
                        g.groups.iter_mut().for_each(|b| b.router.top_k = k.min(b.router.num_experts));
                    }
                }
                Mlp::Dense(_) => {}
            }
            layers.push(layer);
        }
        let norm = w.take_f32("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings {
            // transformers ties the head to the embedding and ignores a stored lm_head.weight.
            let _ = w.take_opt("lm_head.weight", &[v, h])?;
            embed_tokens.clone()
        } else {
            w.take("lm_head.weight", &[v, h])?
        };
        let lm_head_bias = if cfg.use_bias && cfg.moe.is_some() { Some(w.take_f32("lm_head.bias", &[v])?) } else { None };
        let mtp = w.take_prefix("model.mtp_");
        let lm_head = Linear::of(lm_head, lm_head_bias);
        Ok(Transformer { cfg: cfg.clone(), embed_tokens, embed_quant: None, layers, norm, lm_head, mtp })
    }

    /// Runs `tokens` at positions `cache.len()..` and appends them to the cache.
    ///
    /// Returns per `which`: last-row logits `[v]`, all logits `[t, v]`, or final hidden `[t, h]`.
    /// Errors: [`Error::Request`] for an empty input, an id `>= vocab_size`, or a full cache.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits, trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::Request("no input tokens".into()));
        }
        let x = self.embed(tokens)?; // [t, h]
        let pos = RopePositions::Sequential(cache.next_position());
        self.forward_embeds(x, cache, which, pos, None, trace)
    }

    /// [`Transformer::forward`] from input embeddings `x` (`[t, h]`: token embeddings with
    /// visual features already in their placeholder rows), rotated at `pos` (3-D for a VL
    /// prompt), with routing group per row `groups` (`[t]`, grouped-MoE layers only).
    ///
    /// Errors: [`Error::Request`] for empty input, a full cache, positions outside the RoPE
    /// table; [`Error::ShapeMismatch`] when `x`, `pos` or `groups` disagree on `t`.
    pub fn forward_embeds(
        &self,
        x: Vec<f32>,
        cache: &mut KvCache,
        which: Logits,
        pos: RopePositions<'_>,
        groups: Option<&[u8]>,
        trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>> {
        self.forward_embeds_masked(x, cache, which, pos, groups, Mask::Causal, trace)
    }

    /// One NFSP scale (`ernie5-generation.md` §3.3): input embeddings `x` (`[t, h]`) at the
    /// (real-valued) positions `pos`, attending to the cache and to each other with no causal mask
    /// inside the block; returns the final normalised hidden rows `[t, h]` for the bit head.
    ///
    /// Errors: as [`Transformer::forward_embeds`].
    pub fn forward_block(&self, x: Vec<f32>, cache: &mut KvCache, pos: RopePositions<'_>, trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        self.forward_embeds_masked(x, cache, Logits::Hidden, pos, None, Mask::Block, trace)
    }

    /// [`Transformer::forward_embeds`] with the rows' attention [`Mask`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward_embeds_masked(
        &self,
        mut x: Vec<f32>,
        cache: &mut KvCache,
        which: Logits,
        pos: RopePositions<'_>,
        groups: Option<&[u8]>,
        mask: Mask,
        mut trace: Option<&mut Trace>,
    ) -> Result<Vec<f32>> {
        let (h, eps) = (self.cfg.hidden_size, self.cfg.rms_norm_eps);
        let t = x.len() / h;
        if t == 0 || x.len() % h != 0 {
            return Err(Error::ShapeMismatch { op: "Transformer::forward_embeds", expected: format!("[t > 0, {h}]"), got: x.len().to_string() });
        }
        cache.check_room(t)?;
        let (kv_layers, rope, slot) = cache.parts();
        let rows = Rows { slot, pos, groups, mask };
        for layer in &self.layers {
            layer.forward(&mut x, &mut kv_layers[layer.index], rope, rows, eps, trace.as_deref_mut())?;
        }
        cache.advance(t);
        let mut normed = vec![0.0f32; t * h]; // [t, h]
        rms_norm(&x, &self.norm, eps, &mut normed); // result_norm
        let rows = match which {
            Logits::Hidden => return Ok(normed),
            Logits::All => &normed[..],
            Logits::Last => &normed[(t - 1) * h..],
        };
        self.head(rows)
    }

    /// Runs the kept layers `self.layers[layers]` over `x` (`[t, h]`, in place) at cache slots
    /// `cache.len()..` and rotary positions `pos`, writing those layers' K/V rows without
    /// advancing the cache: a pass split across calls (NCP runs layers 0..a−1, then one layer per
    /// level with the level's code embedding added between them, spec `ernie5-generation.md`
    /// §5.3) ends with [`Transformer::commit_rows`]. No final norm.
    ///
    /// Errors: [`Error::Request`] for a layer range outside the kept layers or a full cache;
    /// [`Error::ShapeMismatch`] for `x` not `[t > 0, h]`; RoPE position errors.
    pub fn forward_layers(&self, x: &mut [f32], cache: &mut KvCache, layers: std::ops::Range<usize>, pos: RopePositions<'_>) -> Result<()> {
        let (h, eps) = (self.cfg.hidden_size, self.cfg.rms_norm_eps);
        let t = x.len() / h;
        if t == 0 || x.len() % h != 0 {
            return Err(Error::ShapeMismatch { op: "Transformer::forward_layers", expected: format!("[t > 0, {h}]"), got: x.len().to_string() });
        }
        let Some(run) = self.layers.get(layers.clone()) else {
            return Err(Error::Request(format!("layers {layers:?} are outside the model's {} kept layers", self.layers.len())));
        };
        cache.check_room(t)?;
        let (kv_layers, rope, slot) = cache.parts();
        let rows = Rows { slot, pos, groups: None, mask: Mask::Causal };
        for layer in run {
            layer.forward(x, &mut kv_layers[layer.index], rope, rows, eps, None)?;
        }
        Ok(())
    }

    /// Marks `t` rows written by [`Transformer::forward_layers`] as filled.
    ///
    /// Errors: [`Error::Request`] when they do not fit the cache.
    pub fn commit_rows(&self, cache: &mut KvCache, t: usize) -> Result<()> {
        cache.check_room(t)?;
        cache.advance(t);
        Ok(())
    }

    /// The LM head: `[rows, h]` → `[rows, v]` logits.
    pub fn head(&self, rows: &[f32]) -> Result<Vec<f32>> {
        self.lm_head.forward(rows) // [rows, v]
    }

    /// Embedding rows for `tokens`: `[t, h]` f32.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let (h, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let mut x = Vec::with_capacity(tokens.len() * h);
        for &id in tokens {
            if id as usize >= v {
                return Err(Error::Request(format!("token id {id} is outside the vocabulary of {v}")));
            }
            if let Some(q) = &self.embed_quant {
                let rb = q.row_bytes();
                let start = x.len();
                x.resize(start + h, 0.0);
                q.qtype().dequantize_row(&q.bytes()[id as usize * rb..(id as usize + 1) * rb], &mut x[start..]);
                continue;
            }
            let r = id as usize * h..(id as usize + 1) * h;
            match self.embed_tokens.elems() {
                Elems::F32(s) => x.extend_from_slice(&s[r]),
                Elems::Bf16(s) => x.extend(s[r].iter().map(|v| v.to_f32())),
                Elems::F16(s) => x.extend(s[r].iter().map(|v| v.to_f32())),
            }
        }
        Ok(x)
    }

    /// Routing of every MoE layer for a prompt, without keeping a cache (diagnostics).
    pub fn routing_of(&self, tokens: &[u32]) -> Result<BTreeMap<usize, Routing>> {
        let mut cache = KvCache::new(&self.cfg, tokens.len().max(1))?;
        let mut trace = Trace::default();
        self.forward(tokens, &mut cache, Logits::Last, Some(&mut trace))?;
        Ok(trace.routing)
    }
}
