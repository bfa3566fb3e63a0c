//! ERNIE-4.5-VL (`Ernie4_5_VLMoeForConditionalGeneration`, spec §3) and ERNIE 5.0 unified
//! routing: the vision tower and resampler that turn an image or video into language-model
//! embeddings, and the prefill that places them into the token stream.
//!
//! ```text
//! TokenStream (tokenizers-mm: ids, (t,h,w) positions, modality)
//!   ├─ each media item: pixels ─ VisionTower ─ Resampler ─▶ rows for its placeholder tokens
//!   └─ text ids ─ embed_tokens
//! embeddings ─ Transformer::forward_embeds (3-D RoPE, routing group per token) ─▶ logits
//! decode: text tokens at position len + rope_delta, routing group 0
//! ```
//! Routing groups (`moe/grouped.rs`): with two groups (ERNIE-4.5-VL) image / video tokens and
//! their start / end tokens use group 1 (vision experts), everything else group 0; with one group
//! (ERNIE 5.0 unified) every token uses it.

pub mod config;
pub mod engine;
pub mod names;
pub mod resampler;
pub mod vision;

use std::path::Path;

use tokenizers_mm::{MediaItem, MediaKind, Segment, TokenStream};

pub use config::{VisionConfig, VlConfig, VlTokenIds};
pub use resampler::Resampler;
pub use vision::VisionTower;

use crate::elastic::ElasticOptions;
use crate::kv_cache::KvCache;
use crate::model::{Logits, Transformer};
use crate::ops::RopePositions;
use crate::trace::Trace;
use crate::weights::Weights;
use crate::{Error, Result};

/// The vision side of a VL checkpoint.
pub struct VisionStack {
    /// The whole VL configuration (language model, vision tower, token ids).
    pub cfg: VlConfig,
    /// Pixels → `[patches, d]`.
    pub tower: VisionTower,
    /// `[patches, d]` → `[tokens, hidden]`.
    pub resampler: Resampler,
}

/// Loads a VL checkpoint directory for `cfg` (its parsed config.json): the language model (as a [`Transformer`] with grouped-MoE
/// layers and 3-D RoPE) and the [`VisionStack`], from either spelling (`vl/names.rs`), proving
/// every tensor was used.
///
/// Elastic options: layer selection and the top-k override apply (to every group); expert masks
/// are refused for grouped MoE layers.
///
/// Errors: config, safetensors and [`Error::TensorSet`] errors as for text checkpoints.
pub fn load_vl_model(dir: &Path, cfg: VlConfig, elastic: &ElasticOptions) -> Result<(Transformer, VisionStack)> {
    let plan = elastic.resolve(&cfg.text)?;
    if !plan.expert_mask.is_empty() {
        return Err(Error::Request("--experts is not supported for VL checkpoints (routing groups); use --layers or --top-k".into()));
    }
    let mut w = Weights::open(dir)?;
    w.rename(names::canonical_vl_name)?;
    let model = Transformer::load_elastic(&cfg.text, &mut w, &plan)?;
    let tower = VisionTower::load(&mut w, "model.vision_tower", &cfg.vision)?;
    let resampler = Resampler::load(&mut w, "model.resampler_model", &cfg)?;
    w.finish()?;
    Ok((model, VisionStack { cfg, tower, resampler }))
}

/// What a VL prefill computed besides the logits (parity tests, `--routing-stats`).
#[derive(Default)]
pub struct PrefillTrace {
    /// Per media item, the tower output `[T·gh·gw, d]`.
    pub vision_out: Vec<Vec<f32>>,
    /// Per media item, the resampler output `[tokens, H]`.
    pub resampler_out: Vec<Vec<f32>>,
    /// Routing per layer (grouped MoE: `group_routing`).
    pub trace: Trace,
}

impl VisionStack {
    /// Embeddings for one media item: `[tokens, H]` (tower → resampler), plus the tower output.
    ///
    /// Errors: [`Error::Request`] for audio (no audio encoder in ERNIE-4.5-VL) or an item without
    /// a grid; [`Error::ShapeMismatch`] when the pixels do not match the grid.
    pub fn encode(&self, item: &MediaItem) -> Result<(Vec<f32>, Vec<f32>)> {
        if item.kind == MediaKind::Audio {
            return Err(Error::Request(format!("{}: this checkpoint has no audio encoder (ERNIE-4.5-VL reads images and video)", item.source)));
        }
        let grid = item.grid_thw.ok_or_else(|| Error::Request(format!("{}: media item has no grid_thw", item.source)))?;
        let tower_out = self.tower.forward(&item.tensor.data, grid)?; // [T·gh·gw, d]
        let emb = self.resampler.forward(&tower_out, grid)?; // [tokens, H]
        Ok((tower_out, emb))
    }

    /// Routing group of a token of `modality` (0 text, 1 image, 2 video, 3 audio).
    pub fn group_of(&self, modality: u8) -> u8 {
        u8::from(modality != 0 && self.cfg.text.moe_groups.len() > 1)
    }
}

/// Prefill of a multimodal stream: text embeddings with every media item's resampler rows in its
/// placeholder run, 3-D positions from the stream, routing group per token; sets the cache's rope
/// delta for decode (spec §3.6). Returns the logits per `which` and, with `keep`, the
/// intermediates.
///
/// Errors: [`Error::Request`] when a media item's token count differs from what the resampler
/// gives (a stream built for another checkpoint), for an empty stream, or a full cache; the
/// errors of [`VisionStack::encode`] and [`Transformer::forward_embeds`].
pub fn prefill(
    model: &Transformer,
    vision: &VisionStack,
    stream: &TokenStream,
    cache: &mut KvCache,
    which: Logits,
    mut keep: Option<&mut PrefillTrace>,
) -> Result<Vec<f32>> {
    let h = model.cfg.hidden_size;
    let n = stream.input_ids.len();
    if n == 0 {
        return Err(Error::Request("the prompt is empty".into()));
    }
    if stream.positions.len() != n || stream.modality.len() != n {
        return Err(Error::ShapeMismatch { op: "vl::prefill", expected: format!("{n} positions and modalities"), got: format!("{} / {}", stream.positions.len(), stream.modality.len()) });
    }
    if !cache.is_empty() {
        // Its positions start at 0 and its rope delta replaces the cache's.
        return Err(Error::Request("a multimodal prompt must start a sequence (the cache is not empty)".into()));
    }
    cache.check_room(n)?;
    let mut x = model.embed(&stream.input_ids)?; // [n, h]
    let mut offset = 0;
    for seg in &stream.segments {
        let len = seg.n_tokens();
        if let Segment::Media { item, .. } = seg {
            let (tower_out, emb) = vision.encode(item)?; // [tokens, h]
            if emb.len() != len * h {
                return Err(Error::Request(format!(
                    "{}: the stream reserves {len} tokens but the resampler gives {} for grid {:?}",
                    item.source,
                    emb.len() / h,
                    item.grid_thw
                )));
            }
            x[offset * h..(offset + len) * h].copy_from_slice(&emb);
            if let Some(k) = keep.as_deref_mut() {
                k.vision_out.push(tower_out);
                k.resampler_out.push(emb);
            }
        }
        offset += len;
    }
    let groups: Vec<u8> = stream.modality.iter().map(|&m| vision.group_of(m)).collect();
    let trace = keep.map(|k| &mut k.trace);
    let logits = model.forward_embeds(x, cache, which, RopePositions::ThreeD(&stream.positions), Some(&groups), trace)?;
    cache.set_rope_delta(stream.next_position as i64 - n as i64)?;
    Ok(logits)
}
