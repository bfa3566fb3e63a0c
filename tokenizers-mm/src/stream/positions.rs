//! Per-token 3-D `(t, h, w)` positions (spec §3.6, §1.4; the rules are described in the
//! [module docs](super)).

use crate::error::{Error, Result};

use super::media::{Segment, TokenLayout};

/// Which 3-D position rule to apply (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PositionRule {
    /// ERNIE-4.5-VL as vLLM and the original code: after a visual item `next += max(T', H', W')`.
    #[default]
    Ernie45Vl,
    /// transformers 5.24 `get_rope_index`: `next += max(H', W')`.
    Ernie45VlHf,
    /// ERNIE 5.0 Uni-RoPE: text / audio at their sequence index, visual offset by their start.
    UniRope,
}

impl PositionRule {
    /// Name used by `ernie inspect`.
    pub fn name(self) -> &'static str {
        match self {
            PositionRule::Ernie45Vl => "ernie45-vl",
            PositionRule::Ernie45VlHf => "ernie45-vl-hf",
            PositionRule::UniRope => "uni-rope",
        }
    }
}

/// Positions of every token (module docs). Errors only if a position overflows u32.
pub fn compute_positions(segments: &[Segment], rule: PositionRule) -> Result<(Vec<[u32; 3]>, u32)> {
    let overflow = || Error::Prompt { reason: "sequence positions overflow u32".into() };
    let to32 = |v: u64| u32::try_from(v).map_err(|_| overflow());
    let mut out = Vec::new();
    let mut next: u64 = 0; // next text position (Ernie45Vl*) — sequence index for UniRope
    for seg in segments {
        let seq = out.len() as u64;
        let layout = match seg {
            Segment::Text { ids } => TokenLayout::Sequence { n: ids.len() },
            Segment::Media { item, .. } => item.layout,
        };
        match layout {
            TokenLayout::Sequence { n } => {
                let base = if rule == PositionRule::UniRope { seq } else { next };
                for j in 0..n as u64 {
                    let p = to32(base + j)?;
                    out.push([p, p, p]);
                }
                next = base + n as u64;
            }
            TokenLayout::Grid { t, h, w } => {
                let base = if rule == PositionRule::UniRope { seq } else { next };
                for tt in 0..t as u64 {
                    for hh in 0..h as u64 {
                        for ww in 0..w as u64 {
                            out.push([to32(base + tt)?, to32(base + hh)?, to32(base + ww)?]);
                        }
                    }
                }
                next = match rule {
                    PositionRule::Ernie45Vl => base + t.max(h).max(w) as u64,
                    PositionRule::Ernie45VlHf => base + h.max(w) as u64,
                    PositionRule::UniRope => seq + (t * h * w) as u64,
                };
            }
        }
    }
    Ok((out, to32(next)?))
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::super::media::{MediaItem, MediaKind, MediaTensor};
    use super::*;

    fn grid_item(kind: MediaKind, t: usize, h: usize, w: usize) -> MediaItem {
        MediaItem {
            kind,
            source: "x".into(),
            tensor: MediaTensor::default(),
            grid_thw: Some([t, 2 * h, 2 * w]),
            layout: TokenLayout::Grid { t, h, w },
            details: Map::new(),
        }
    }

    #[test]
    fn worked_example_positions() {
        let segs = vec![
            Segment::Text { ids: vec![0, 1, 2] },
            Segment::Media { item: grid_item(MediaKind::Image, 1, 2, 3), placeholder_id: 9 },
            Segment::Text { ids: vec![3, 4] },
        ];
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45Vl).unwrap();
        assert_eq!(&pos[..3], &[[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
        assert_eq!(pos[3], [3, 3, 3]);
        assert_eq!(pos[8], [3, 4, 5]);
        assert_eq!(&pos[9..], &[[6, 6, 6], [7, 7, 7]]);
        assert_eq!(next, 8);
        let (pos, next) = compute_positions(&segs, PositionRule::UniRope).unwrap();
        assert_eq!(pos[3], [3, 3, 3]);
        assert_eq!(pos[8], [3, 4, 5]);
        assert_eq!(&pos[9..], &[[9, 9, 9], [10, 10, 10]]);
        assert_eq!(next, 11);
    }

    #[test]
    fn video_rules_differ_only_after_long_videos() {
        let segs = vec![
            Segment::Media { item: grid_item(MediaKind::Video, 8, 2, 3), placeholder_id: 9 },
            Segment::Text { ids: vec![1] },
        ];
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45Vl).unwrap();
        assert_eq!((pos[48], next), ([8, 8, 8], 9));
        let (pos, next) = compute_positions(&segs, PositionRule::Ernie45VlHf).unwrap();
        assert_eq!((pos[48], next), ([3, 3, 3], 4));
    }
}
