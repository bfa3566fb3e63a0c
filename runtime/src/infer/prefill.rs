//! Prefill of a multimodal prompt on the CPU decoder: text embeddings with every media item's
//! resampler rows in its placeholder run, 3-D positions, routing group per token (spec §3.6).

use tokenizers_mm::{Segment, TokenStream};

use crate::model::decoder::{Logits, Transformer};
use crate::model::vision::VisionStack;
use crate::nn::kv_cache::KvCache;
use crate::nn::trace::Trace;
use crate::ops::RopePositions;
use crate::{Error, Result};

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
