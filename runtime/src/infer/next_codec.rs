//! Next-codec prediction (NCP, spec `ernie5-generation.md` §5.3, ERNIE 5.0 Fig. 3): audio codes
//! `[Q][frames]` from a text prompt, one frame per decoder pass.
//!
//! The sequence is `prompt ids` + `<|BOA|>` + one row per generated frame. Frame `j` is predicted
//! at row `P + j` (P = prompt length): frame 0's input row is the `<|BOA|>` token's embedding,
//! frame `j ≥ 1`'s is frame `j − 1`'s summed level embeddings `Σ_q embed(q, c_q)` — the row that
//! carries a frame is the one that *predicts* the next. Positions: the running index on all three
//! RoPE axes (Uni-RoPE), `(P + j, P + j, P + j)`.
//!
//! Per frame, with a = L − Q: layers 0..a−1 → h; for q = 0..Q−1: h = layer[a+q](h);
//! logits_q = heads[q](RMSNorm_q(h)); sample c_q; h = h + embed(q, c_q). Each layer writes the
//! frame's K/V from this pass, so level q's embedding reaches layers after a+q at this position
//! and every layer at later positions. Level 0's extra class V ends the audio (that row is not
//! committed); else `max_frames` does.

use std::time::Instant;

use crate::model::audio_lm::AudioLm;
use crate::model::decoder::{Logits, Transformer};
use crate::nn::kv_cache::KvCache;
use crate::ops::RopePositions;
use crate::{Error, Result};

use super::sample::{argmax, Sampler, SamplingParams};

/// How codes are picked and when generation stops.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioGenOptions {
    /// Temperature, top-k, top-p, seed (one sampler over all levels and frames; temperature 0 =
    /// greedy, lowest code on ties).
    pub sampling: SamplingParams,
    /// Most frames to generate (Mimi: 12.5 per second); level 0's end class may stop earlier.
    pub max_frames: usize,
    /// Injected uniforms in [0, 1), one per sampled code in order (frame-major, level-minor),
    /// replacing the seeded generator (tests against an oracle); ignored when greedy.
    pub uniforms: Option<Vec<f32>>,
}

impl Default for AudioGenOptions {
    fn default() -> Self {
        AudioGenOptions { sampling: SamplingParams::default(), max_frames: 250, uniforms: None }
    }
}

/// Generated codes and timings.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioCodes {
    /// `[Q][frames]`, every code `< V`.
    pub codes: Vec<Vec<u32>>,
    /// Whether level 0's end-of-audio class stopped generation (else `max_frames` did).
    pub ended: bool,
    /// Wall time of the prompt prefill, seconds.
    pub prefill_secs: f64,
    /// Wall time of each frame's pass (including a final pass that ended the audio), seconds.
    pub frame_secs: Vec<f64>,
}

impl AudioCodes {
    /// Frames generated.
    pub fn frames(&self) -> usize {
        self.codes.first().map_or(0, Vec::len)
    }

    /// Generated frames per second of frame-pass wall time (0 when none).
    pub fn frames_per_sec(&self) -> f64 {
        let t: f64 = self.frame_secs.iter().sum();
        if t > 0.0 { self.frames() as f64 / t } else { 0.0 }
    }
}

/// Picks one code from `logits` (greedy, an injected uniform, or the seeded sampler).
fn pick(sampler: &mut Sampler, logits: &[f32], uniforms: &mut Option<std::slice::Iter<'_, f32>>) -> Result<u32> {
    if sampler.is_greedy() {
        return Ok(argmax(logits));
    }
    let Some(it) = uniforms.as_mut() else {
        return Ok(sampler.sample(logits));
    };
    let u = *it.next().ok_or_else(|| Error::Request("ran out of injected uniforms".into()))?;
    let dist = sampler.distribution(logits);
    let total: f32 = dist.iter().sum();
    let (mut cum, mut last) = (0.0f32, 0u32);
    for (i, &p) in dist.iter().enumerate() {
        if p > 0.0 {
            cum += p;
            last = i as u32;
            if u * total < cum {
                return Ok(i as u32);
            }
        }
    }
    Ok(last)
}

/// Generates audio codes after `prompt_ids` (the chat-templated text prompt, without
/// `<|BOA|>`), `boa_id` being the `<|BOA|>` token. `on_frame(j, codes_of_frame)` sees each frame
/// as it is sampled (streaming decode).
///
/// Errors: [`crate::model::audio_lm::NO_AUDIO_HEADS`]; [`Error::Unsupported`] for an elastic
/// model without every layer (NCP needs layers a..L−1 by index); [`Error::Request`] for an empty
/// prompt, `max_frames` 0 or a sequence beyond `max_position_embeddings`, bad sampling values,
/// too few injected uniforms; the decoder's errors.
pub fn generate_codes(
    model: &Transformer,
    audio: &AudioLm,
    prompt_ids: &[u32],
    boa_id: u32,
    opts: &AudioGenOptions,
    on_frame: &mut dyn FnMut(usize, &[u32]),
) -> Result<AudioCodes> {
    audio.heads()?;
    let (l, q, v, h) = (model.cfg.num_hidden_layers, audio.num_levels(), audio.codebook_size(), model.cfg.hidden_size);
    if model.layers.len() != l || model.layers.iter().enumerate().any(|(i, layer)| layer.index != i) {
        return Err(crate::error::unsupported("audio generation on an elastic model without every layer", "load the full model"));
    }
    if q > l {
        return Err(Error::Request(format!("{q} audio levels need at least {q} decoder layers, the model has {l}")));
    }
    if prompt_ids.is_empty() {
        return Err(Error::Request("the prompt is empty".into()));
    }
    if opts.max_frames == 0 {
        return Err(Error::Request("max_frames must be > 0".into()));
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut uniforms = opts.uniforms.as_ref().map(|u| u.iter());
    let a = l - q;
    let p = prompt_ids.len();
    let mut cache = KvCache::new(&model.cfg, p.saturating_add(opts.max_frames))?;

    let t0 = Instant::now();
    model.forward(prompt_ids, &mut cache, Logits::Hidden, None)?; // fills the prompt's K/V
    let prefill_secs = t0.elapsed().as_secs_f64();

    let mut x = model.embed(&[boa_id])?; // [1, H]: frame 0's input row
    let mut codes: Vec<Vec<u32>> = vec![Vec::with_capacity(opts.max_frames); q];
    let mut frame_secs = Vec::with_capacity(opts.max_frames);
    let mut ended = false;
    for j in 0..opts.max_frames {
        let t = Instant::now();
        let pos_i = u32::try_from(cache.next_position()).map_err(|_| Error::Request("position overflow".into()))?;
        let pos = [[pos_i; 3]]; // Uni-RoPE: running index on t, h, w
        model.forward_layers(&mut x, &mut cache, 0..a, RopePositions::ThreeD(&pos))?; // [1, H]
        let mut frame = Vec::with_capacity(q);
        for level in 0..q {
            model.forward_layers(&mut x, &mut cache, a + level..a + level + 1, RopePositions::ThreeD(&pos))?;
            let logits = audio.level_logits(level, &x)?; // [V (+1)]
            let c = pick(&mut sampler, &logits, &mut uniforms)?;
            if level == 0 && c as usize == v {
                ended = true;
                break;
            }
            audio.add_code(level, c, &mut x)?; // h += embed(q, c_q)
            frame.push(c);
        }
        frame_secs.push(t.elapsed().as_secs_f64());
        if ended {
            break;
        }
        model.commit_rows(&mut cache, 1)?;
        on_frame(j, &frame);
        for (level, &c) in frame.iter().enumerate() {
            codes[level].push(c);
        }
        if j + 1 < opts.max_frames {
            x = audio.frame_embedding(&frame)?; // next row's input: Σ_q embed(q, c_q)
            debug_assert_eq!(x.len(), h);
        }
    }
    Ok(AudioCodes { codes, ended, prefill_secs, frame_secs })
}

/// Prefill of a prompt holding audio clips (spec §5.2): `ids` (`[n]`) with each clip's rows
/// `start..start + frames` replaced by its frame embeddings (`codes` `[Q][frames]`), at running
/// positions `(i, i, i)` from an empty cache. Returns logits per `which`.
///
/// Errors: [`Error::Request`] for a non-empty cache, a clip outside `ids` or overlapping
/// another, the code errors of [`AudioLm::clip_embeddings`]; the decoder's errors.
pub fn prefill_with_audio(
    model: &Transformer,
    audio: &AudioLm,
    ids: &[u32],
    clips: &[(usize, &[Vec<u32>])],
    cache: &mut KvCache,
    which: Logits,
) -> Result<Vec<f32>> {
    let h = model.cfg.hidden_size;
    if !cache.is_empty() {
        return Err(Error::Request("an audio prompt must start a sequence (the cache is not empty)".into()));
    }
    let mut x = model.embed(ids)?; // [n, H]
    let mut end_prev = 0;
    for &(start, codes) in clips {
        let emb = audio.clip_embeddings(codes)?; // [frames, H]
        let frames = emb.len() / h;
        if start < end_prev || start + frames > ids.len() {
            return Err(Error::Request(format!("audio rows {start}..{} are outside the prompt of {} or overlap", start + frames, ids.len())));
        }
        x[start * h..(start + frames) * h].copy_from_slice(&emb);
        end_prev = start + frames;
    }
    let n = u32::try_from(ids.len()).map_err(|_| Error::Request("prompt too long".into()))?;
    let pos: Vec<[u32; 3]> = (0..n).map(|i| [i; 3]).collect(); // Uni-RoPE: text and audio alike
    model.forward_embeds(x, cache, which, RopePositions::ThreeD(&pos), None, None)
}
