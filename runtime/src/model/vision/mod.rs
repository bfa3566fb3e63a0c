//! ERNIE-4.5-VL (`Ernie4_5_VLMoeForConditionalGeneration`, spec §3) and ERNIE 5.0 unified
//! routing: the vision tower and resampler that turn an image or video into language-model
//! embeddings. The prefill that places them into the token stream is `infer/prefill.rs`.
//!
//! ```text
//! TokenStream (tokenizers-mm: ids, (t,h,w) positions, modality)
//!   ├─ each media item: pixels ─ VisionTower ─ Resampler ─▶ rows for its placeholder tokens
//!   └─ text ids ─ embed_tokens
//! embeddings ─ Transformer::forward_embeds (3-D RoPE, routing group per token) ─▶ logits
//! decode: text tokens at position len + rope_delta, routing group 0
//! ```
//! Routing groups (`nn/moe/grouped.rs`): with two groups (ERNIE-4.5-VL) image / video tokens and
//! their start / end tokens use group 1 (vision experts), everything else group 0; with one group
//! (ERNIE 5.0 unified) every token uses it.

pub mod resampler;
pub mod tower;

use tokenizers_mm::{MediaItem, MediaKind};

pub use resampler::Resampler;
pub use tower::VisionTower;

use crate::config::VlConfig;
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

