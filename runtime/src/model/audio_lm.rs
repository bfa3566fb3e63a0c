//! ERNIE 5.0's audio parts on the decoder (spec `ernie5-generation.md` §2, §5.2-5.3): the level
//! embeddings that turn codec codes into input rows, and the per-level heads of next-codec
//! prediction (NCP). The codec itself (PCM ↔ codes) lives in `model/audio_codec/`.
//!
//! Checkpoint names (Q = `audio.num_levels`, V = `audio.codebook_size`, H = hidden):
//! ```text
//! audio.embed_tokens.weight      [Q·V, H]   level q's code c is row q·V + c  [CSM]
//! audio.head_norms.{q}.weight    [H]        RMSNorm before level q's head
//! audio.heads.{q}.weight         [V + 1, H] for q = 0 (row V = end of audio), [V, H] for q ≥ 1
//! ```
//! A checkpoint may omit the heads (it can then take audio in but not generate it) or every
//! `audio.*` tensor (no audio at all); a partial set is a checkpoint error listing what is missing.

use crate::config::AudioGenConfig;
use crate::nn::linear::Linear;
use crate::ops::rms_norm;
use crate::tensor::{Elems, Tensor};
use crate::weights::Weights;
use crate::{Error, Result};

/// The refusal when a checkpoint lacks the heads (spec §1: "a clear error naming the missing part").
pub const NO_AUDIO_HEADS: &str = "this checkpoint has no audio heads (audio.heads.{q}, audio.head_norms.{q}): it cannot generate audio";

/// The per-level NCP heads.
pub struct AudioHeads {
    /// `[Q]` × `[H]` RMSNorm weights (`audio.head_norms.{q}.weight`).
    pub norms: Vec<Vec<f32>>,
    /// `[Q]` heads: `[V + 1, H]` for level 0, `[V, H]` after (`audio.heads.{q}.weight`).
    pub heads: Vec<Linear>,
}

/// Level embeddings and (optionally) heads of an `ernie5` checkpoint with an `audio` section.
pub struct AudioLm {
    /// The `audio` config section.
    pub cfg: AudioGenConfig,
    /// H.
    pub hidden: usize,
    /// `[Q·V, H]`.
    pub embed_tokens: Tensor,
    /// `None` for a checkpoint that reads audio but cannot generate it.
    pub heads: Option<AudioHeads>,
    /// RMSNorm epsilon of the decoder (the head norms use it).
    pub eps: f32,
}

impl AudioLm {
    /// Takes the `audio.*` tensors for `cfg` from `w`. `Ok(None)` when the checkpoint has none.
    /// Missing pieces of a partial set are recorded in `w` (reported by [`Weights::finish`]).
    ///
    /// Errors: [`Error::TensorShape`] for a tensor of the wrong shape.
    pub fn load(w: &mut Weights, cfg: &AudioGenConfig, hidden: usize, eps: f32) -> Result<Option<AudioLm>> {
        if w.names_with_prefix("audio.").next().is_none() {
            return Ok(None);
        }
        let (q, v, h) = (cfg.num_levels, cfg.codebook_size, hidden);
        let embed_tokens = w.take("audio.embed_tokens.weight", &[q * v, h])?;
        let has_heads = w.names_with_prefix("audio.heads.").next().is_some() || w.names_with_prefix("audio.head_norms.").next().is_some();
        let heads = if has_heads {
            let mut norms = Vec::with_capacity(q);
            let mut heads = Vec::with_capacity(q);
            for level in 0..q {
                norms.push(w.take_f32(&format!("audio.head_norms.{level}.weight"), &[h])?);
                let rows = if level == 0 { v + 1 } else { v };
                heads.push(Linear::of(w.take(&format!("audio.heads.{level}.weight"), &[rows, h])?, None));
            }
            Some(AudioHeads { norms, heads })
        } else {
            None
        };
        Ok(Some(AudioLm { cfg: cfg.clone(), hidden, embed_tokens, heads, eps }))
    }

    /// Q.
    pub fn num_levels(&self) -> usize {
        self.cfg.num_levels
    }

    /// V (level 0's head has one more class: end of audio).
    pub fn codebook_size(&self) -> usize {
        self.cfg.codebook_size
    }

    /// The heads, or the refusal [`NO_AUDIO_HEADS`] ([`Error::Request`]).
    pub fn heads(&self) -> Result<&AudioHeads> {
        self.heads.as_ref().ok_or_else(|| Error::Request(NO_AUDIO_HEADS.into()))
    }

    /// Adds level `level`'s embedding of `code` (row `level·V + code`) to `x` (`[H]`).
    ///
    /// Errors: [`Error::Request`] for a level `>= Q` or a code `>= V`.
    pub fn add_code(&self, level: usize, code: u32, x: &mut [f32]) -> Result<()> {
        let (q, v, h) = (self.num_levels(), self.codebook_size(), self.hidden);
        if level >= q {
            return Err(Error::Request(format!("audio level {level} is outside the model's {q} levels")));
        }
        if code as usize >= v {
            return Err(Error::Request(format!("audio code {code} at level {level} is outside the codebook of {v}")));
        }
        if x.len() != h {
            return Err(Error::ShapeMismatch { op: "AudioLm::add_code", expected: format!("[{h}]"), got: x.len().to_string() });
        }
        let r = (level * v + code as usize) * h..(level * v + code as usize + 1) * h;
        match self.embed_tokens.elems() {
            Elems::F32(s) => x.iter_mut().zip(&s[r]).for_each(|(a, b)| *a += b),
            Elems::Bf16(s) => x.iter_mut().zip(&s[r]).for_each(|(a, b)| *a += b.to_f32()),
            Elems::F16(s) => x.iter_mut().zip(&s[r]).for_each(|(a, b)| *a += b.to_f32()),
        }
        Ok(())
    }

    /// A frame's input row: `Σ_q embed[q·V + c_q]` (spec §5.2), `[H]`, summed in level order.
    /// `codes`: one code per level.
    ///
    /// Errors: [`Error::Request`] for a code count other than Q or a code `>= V`.
    pub fn frame_embedding(&self, codes: &[u32]) -> Result<Vec<f32>> {
        if codes.len() != self.num_levels() {
            return Err(Error::Request(format!("an audio frame has {} codes; this model uses {} levels", codes.len(), self.num_levels())));
        }
        let mut x = vec![0.0f32; self.hidden]; // [H]
        for (q, &c) in codes.iter().enumerate() {
            self.add_code(q, c, &mut x)?;
        }
        Ok(x)
    }

    /// Input rows of a clip: `codes` is `[Q][frames]`; returns `[frames, H]`.
    ///
    /// Errors: [`Error::Request`] for a level count other than Q, levels of unequal length, no
    /// frames, or a code `>= V` (naming level and frame).
    pub fn clip_embeddings(&self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        let frames = check_codes(codes, self.num_levels(), self.codebook_size())?;
        let mut x = Vec::with_capacity(frames * self.hidden); // [frames, H]
        for f in 0..frames {
            let frame: Vec<u32> = codes.iter().map(|level| level[f]).collect();
            x.extend(self.frame_embedding(&frame)?);
        }
        Ok(x)
    }

    /// Level `level`'s logits for one hidden row `h` (`[H]`): `heads[q](RMSNorm_q(h))`, `[V + 1]`
    /// for level 0 (the last = end of audio), `[V]` after.
    ///
    /// Errors: [`NO_AUDIO_HEADS`]; [`Error::Request`] for a level `>= Q`.
    pub fn level_logits(&self, level: usize, h: &[f32]) -> Result<Vec<f32>> {
        let heads = self.heads()?;
        let (Some(norm), Some(head)) = (heads.norms.get(level), heads.heads.get(level)) else {
            return Err(Error::Request(format!("audio level {level} is outside the model's {} levels", self.num_levels())));
        };
        let mut normed = vec![0.0f32; h.len()]; // [H]
        rms_norm(h, norm, self.eps, &mut normed);
        head.forward(&normed) // [V (+1)]
    }
}

/// Checks codes `[Q][frames]`: `q` levels of equal, non-zero length, every code `< v`. Returns
/// the frame count.
///
/// Errors: [`Error::Request`] naming the level (and frame) at fault.
pub fn check_codes(codes: &[Vec<u32>], q: usize, v: usize) -> Result<usize> {
    if codes.len() != q {
        return Err(Error::Request(format!("audio codes have {} levels; this model uses {q}", codes.len())));
    }
    let frames = codes.first().map_or(0, Vec::len);
    if frames == 0 {
        return Err(Error::Request("the audio clip has no frames".into()));
    }
    for (level, c) in codes.iter().enumerate() {
        if c.len() != frames {
            return Err(Error::Request(format!("audio level {level} has {} frames; level 0 has {frames}", c.len())));
        }
        if let Some((f, &code)) = c.iter().enumerate().find(|(_, &code)| code as usize >= v) {
            return Err(Error::Request(format!("audio code {code} at level {level}, frame {f} is outside the codebook of {v}")));
        }
    }
    Ok(frames)
}
