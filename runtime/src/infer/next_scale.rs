//! Next-scale bitwise prediction (NFSP, one frame; spec `ernie5-generation.md` §3): coarse-to-fine
//! scales of d-bit tokens, each scale predicted in parallel by one block-causal forward, summed
//! into the latent the image decoder turns into pixels.
//!
//! Our exact reading (the spec leaves the first scale's slot open; the torch oracle
//! `tests/reference/make_nfsp_reference.py` implements the same):
//! 1. Sequence `prompt ids, <|BOI|>`; BOI is scale 1's one slot: its input is `embed[BOI] +
//!    scale_embed[0]` (Infinity adds its level embedding to the start token). The prompt runs
//!    causally at integer positions `0..s` (s = BOI's index + 1); BOI's final hidden row predicts
//!    scale 1's 1×1 grid.
//! 2. Scale k ≥ 2 (0-based `k ≥ 1`): one slot per cell of its `h_k × w_k` grid, row-major, input
//!    `word_embed(bilinear(summed → h_k×w_k)) + scale_embed[k]`, at `t = s`,
//!    `h = s + (i + 0.5)·H_f/h_k − 0.5`, `w = s + (j + 0.5)·W_f/w_k − 0.5` (`"center"`; `"top_left"`:
//!    `s + i·H_f/h_k`), formed in f64 and rounded once to f32; one forward with no causal mask
//!    inside the scale ([`Transformer::forward_block`]).
//! 3. Bit logits `head(head_norm(hidden))` `[cells, d, 2]`; with cfg ≠ 1 the unconditional sequence
//!    (`<|begin_of_sentence|> <|BOI|>`, its own KV cache and its own s) runs the same slots and
//!    `logits = cfg·cond + (1 − cfg)·uncond`. τ = 0: bit = argmax (ties → 0). Else
//!    `p1 = softmax(logits / τ)[1]`; top-p sets `p1 = 0` when `p1 ≤ 1 − top_p`, else `p1 = 1` when
//!    `1 − p1 ≤ 1 − top_p`; bit = `u < p1` with one uniform per bit (cell-major, then bit), drawn
//!    from the seeded [`Sampler`] or taken from injected uniforms.
//! 4. `codes = (2b − 1)/√d` `[d, h_k, w_k]`; `summed += bilinear(codes → H_f×W_f)`.
//! 5. The sum slot (cond only): `word_embed(area(summed → 1×1)) + scale_embed[K]` at the 1×1 grid's
//!    position (centre: `h = s + H_f/2 − 0.5`); its text-head argmax is [`NextScaleOutput::end_token`]
//!    (EOI for a trained model). EOI itself is not fed: nothing follows in this loop.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::config::{ScalePositions, VisualGenConfig};
use crate::error::option_err;
use crate::infer::sample::{argmax, Sampler, SamplingParams};
use crate::model::decoder::{Logits, Transformer};
use crate::model::visual_gen::VisualGenHead;
use crate::nn::kv_cache::KvCache;
use crate::nn::moe::Routing;
use crate::nn::trace::Trace;
use crate::ops::{area_pool_1x1, resample_bilinear, RopePositions};
use crate::{Error, Result};

/// Options of one image generation (spec §3.5; defaults are Infinity's published settings).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageGenOptions {
    /// Classifier-free guidance scale; 1 skips the unconditional sequence.
    pub cfg: f32,
    /// Bit temperature; 0 is greedy.
    pub temperature: f32,
    /// Per-bit top-p in (0, 1]; 1 is off.
    pub top_p: f32,
    /// Seed of the uniforms when none are injected.
    pub seed: u64,
    /// Injected uniforms in [0, 1), one per sampled bit in loop order (tests feed both sides the
    /// same ones); `None` draws them from the seeded sampler.
    pub uniforms: Option<Vec<f32>>,
    /// Overrides the config's `scale_positions`.
    pub scale_positions: Option<ScalePositions>,
    /// The requested final token grid `(H_f, W_f)`; must be the schedule's last scale.
    pub grid: Option<(usize, usize)>,
    /// Record the per-layer expert ids of every forward ([`NextScaleOutput::routing`]).
    pub trace_routing: bool,
}

impl Default for ImageGenOptions {
    fn default() -> Self {
        ImageGenOptions {
            cfg: 3.0,
            temperature: 1.0,
            top_p: 0.97,
            seed: 0,
            uniforms: None,
            scale_positions: None,
            grid: None,
            trace_routing: false,
        }
    }
}

/// Routing of one forward of the conditional sequence: what `--routing-stats` counts, with the
/// slots of scales as their own modality.
#[derive(Clone, Debug)]
pub struct ForwardRouting {
    /// `None` for the prompt (text, BOI last), `Some(k)` for scale k's slots (0-based, k ≥ 1),
    /// `Some(K)` for the sum slot.
    pub scale: Option<usize>,
    /// Per MoE layer index: expert ids and weights `[rows, top_k]`.
    pub layers: BTreeMap<usize, Routing>,
}

/// What one NFSP run produced.
#[derive(Clone, Debug)]
pub struct NextScaleOutput {
    /// Per scale: the bits `[h_k·w_k, d]` (cell-major, row-major cells), each 0 or 1.
    pub bits: Vec<Vec<u8>>,
    /// The final accumulated latent `[d, H_f, W_f]` f32 (the image decoder's input).
    pub latent: Vec<f32>,
    /// d.
    pub channels: usize,
    /// `(H_f, W_f)`.
    pub grid: (usize, usize),
    /// The text head's argmax at the sum slot (EOI for a trained model).
    pub end_token: u32,
    /// Wall seconds per scale (both sequences), then the sum slot last.
    pub scale_seconds: Vec<f64>,
    /// Routing per forward of the conditional sequence, when asked for.
    pub routing: Vec<ForwardRouting>,
}

/// One sequence (conditional or unconditional) and its KV cache.
struct Seq {
    cache: KvCache,
    /// BOI's index + 1: the visual tokens' base position.
    s: f64,
}

/// Where the uniforms come from.
enum Uniforms<'a> {
    Seeded(Sampler),
    Injected(&'a [f32], usize),
}

impl Uniforms<'_> {
    fn next(&mut self) -> Result<f32> {
        match self {
            Uniforms::Seeded(s) => Ok(s.uniform()),
            Uniforms::Injected(u, at) => {
                let v = *u.get(*at).ok_or_else(|| option_err("uniforms", format!("{} injected uniforms are too few", u.len())))?;
                *at += 1;
                Ok(v)
            }
        }
    }
}

/// Runs the NFSP loop. `prompt_ids` is the conditional sequence and `uncond_ids` the
/// unconditional one (used when `opts.cfg != 1`), both ending with BOI.
///
/// Errors: [`Error::InvalidOption`] for a bad cfg / temperature / top-p, a grid off the schedule,
/// too few injected uniforms; [`Error::Request`] for empty sequences or ones not fitting the
/// model's context; the decoder's errors.
pub fn generate_latent(
    model: &Transformer,
    head: &VisualGenHead,
    vg: &VisualGenConfig,
    prompt_ids: &[u32],
    uncond_ids: &[u32],
    opts: &ImageGenOptions,
) -> Result<NextScaleOutput> {
    generate_latent_with(model, head, vg, prompt_ids, uncond_ids, opts, &mut |_, _, _| {})
}

/// [`generate_latent`] calling `on_scale(k, scales, seconds)` after each scale k (0-based) is
/// sampled: a front end's progress line.
pub fn generate_latent_with(
    model: &Transformer,
    head: &VisualGenHead,
    vg: &VisualGenConfig,
    prompt_ids: &[u32],
    uncond_ids: &[u32],
    opts: &ImageGenOptions,
    on_scale: &mut dyn FnMut(usize, usize, f64),
) -> Result<NextScaleOutput> {
    let (d, (hf, wf)) = (vg.bits, vg.final_grid());
    check_options(vg, opts)?;
    if head.bits != d || head.n_scale_rows != vg.scales.len() + 1 || head.hidden != model.cfg.hidden_size {
        return Err(Error::ShapeMismatch {
            op: "next_scale::generate_latent",
            expected: format!("a head for d {d}, {} scales, hidden {}", vg.scales.len(), model.cfg.hidden_size),
            got: format!("d {}, {} scale rows, hidden {}", head.bits, head.n_scale_rows, head.hidden),
        });
    }
    let centre = opts.scale_positions.unwrap_or(vg.scale_positions) == ScalePositions::Center;
    let mut uniforms = match &opts.uniforms {
        Some(u) => Uniforms::Injected(u, 0),
        None => Uniforms::Seeded(Sampler::new(SamplingParams { temperature: opts.temperature, top_k: 0, top_p: opts.top_p, seed: opts.seed })?),
    };
    let slots: usize = vg.scales.iter().skip(1).map(|&(h, w)| h * w).sum();
    let mut routing = Vec::new();
    let mut trace = Trace::default();
    let on = opts.trace_routing;

    // Scale 1: the prompt forward; BOI's row predicts the 1×1 grid.
    let t0 = Instant::now();
    let (mut cond, h_cond) = start(model, head, prompt_ids, slots, want(&mut trace, on))?;
    if opts.trace_routing {
        routing.push(ForwardRouting { scale: None, layers: std::mem::take(&mut trace.routing) });
    }
    let mut uncond = None;
    let mut h_uncond = Vec::new();
    if opts.cfg != 1.0 {
        let (u, h) = start(model, head, uncond_ids, slots, None)?;
        uncond = Some(u);
        h_uncond = h;
    }
    let mut summed = vec![0.0f32; d * hf * wf]; // [d, H_f, W_f]
    let mut bits_out = Vec::with_capacity(vg.scales.len());
    let mut seconds = Vec::with_capacity(vg.scales.len() + 1);
    let (mut lc, mut lu) = (head.bit_logits(&h_cond)?, if uncond.is_some() { head.bit_logits(&h_uncond)? } else { vec![] });
    for (k, &(hk, wk)) in vg.scales.iter().enumerate() {
        if k > 0 {
            let cells = latent_cells(&summed, d, (hf, wf), (hk, wk))?; // [cells, d]
            let x = head.slot_inputs(&cells, k)?; // [cells, H]
            let pos = slot_positions(cond.s, (hk, wk), (hf, wf), centre);
            lc = head.bit_logits(&model.forward_block(x.clone(), &mut cond.cache, RopePositions::Real(&pos), want(&mut trace, on))?)?;
            if opts.trace_routing {
                routing.push(ForwardRouting { scale: Some(k), layers: std::mem::take(&mut trace.routing) });
            }
            if let Some(u) = uncond.as_mut() {
                let pos = slot_positions(u.s, (hk, wk), (hf, wf), centre);
                lu = head.bit_logits(&model.forward_block(x, &mut u.cache, RopePositions::Real(&pos), None)?)?;
            }
        }
        let logits = if uncond.is_some() { guide(&lc, &lu, opts.cfg) } else { std::mem::take(&mut lc) }; // [cells, d, 2]
        let bits = sample_bits(&logits, opts, &mut uniforms)?; // [cells, d]
        accumulate(&mut summed, &bits, d, (hk, wk), (hf, wf))?;
        bits_out.push(bits);
        let dt = t0_or(&t0, &seconds);
        seconds.push(dt);
        on_scale(k, vg.scales.len(), dt);
    }

    // The sum slot: the whole latent pooled to 1×1, predicting EOI with the text head.
    let pooled = area_pool_1x1(&summed, d, (hf, wf))?; // [d] = [1, d]
    let x = head.slot_inputs(&pooled, vg.scales.len())?; // [1, H]
    let pos = slot_positions(cond.s, (1, 1), (hf, wf), centre);
    let hidden = model.forward_block(x, &mut cond.cache, RopePositions::Real(&pos), want(&mut trace, on))?; // [1, H]
    if opts.trace_routing {
        routing.push(ForwardRouting { scale: Some(vg.scales.len()), layers: std::mem::take(&mut trace.routing) });
    }
    let end_token = argmax(&model.head(&hidden)?);
    let dt = t0_or(&t0, &seconds);
    seconds.push(dt);
    Ok(NextScaleOutput { bits: bits_out, latent: summed, channels: d, grid: (hf, wf), end_token, scale_seconds: seconds, routing })
}

/// The trace when routing is recorded.
fn want(t: &mut Trace, on: bool) -> Option<&mut Trace> {
    on.then_some(t)
}

/// Seconds since `t0` minus those already booked.
fn t0_or(t0: &Instant, booked: &[f64]) -> f64 {
    t0.elapsed().as_secs_f64() - booked.iter().sum::<f64>()
}

fn check_options(vg: &VisualGenConfig, opts: &ImageGenOptions) -> Result<()> {
    if !opts.cfg.is_finite() {
        return Err(option_err("cfg", format!("{} must be a finite number", opts.cfg)));
    }
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(option_err("temperature", format!("{} must be a finite value >= 0", opts.temperature)));
    }
    if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
        return Err(option_err("top_p", format!("{} must be in (0, 1]", opts.top_p)));
    }
    if let Some(g) = opts.grid {
        if g != vg.final_grid() {
            let (h, w) = vg.final_grid();
            return Err(option_err("size", format!("a {}x{} token grid is not on this checkpoint's scale schedule (its final grid is {w}x{h} tokens)", g.1, g.0)));
        }
    }
    Ok(())
}

/// The prompt forward of one sequence (`ids` ends with BOI, which gets `scale_embed[0]`): its
/// cache, sized for the slots that follow, and BOI's final hidden row `[1, H]`.
fn start(model: &Transformer, head: &VisualGenHead, ids: &[u32], slots: usize, trace: Option<&mut Trace>) -> Result<(Seq, Vec<f32>)> {
    let h = model.cfg.hidden_size;
    if ids.is_empty() {
        return Err(Error::Request("the image prompt is empty".into()));
    }
    let mut cache = KvCache::new(&model.cfg, ids.len() + slots + 2)?;
    let mut x = model.embed(ids)?; // [t, H]
    let last = x.len() - h;
    x[last..].iter_mut().zip(head.scale_row(0)?).for_each(|(a, b)| *a += b);
    let hidden = model.forward_embeds(x, &mut cache, Logits::Hidden, RopePositions::Sequential(0), None, trace)?; // [t, H]
    Ok((Seq { cache, s: ids.len() as f64 }, hidden[hidden.len() - h..].to_vec()))
}

/// `summed` `[d, H_f, W_f]` resampled to grid `(h, w)` and transposed to slot rows `[h·w, d]`.
fn latent_cells(summed: &[f32], d: usize, fin: (usize, usize), grid: (usize, usize)) -> Result<Vec<f32>> {
    let r = resample_bilinear(summed, d, fin, grid)?; // [d, h, w]
    let n = grid.0 * grid.1;
    Ok((0..n).flat_map(|cell| (0..d).map(move |c| (c, cell))).map(|(c, cell)| r[c * n + cell]).collect())
}

/// Real `(t, h, w)` of every cell of `grid` on the final grid `fin` (module docs, step 2).
pub fn slot_positions(s: f64, (hk, wk): (usize, usize), (hf, wf): (usize, usize), centre: bool) -> Vec<[f32; 3]> {
    let at = |i: usize, n: usize, f: usize| if centre { s + (i as f64 + 0.5) * f as f64 / n as f64 - 0.5 } else { s + (i * f) as f64 / n as f64 };
    (0..hk).flat_map(|i| (0..wk).map(move |j| [s as f32, at(i, hk, hf) as f32, at(j, wk, wf) as f32])).collect()
}

/// `cfg·cond + (1 − cfg)·uncond`, elementwise in f32.
fn guide(cond: &[f32], uncond: &[f32], cfg: f32) -> Vec<f32> {
    cond.iter().zip(uncond).map(|(c, u)| cfg * c + (1.0 - cfg) * u).collect()
}

/// Bits from logits `[cells, d, 2]` (module docs, step 3) → `[cells, d]`.
fn sample_bits(logits: &[f32], opts: &ImageGenOptions, uniforms: &mut Uniforms<'_>) -> Result<Vec<u8>> {
    let drop = 1.0 - opts.top_p;
    logits
        .chunks_exact(2)
        .map(|l| {
            if opts.temperature == 0.0 {
                return Ok(u8::from(l[1] > l[0]));
            }
            let (a, b) = (l[0] / opts.temperature, l[1] / opts.temperature);
            let m = a.max(b);
            let (e0, e1) = ((a - m).exp(), (b - m).exp());
            let mut p1 = e1 / (e0 + e1);
            if p1 <= drop {
                p1 = 0.0;
            } else if 1.0 - p1 <= drop {
                p1 = 1.0;
            }
            Ok(u8::from(uniforms.next()? < p1))
        })
        .collect()
}

/// `summed += bilinear((2b − 1)/√d → H_f×W_f)`; `bits` `[cells, d]`.
fn accumulate(summed: &mut [f32], bits: &[u8], d: usize, grid: (usize, usize), fin: (usize, usize)) -> Result<()> {
    let n = grid.0 * grid.1;
    let inv = (d as f64).sqrt() as f32;
    let mut codes = vec![0.0f32; d * n]; // [d, h, w]
    for (cell, row) in bits.chunks_exact(d).enumerate() {
        for (c, &b) in row.iter().enumerate() {
            codes[c * n + cell] = (2.0 * b as f32 - 1.0) / inv;
        }
    }
    let up = resample_bilinear(&codes, d, grid, fin)?; // [d, H_f, W_f]
    summed.iter_mut().zip(&up).for_each(|(s, u)| *s += u);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_and_top_left_positions() {
        // 2×2 on a 4×4 final grid, s = 10: centres at 10.5 and 12.5, corners at 10 and 12.
        let c = slot_positions(10.0, (2, 2), (4, 4), true);
        assert_eq!(c, vec![[10.0, 10.5, 10.5], [10.0, 10.5, 12.5], [10.0, 12.5, 10.5], [10.0, 12.5, 12.5]]);
        let t = slot_positions(10.0, (2, 2), (4, 4), false);
        assert_eq!(t[3], [10.0, 12.0, 12.0]);
        // The final grid's own cells sit at integer positions either way.
        assert_eq!(slot_positions(3.0, (4, 4), (4, 4), true)[5], [3.0, 4.0, 4.0]);
    }

    #[test]
    fn top_p_drops_the_minority_bit() {
        let opts = ImageGenOptions { temperature: 1.0, top_p: 0.9, ..Default::default() };
        // p1 = sigmoid(3) ≈ 0.953: the minority (0, p ≈ 0.047 ≤ 0.1) is dropped, so bit 1 even
        // for a uniform of 0.99; p1 = sigmoid(1) ≈ 0.73 keeps both values.
        let mut u = Uniforms::Injected(&[0.99, 0.99, 0.5], 0);
        assert_eq!(sample_bits(&[0.0, 3.0, 0.0, 1.0, 0.0, 1.0], &opts, &mut u).unwrap(), vec![1, 0, 1]);
        let greedy = ImageGenOptions { temperature: 0.0, ..Default::default() };
        let mut none = Uniforms::Injected(&[], 0);
        assert_eq!(sample_bits(&[0.0, 0.0, 1.0, -1.0, -1.0, 2.0], &greedy, &mut none).unwrap(), vec![0, 0, 1]);
        assert!(sample_bits(&[0.0, 1.0], &opts, &mut none).is_err());
    }
}
