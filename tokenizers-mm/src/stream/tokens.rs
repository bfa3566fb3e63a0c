//! The built stream and its inspection (`ernie inspect --format json`).

use serde_json::{json, Map, Value as Json};

use super::media::Segment;
use crate::error::{Error, Result};

use super::positions::{compute_positions, PositionRule};

/// The stream: segments plus flat per-token arrays.
#[derive(Clone, Debug)]
pub struct TokenStream {
    /// Text and media runs, in order.
    pub segments: Vec<Segment>,
    /// `[T]` token ids (placeholders included).
    pub input_ids: Vec<u32>,
    /// `[T]` `(t, h, w)` positions.
    pub positions: Vec<[u32; 3]>,
    /// `[T]` routing modality: 0 text, 1 image, 2 video, 3 audio.
    pub modality: Vec<u8>,
    /// Position of the first generated token (all three axes); `rope delta = next_position − T`.
    pub next_position: u32,
    /// The rule `positions` follow.
    pub rule: PositionRule,
}

impl TokenStream {
    /// Flatten `segments` into ids and positions (`modality` is per token, `[T]`).
    ///
    /// Errors: [`Error::Prompt`] (positions overflow u32, or `modality` has the wrong length).
    pub(crate) fn from_segments(segments: Vec<Segment>, modality: Vec<u8>, rule: PositionRule) -> Result<TokenStream> {
        let input_ids: Vec<u32> = segments
            .iter()
            .flat_map(|s| -> Box<dyn Iterator<Item = u32> + '_> {
                match s {
                    Segment::Text { ids } => Box::new(ids.iter().copied()),
                    Segment::Media { item, placeholder_id } => Box::new(std::iter::repeat_n(*placeholder_id, item.n_tokens())),
                }
            })
            .collect();
        if input_ids.len() != modality.len() {
            return Err(Error::Internal { what: format!("{} tokens but {} modality entries", input_ids.len(), modality.len()) });
        }
        let (positions, next_position) = compute_positions(&segments, rule)?;
        Ok(TokenStream { segments, input_ids, positions, modality, next_position, rule })
    }

    /// Total tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// No tokens at all.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// `[start, end)` token range of each segment.
    pub fn segment_ranges(&self) -> Vec<(usize, usize)> {
        let mut start = 0;
        self.segments
            .iter()
            .map(|s| {
                let r = (start, start + s.n_tokens());
                start = r.1;
                r
            })
            .collect()
    }

    /// The `ernie inspect --format json` object: per segment the kind, token count, id range
    /// (text) or media facts (source, `grid_thw`, `details`, tensor shape, per-channel mean / std
    /// and the first 8 values), and the `[min, max]` of each position axis.
    pub fn inspect_json(&self) -> Json {
        let segments: Vec<Json> = self
            .segments
            .iter()
            .zip(self.segment_ranges())
            .map(|(seg, (a, b))| {
                let pos = &self.positions[a..b];
                let range = |axis: usize| match (pos.iter().map(|p| p[axis]).min(), pos.iter().map(|p| p[axis]).max()) {
                    (Some(lo), Some(hi)) => json!([lo, hi]),
                    _ => Json::Null,
                };
                let mut o = Map::new();
                match seg {
                    Segment::Text { ids } => {
                        o.insert("kind".into(), json!("text"));
                        o.insert("ids".into(), json!(ids));
                    }
                    Segment::Media { item, placeholder_id } => {
                        o.insert("kind".into(), json!(item.kind.name()));
                        o.insert("source".into(), json!(item.source));
                        for (k, v) in &item.details {
                            o.insert(k.clone(), v.clone());
                        }
                        if let Some(g) = item.grid_thw {
                            o.insert("grid_thw".into(), json!(g));
                        }
                        o.insert("placeholder_id".into(), json!(placeholder_id));
                        o.insert("tensor_shape".into(), json!(item.tensor.shape));
                        let stats = item.tensor.channel_stats();
                        o.insert("channel_mean".into(), json!(stats.iter().map(|s| s.0).collect::<Vec<_>>()));
                        o.insert("channel_std".into(), json!(stats.iter().map(|s| s.1).collect::<Vec<_>>()));
                        o.insert("first_values".into(), json!(item.tensor.data.iter().take(8).collect::<Vec<_>>()));
                    }
                }
                o.insert("n_tokens".into(), json!(b - a));
                o.insert("token_range".into(), json!([a, b]));
                o.insert("positions".into(), json!({"t": range(0), "h": range(1), "w": range(2)}));
                Json::Object(o)
            })
            .collect();
        json!({
            "n_tokens": self.len(),
            "position_rule": self.rule.name(),
            "next_position": self.next_position,
            "segments": segments,
        })
    }
}
