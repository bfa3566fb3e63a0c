//! The multi-token-prediction (MTP) head of ERNIE 4.5 MoE checkpoints, used as the draft model
//! for self-speculative decoding (spec §2.5; vLLM `ernie_mtp.py`). transformers ignores these
//! tensors; vLLM and our runtime use them.
//!
//! For the pair (main-model hidden `h_p` after the final norm, next token `x_{p+1}`) at position
//! `p`:
//! ```text
//! e = embed(x_{p+1}), zeroed at position 0
//! z = W_proj · concat(rmsnorm(e, w_emb_norm), rmsnorm(h_p, w_hidden_norm))   W_proj [h, 2h]
//! g = mtp_block(z)        one full decoder layer with its own KV cache; no final norm
//! logits(x_{p+2}) = lm_head(g)
//! ```
//! Drafting deeper than one token feeds `(g, drafted token)` back in, as vLLM does when the
//! number of speculative tokens exceeds the number of MTP layers.

use super::decoder::{Layer, Rows, Transformer};
use crate::config::MlpKind;
use crate::nn::kv_cache::KvCache;
use crate::nn::linear::Linear;
use crate::ops::rms_norm;
use crate::weights::Weights;
use crate::{Error, Result};

/// MTP module weights (depth 1).
pub struct Mtp {
    /// `[h]`
    pub emb_norm: Vec<f32>,
    /// `[h]`
    pub hidden_norm: Vec<f32>,
    /// `[h, 2h]`, no bias.
    pub linear_proj: Linear,
    /// The decoder layer `mtp_block.0`, loaded as layer index 0 of its own one-layer cache.
    pub block: Layer,
}

impl Mtp {
    /// Builds the MTP module from the tensors the main model kept (`model.mtp_*`); `Ok(None)` when
    /// the checkpoint has none. Errors name missing or unexpected MTP tensors.
    pub fn from_model(model: &Transformer) -> Result<Option<Mtp>> {
        if model.mtp.is_empty() || model.cfg.num_nextn_predict_layers == 0 {
            return Ok(None);
        }
        let h = model.cfg.hidden_size;
        // Reuse the decoder-layer loader: mtp_block.0.* reads as layers.0.*.
        let renamed = model.mtp.iter().map(|(k, t)| (k.replacen("model.mtp_block.0.", "model.layers.0.", 1), t.clone()));
        let mut w = Weights::from_tensors(renamed);
        let kind = if w.contains("model.layers.0.mlp.gate.weight") { MlpKind::Moe } else { MlpKind::Dense };
        if kind == MlpKind::Moe && model.cfg.moe.is_none() {
            return Err(crate::error::config_err("num_nextn_predict_layers", "the MTP block has experts but the config has no MoE settings"));
        }
        let mtp = Mtp {
            emb_norm: w.take_f32("model.mtp_emb_norm.0.weight", &[h])?,
            hidden_norm: w.take_f32("model.mtp_hidden_norm.0.weight", &[h])?,
            linear_proj: Linear::of(w.take("model.mtp_linear_proj.0.weight", &[h, 2 * h])?, None),
            block: Layer::load(&mut w, "model.layers.0", 0, kind, &model.cfg)?,
        };
        w.finish()?;
        Ok(Some(mtp))
    }

    /// A one-layer KV cache for the MTP block.
    pub fn new_cache(&self, model: &Transformer, max_seq: usize) -> Result<KvCache> {
        KvCache::with_layers(&model.cfg, 1, max_seq)
    }

    /// Runs pairs `(hidden[i], tokens[i])` at positions `cache.len()..` → block outputs `[n, h]`.
    /// `hidden`: `[n, h]` main-model hidden states after the final norm; `tokens`: `[n]`.
    pub fn forward(&self, model: &Transformer, hidden: &[f32], tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = model.cfg.hidden_size;
        let n = tokens.len();
        if hidden.len() != n * h || n == 0 {
            return Err(Error::ShapeMismatch { op: "Mtp::forward", expected: format!("[{n}, {h}] hidden"), got: format!("{}", hidden.len()) });
        }
        cache.check_room(n)?;
        let start = cache.len();
        let mut e = model.embed(tokens)?; // [n, h]
        if start == 0 {
            e[..h].iter_mut().for_each(|v| *v = 0.0); // vLLM masks the embedding at position 0
        }
        let eps = model.cfg.rms_norm_eps;
        let mut e_n = vec![0.0f32; n * h]; // [n, h]
        let mut h_n = vec![0.0f32; n * h]; // [n, h]
        rms_norm(&e, &self.emb_norm, eps, &mut e_n);
        rms_norm(hidden, &self.hidden_norm, eps, &mut h_n);
        let mut cat = Vec::with_capacity(n * 2 * h); // [n, 2h]: embedding half first
        for i in 0..n {
            cat.extend_from_slice(&e_n[i * h..(i + 1) * h]);
            cat.extend_from_slice(&h_n[i * h..(i + 1) * h]);
        }
        let mut z = self.linear_proj.forward(&cat)?; // [n, h]
        let next = cache.next_position();
        let (kv, rope, slot) = cache.parts();
        self.block.forward(&mut z, &mut kv[0], rope, Rows::sequential(slot, next), eps, None)?;
        cache.advance(n);
        Ok(z)
    }
}
