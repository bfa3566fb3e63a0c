//! SEANet convolution stacks of Mimi (transformers 5.25.0 `modeling_mimi.py`: `MimiConv1d`,
//! `MimiConvTranspose1d`, `MimiResnetBlock`, `MimiEncoder`, `MimiDecoder`), plus the latent
//! downsample / upsample convs, which are the same two layer kinds.
//!
//! Activations are channel-major `[C, T]` f32. Every conv pads itself as `MimiConv1d.forward`
//! does (whole-clip mode, no padding cache): causal → `padding_total = k_eff − stride` on the
//! left; otherwise split `padding_total − padding_total/2` left, `padding_total/2` right; plus
//! `extra = ceil(T/stride)·stride − T` on the right so the last partial window is computed.

use super::config::{MimiConfig, PadMode};
use crate::ops::conv1d::{conv1d, conv_transpose1d, Conv1dSpec};
use crate::weights::Weights;
use crate::Result;

/// `MimiConv1d`: a padded `nn.Conv1d`. Weight `[c_out, c_in/groups, kernel]`, bias `[c_out]`.
pub(crate) struct Conv {
    spec: Conv1dSpec,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    causal: bool,
    pad_mode: PadMode,
}

impl Conv {
    /// Takes `{name}.conv.weight` (and `.bias` when `bias`).
    pub(crate) fn load(w: &mut Weights, name: &str, spec: Conv1dSpec, bias: bool, causal: bool, pad_mode: PadMode) -> Result<Conv> {
        spec.validate("MimiConv1d")?;
        let weight = w.take_f32(&format!("{name}.conv.weight"), &[spec.c_out, spec.c_in / spec.groups, spec.kernel])?;
        let b = if bias { Some(w.take_f32(&format!("{name}.conv.bias"), &[spec.c_out])?) } else { None };
        Ok(Conv { spec, w: weight, b, causal, pad_mode })
    }

    /// `x`: `[c_in, t]` → `[c_out, ceil(t / stride)]` (causal).
    pub(crate) fn forward(&self, x: &[f32], t: usize) -> Result<(Vec<f32>, usize)> {
        let s = &self.spec;
        let k_eff = s.effective_kernel();
        let total = k_eff.saturating_sub(s.stride); // padding_total (k_eff ≥ stride for every Mimi conv)
        let extra = t.div_ceil(s.stride) * s.stride - t;
        let (left, right) = if self.causal { (total, extra) } else { (total - total / 2, total / 2 + extra) };
        let padded = pad1d(x, s.c_in, t, left, right, self.pad_mode);
        let tp = t + left + right;
        let y = conv1d(&padded, tp, &self.w, self.b.as_deref(), s)?;
        let t_out = s.conv_out_len(tp)?;
        Ok((y, t_out))
    }
}

impl Conv {
    /// Streaming twin of [`Conv::forward`] for a stride-1 causal conv: `ctx` carries the last
    /// `padding_total` input samples per channel between calls (`[c_in, padding_total]`; empty
    /// before the first call, then filled as the whole-clip padding would be: zeros, or the first
    /// sample repeated for `replicate`). Chunks in sequence give the whole-clip output.
    ///
    /// Errors: [`crate::Error::Request`] for a non-causal, strided or reflect-padded conv (their
    /// whole-clip output depends on samples not seen yet).
    pub(crate) fn forward_stream(&self, x: &[f32], t: usize, ctx: &mut Vec<f32>) -> Result<Vec<f32>> {
        let s = &self.spec;
        if !self.causal || s.stride != 1 || self.pad_mode == PadMode::Reflect {
            return Err(crate::Error::Request("streaming needs causal, stride-1 convs with constant or replicate padding".into()));
        }
        let pt = s.effective_kernel() - 1;
        if ctx.is_empty() && pt > 0 {
            *ctx = match self.pad_mode {
                PadMode::Replicate if t > 0 => x.chunks(t).flat_map(|row| std::iter::repeat_n(row[0], pt)).collect(),
                _ => vec![0.0; s.c_in * pt],
            };
        }
        let tp = pt + t;
        let mut joined = Vec::with_capacity(s.c_in * tp); // [c_in, pt + t]
        for c in 0..s.c_in {
            joined.extend_from_slice(&ctx[c * pt..(c + 1) * pt]);
            joined.extend_from_slice(&x[c * t..(c + 1) * t]);
        }
        ctx.clear();
        for row in joined.chunks(tp) {
            ctx.extend_from_slice(&row[tp - pt..]);
        }
        conv1d(&joined, tp, &self.w, self.b.as_deref(), s)
    }
}

/// `MimiConvTranspose1d`: `nn.ConvTranspose1d` then a fixed trim of `kernel − stride` samples
/// (`ceil(total · trim_right_ratio)` on the right when causal, else `total/2`). Weight
/// `[c_in, c_out/groups, kernel]`.
pub(crate) struct ConvTr {
    spec: Conv1dSpec,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    trim_left: usize,
    trim_right: usize,
}

impl ConvTr {
    pub(crate) fn load(w: &mut Weights, name: &str, spec: Conv1dSpec, bias: bool, cfg: &MimiConfig) -> Result<ConvTr> {
        spec.validate("MimiConvTranspose1d")?;
        let weight = w.take_f32(&format!("{name}.conv.weight"), &[spec.c_in, spec.c_out / spec.groups, spec.kernel])?;
        let b = if bias { Some(w.take_f32(&format!("{name}.conv.bias"), &[spec.c_out])?) } else { None };
        let total = spec.kernel.saturating_sub(spec.stride);
        let trim_right = if cfg.use_causal_conv { (total as f64 * cfg.trim_right_ratio).ceil() as usize } else { total / 2 };
        Ok(ConvTr { spec, w: weight, b, trim_left: total - trim_right.min(total), trim_right: trim_right.min(total) })
    }

    /// `x`: `[c_in, t]` → `[c_out, t·stride]` (for `kernel ≥ stride`).
    pub(crate) fn forward(&self, x: &[f32], t: usize) -> Result<(Vec<f32>, usize)> {
        let y = conv_transpose1d(x, t, &self.w, self.b.as_deref(), &self.spec)?;
        let full = self.spec.conv_transpose_out_len(t);
        let t_out = full - self.trim_left - self.trim_right;
        let mut out = Vec::with_capacity(self.spec.c_out * t_out);
        for row in y.chunks(full.max(1)) {
            out.extend_from_slice(&row[self.trim_left..self.trim_left + t_out]);
        }
        Ok((out, t_out))
    }
}

impl ConvTr {
    /// Streaming twin of [`ConvTr::forward`] (causal, `trim_right_ratio` 1: nothing trimmed on the
    /// left): overlap-add, carrying the `kernel − stride` not-yet-complete output samples per
    /// channel in `tail` (`[c_out, kernel − stride]`, bias not yet added). `x`: `[c_in, t]` →
    /// `[c_out, t·stride]`.
    ///
    /// Errors: [`crate::Error::Request`] when the trim is not all on the right.
    pub(crate) fn forward_stream(&self, x: &[f32], t: usize, tail: &mut Vec<f32>) -> Result<Vec<f32>> {
        let s = &self.spec;
        if self.trim_left != 0 || s.kernel < s.stride {
            return Err(crate::Error::Request("streaming needs causal transposed convs trimmed on the right only".into()));
        }
        let keep = s.kernel - s.stride;
        let full = s.conv_transpose_out_len(t);
        let mut y = conv_transpose1d(x, t, &self.w, None, s)?; // [c_out, full]
        if tail.is_empty() {
            *tail = vec![0.0; s.c_out * keep];
        }
        let n = t * s.stride;
        let mut out = Vec::with_capacity(s.c_out * n);
        for (c, row) in y.chunks_mut(full.max(1)).enumerate() {
            for (v, p) in row.iter_mut().zip(&tail[c * keep..(c + 1) * keep]) {
                *v += p;
            }
            let b = self.b.as_ref().map_or(0.0, |b| b[c]);
            out.extend(row[..n].iter().map(|v| v + b));
        }
        tail.clear();
        for row in y.chunks(full.max(1)) {
            tail.extend_from_slice(&row[n..]);
        }
        Ok(out)
    }

    /// Output steps per input step.
    pub(crate) fn stride(&self) -> usize {
        self.spec.stride
    }
}

/// `nn.ELU()` (α = 1) in place: `x` for `x > 0`, else `exp(x) − 1`.
pub(crate) fn elu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        if *v <= 0.0 {
            *v = v.exp_m1();
        }
    }
}

/// `torch.nn.functional.pad` of each row of `x` (`[c, t]`) by `left`/`right` samples; reflect
/// pads as `MimiConv1d._pad1d` does (zeros appended first when the input is too short to mirror).
pub(crate) fn pad1d(x: &[f32], c: usize, t: usize, left: usize, right: usize, mode: PadMode) -> Vec<f32> {
    let tp = t + left + right;
    let mut out = vec![0.0f32; c * tp];
    if t == 0 {
        return out;
    }
    // reflect on a too-short input: mirror over `t + extra` samples whose tail is zeros.
    let extra = if mode == PadMode::Reflect && t <= left.max(right) { left.max(right) - t + 1 } else { 0 };
    let tr = t + extra; // length the reflection sees
    for (row, o) in x.chunks(t).zip(out.chunks_mut(tp)) {
        let at = |i: usize| if i < t { row[i] } else { 0.0 };
        for (p, v) in o.iter_mut().enumerate() {
            let i = p as isize - left as isize; // index in the unpadded row
            *v = if (0..t as isize).contains(&i) {
                row[i as usize]
            } else {
                match mode {
                    PadMode::Constant => 0.0,
                    PadMode::Replicate => row[i.clamp(0, t as isize - 1) as usize],
                    PadMode::Reflect => {
                        let m = if i < 0 { -i } else if i >= tr as isize { 2 * (tr as isize - 1) - i } else { i };
                        at(m as usize)
                    }
                }
            };
        }
    }
    out
}

/// `MimiResnetBlock`: `x + conv₂(elu(conv₁(elu(x))))`, conv₁ `dim → dim/compress` with kernel
/// `residual_kernel_size` and the block's dilation, conv₂ `→ dim` with kernel 1; an optional 1x1
/// conv shortcut.
pub(crate) struct ResBlock {
    conv1: Conv,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl ResBlock {
    fn load(w: &mut Weights, name: &str, cfg: &MimiConfig, dim: usize, dilation: usize) -> Result<ResBlock> {
        let hidden = dim / cfg.compress;
        let spec1 = Conv1dSpec { c_in: dim, c_out: hidden, kernel: cfg.residual_kernel_size, stride: 1, dilation, groups: 1 };
        let spec2 = Conv1dSpec { c_in: hidden, c_out: dim, kernel: 1, stride: 1, dilation: 1, groups: 1 };
        let (causal, pad) = (cfg.use_causal_conv, cfg.pad_mode);
        let conv1 = Conv::load(w, &format!("{name}.block.1"), spec1, true, causal, pad)?;
        let conv2 = Conv::load(w, &format!("{name}.block.3"), spec2, true, causal, pad)?;
        let shortcut = if cfg.use_conv_shortcut {
            let spec = Conv1dSpec { c_in: dim, c_out: dim, kernel: 1, stride: 1, dilation: 1, groups: 1 };
            Some(Conv::load(w, &format!("{name}.shortcut"), spec, true, causal, pad)?)
        } else {
            None
        };
        Ok(ResBlock { conv1, conv2, shortcut })
    }

    fn forward(&self, x: &[f32], t: usize) -> Result<Vec<f32>> {
        let mut h = x.to_vec();
        elu_in_place(&mut h);
        let (mut h, t1) = self.conv1.forward(&h, t)?;
        elu_in_place(&mut h);
        let (mut h, _) = self.conv2.forward(&h, t1)?;
        match &self.shortcut {
            Some(s) => {
                let (r, _) = s.forward(x, t)?;
                h.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
            }
            None => h.iter_mut().zip(x).for_each(|(a, b)| *a += b),
        }
        Ok(h)
    }
}

impl ResBlock {
    fn forward_stream(&self, x: &[f32], t: usize, st: &mut Slots) -> Result<Vec<f32>> {
        let mut h = x.to_vec();
        elu_in_place(&mut h);
        let mut h = self.conv1.forward_stream(&h, t, st.next())?;
        elu_in_place(&mut h);
        let mut h = self.conv2.forward_stream(&h, t, st.next())?;
        match &self.shortcut {
            Some(s) => {
                let r = s.forward_stream(x, t, st.next())?;
                h.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
            }
            None => h.iter_mut().zip(x).for_each(|(a, b)| *a += b),
        }
        Ok(h)
    }
}

/// Per-conv streaming buffers of a SEANet stack, handed out in layer order.
#[derive(Default)]
pub(crate) struct Slots {
    bufs: Vec<Vec<f32>>,
    cursor: usize,
}

impl Slots {
    fn next(&mut self) -> &mut Vec<f32> {
        if self.cursor == self.bufs.len() {
            self.bufs.push(Vec::new());
        }
        self.cursor += 1;
        &mut self.bufs[self.cursor - 1]
    }
}

/// One entry of a SEANet `layers` list (the `nn.ModuleList` index is the tensor-name index).
enum Layer {
    Elu,
    Conv(Conv),
    ConvTr(ConvTr),
    Res(ResBlock),
}

/// A SEANet stack: `MimiEncoder` (audio `[1, samples]` → `[H, samples / hop]`) or `MimiDecoder`
/// (`[H, steps]` → audio `[1, steps · hop]`).
pub(crate) struct Seanet {
    layers: Vec<Layer>,
    c_in: usize,
}

impl Seanet {
    /// Loads `encoder.layers.*` in `MimiEncoder`'s order: first conv, then per reversed ratio the
    /// residual blocks, ELU and a stride-`ratio` conv (kernel 2·ratio) doubling the channels; then
    /// ELU and the last conv to H.
    pub(crate) fn load_encoder(w: &mut Weights, cfg: &MimiConfig) -> Result<Seanet> {
        let (causal, pad) = (cfg.use_causal_conv, cfg.pad_mode);
        let name = |i: usize| format!("encoder.layers.{i}");
        let nf = cfg.num_filters;
        let mut layers = vec![Layer::Conv(Conv::load(w, &name(0), spec(cfg.audio_channels, nf, cfg.kernel_size, 1), true, causal, pad)?)];
        let mut scale = nf;
        for &ratio in cfg.upsampling_ratios.iter().rev() {
            for j in 0..cfg.num_residual_layers {
                let dilation = dilation(cfg, j);
                layers.push(Layer::Res(ResBlock::load(w, &name(layers.len()), cfg, scale, dilation)?));
            }
            layers.push(Layer::Elu);
            let conv = Conv::load(w, &name(layers.len()), spec(scale, scale * 2, 2 * ratio, ratio), true, causal, pad)?;
            layers.push(Layer::Conv(conv));
            scale *= 2;
        }
        layers.push(Layer::Elu);
        let last = Conv::load(w, &name(layers.len()), spec(scale, cfg.hidden_size, cfg.last_kernel_size, 1), true, causal, pad)?;
        layers.push(Layer::Conv(last));
        Ok(Seanet { layers, c_in: cfg.audio_channels })
    }

    /// Loads `decoder.layers.*` in `MimiDecoder`'s order: first conv H → 2^n·nf, then per ratio
    /// ELU, a transposed conv halving the channels (kernel 2·ratio, stride ratio) and the residual
    /// blocks; then ELU and the last conv to audio.
    pub(crate) fn load_decoder(w: &mut Weights, cfg: &MimiConfig) -> Result<Seanet> {
        let (causal, pad) = (cfg.use_causal_conv, cfg.pad_mode);
        let name = |i: usize| format!("decoder.layers.{i}");
        let mut scale = cfg.num_filters << cfg.upsampling_ratios.len();
        let mut layers = vec![Layer::Conv(Conv::load(w, &name(0), spec(cfg.hidden_size, scale, cfg.kernel_size, 1), true, causal, pad)?)];
        for &ratio in &cfg.upsampling_ratios {
            layers.push(Layer::Elu);
            let tr = ConvTr::load(w, &name(layers.len()), spec(scale, scale / 2, 2 * ratio, ratio), true, cfg)?;
            layers.push(Layer::ConvTr(tr));
            for j in 0..cfg.num_residual_layers {
                let dilation = dilation(cfg, j);
                layers.push(Layer::Res(ResBlock::load(w, &name(layers.len()), cfg, scale / 2, dilation)?));
            }
            scale /= 2;
        }
        layers.push(Layer::Elu);
        let last = Conv::load(w, &name(layers.len()), spec(cfg.num_filters, cfg.audio_channels, cfg.last_kernel_size, 1), true, causal, pad)?;
        layers.push(Layer::Conv(last));
        Ok(Seanet { layers, c_in: cfg.hidden_size })
    }

    /// `x`: `[c_in, t]` → (`[c_out, t_out]`, `t_out`).
    pub(crate) fn forward(&self, x: &[f32], t: usize) -> Result<(Vec<f32>, usize)> {
        debug_assert_eq!(x.len(), self.c_in * t);
        let (mut h, mut t) = (x.to_vec(), t);
        for layer in &self.layers {
            match layer {
                Layer::Elu => elu_in_place(&mut h),
                Layer::Conv(c) => (h, t) = c.forward(&h, t)?,
                Layer::ConvTr(c) => (h, t) = c.forward(&h, t)?,
                Layer::Res(r) => h = r.forward(&h, t)?,
            }
        }
        Ok((h, t))
    }
}

impl Seanet {
    /// Streaming twin of [`Seanet::forward`] for the decoder stack: `x` `[c_in, t]` → output of
    /// `t · prod(ratios)` samples; `st` carries every conv's context between calls.
    pub(crate) fn forward_stream(&self, x: &[f32], t: usize, st: &mut Slots) -> Result<(Vec<f32>, usize)> {
        st.cursor = 0;
        let (mut h, mut t) = (x.to_vec(), t);
        for layer in &self.layers {
            match layer {
                Layer::Elu => elu_in_place(&mut h),
                Layer::Conv(c) => h = c.forward_stream(&h, t, st.next())?,
                Layer::ConvTr(c) => {
                    h = c.forward_stream(&h, t, st.next())?;
                    t *= c.stride();
                }
                Layer::Res(r) => h = r.forward_stream(&h, t, st)?,
            }
        }
        Ok((h, t))
    }
}

fn spec(c_in: usize, c_out: usize, kernel: usize, stride: usize) -> Conv1dSpec {
    Conv1dSpec { c_in, c_out, kernel, stride, dilation: 1, groups: 1 }
}

/// Dilation of residual block `j` of a stage: `dilation_growth_rate^j` (bounded by the config's
/// limits: ≤ 64^15 would overflow, so saturate; such a dilation then fails the length check).
fn dilation(cfg: &MimiConfig, j: usize) -> usize {
    cfg.dilation_growth_rate.saturating_pow(j as u32).min(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_modes_match_torch() {
        let x = [1.0, 2.0, 3.0];
        assert_eq!(pad1d(&x, 1, 3, 2, 1, PadMode::Constant), vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0]);
        assert_eq!(pad1d(&x, 1, 3, 2, 1, PadMode::Replicate), vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
        // F.pad([1,2,3], (2, 1), "reflect") = [3, 2, 1, 2, 3, 2]
        assert_eq!(pad1d(&x, 1, 3, 2, 1, PadMode::Reflect), vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0]);
        // `_pad1d` on an input too short to mirror (values printed by transformers 5.25.0).
        assert_eq!(pad1d(&[1.0, 2.0], 1, 2, 3, 0, PadMode::Reflect), vec![0.0, 0.0, 2.0, 1.0, 2.0]);
        assert_eq!(pad1d(&[1.0, 2.0], 1, 2, 1, 3, PadMode::Reflect), vec![2.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
    }
}
