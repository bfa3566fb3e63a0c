//! The latent-diffusion VAE decoder and the layers it shares with the encoder (spec
//! ernie5-generation §4.1; reference diffusers 0.42.1 `autoencoders/vae.py` `Decoder`,
//! `resnet.py` `ResnetBlock2D`, `attention_processor.py` `Attention` + `AttnProcessor2_0`,
//! `upsampling.py` `Upsample2D`).
//!
//! Activations are one image `[C, H, W]` f32 ([`Planes`]). Names are diffusers'
//! (`names.rs` maps the LDM spelling onto them).

use crate::ops::conv2d::{conv2d, Conv2dSpec, Padding};
use crate::ops::group_norm::group_norm;
use crate::ops::resample::upsample_nearest2x;
use crate::ops::{matmul_xwt, silu, softmax_in_place};
use crate::tensor::Tensor;
use crate::weights::Weights;
use crate::{Error, Result};

use super::config::VisionDecoderConfig;

/// GroupNorm epsilon of every norm in the VAE (diffusers passes `resnet_eps=1e-6` everywhere).
pub(super) const NORM_EPS: f32 = 1e-6;
/// Attention score blocks hold at most this many f32 (queries × keys), bounding memory at any size.
const ATTN_BLOCK_ELEMS: usize = 16 << 20;

/// One image `[c, h, w]` f32.
#[derive(Clone, Debug)]
pub(super) struct Planes {
    pub data: Vec<f32>,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// `nn.Conv2d` with bias, weights in f32.
pub(super) struct Conv {
    spec: Conv2dSpec,
    weight: Vec<f32>, // [out, in, k, k]
    bias: Vec<f32>,   // [out]
}

impl Conv {
    /// Takes `{name}.weight` `[cout, cin, k, k]` and `{name}.bias` `[cout]`.
    pub fn load(w: &mut Weights, name: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: Padding) -> Result<Conv> {
        let weight = w.take_f32(&format!("{name}.weight"), &[cout, cin, k, k])?;
        let bias = w.take_f32(&format!("{name}.bias"), &[cout])?;
        let spec = Conv2dSpec { in_channels: cin, out_channels: cout, kernel_h: k, kernel_w: k, stride, pad };
        Ok(Conv { spec, weight, bias })
    }

    /// A 3×3, stride-1, padding-1 conv (most of the network).
    pub fn load3(w: &mut Weights, name: &str, cin: usize, cout: usize) -> Result<Conv> {
        Conv::load(w, name, cin, cout, 3, 1, Padding::same(1))
    }

    pub fn forward(&self, x: &Planes) -> Result<Planes> {
        let (data, h, w) = conv2d(&self.spec, &x.data, x.h, x.w, &self.weight, Some(&self.bias))?;
        Ok(Planes { data, c: self.spec.out_channels, h, w })
    }
}

/// `nn.GroupNorm(groups, C, eps=1e-6)` with affine weight and bias.
pub(super) struct Norm {
    groups: usize,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl Norm {
    pub fn load(w: &mut Weights, name: &str, c: usize, groups: usize) -> Result<Norm> {
        Ok(Norm { groups, gamma: w.take_f32(&format!("{name}.weight"), &[c])?, beta: w.take_f32(&format!("{name}.bias"), &[c])? })
    }

    /// GroupNorm, then SiLU when `act` (every norm of the VAE but the attention's is followed by SiLU).
    pub fn forward(&self, x: &Planes, act: bool) -> Result<Planes> {
        let mut y = x.clone();
        group_norm(&mut y.data, x.h * x.w, self.groups, NORM_EPS, &self.gamma, &self.beta)?;
        if act {
            y.data.iter_mut().for_each(|v| *v = silu(*v));
        }
        Ok(y)
    }
}

/// diffusers `ResnetBlock2D` without time embedding:
/// `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, the skip through a 1×1 `conv_shortcut` when
/// the channel count changes (`output_scale_factor` 1, dropout off at inference).
pub(super) struct Resnet {
    norm1: Norm,
    conv1: Conv,
    norm2: Norm,
    conv2: Conv,
    shortcut: Option<Conv>,
}

impl Resnet {
    pub fn load(w: &mut Weights, p: &str, cin: usize, cout: usize, groups: usize) -> Result<Resnet> {
        Ok(Resnet {
            norm1: Norm::load(w, &format!("{p}.norm1"), cin, groups)?,
            conv1: Conv::load3(w, &format!("{p}.conv1"), cin, cout)?,
            norm2: Norm::load(w, &format!("{p}.norm2"), cout, groups)?,
            conv2: Conv::load3(w, &format!("{p}.conv2"), cout, cout)?,
            shortcut: if cin != cout {
                Some(Conv::load(w, &format!("{p}.conv_shortcut"), cin, cout, 1, 1, Padding::default())?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Planes) -> Result<Planes> {
        let h = self.conv1.forward(&self.norm1.forward(x, true)?)?;
        let mut h = self.conv2.forward(&self.norm2.forward(&h, true)?)?;
        let skip = match &self.shortcut {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        h.data.iter_mut().zip(&skip.data).for_each(|(a, b)| *a += b);
        Ok(h)
    }
}

/// The mid block's single-head self-attention over the `H·W` cells (diffusers `Attention` with
/// `heads = 1`, `residual_connection`, a GroupNorm on the input):
/// `x + to_out(softmax(q kᵀ / √C) v)` with `q, k, v = to_{q,k,v}(group_norm(x)ᵀ)`.
pub(super) struct Attention {
    norm: Norm,
    q: (Tensor, Vec<f32>),
    k: (Tensor, Vec<f32>),
    v: (Tensor, Vec<f32>),
    out: (Tensor, Vec<f32>),
}

impl Attention {
    pub fn load(w: &mut Weights, p: &str, c: usize, groups: usize) -> Result<Attention> {
        let mut lin = |name: &str| -> Result<(Tensor, Vec<f32>)> {
            let wn = format!("{p}.{name}.weight");
            // diffusers stores a Linear [C, C]; LDM a 1×1 conv [C, C, 1, 1]: same numbers.
            let weight = match w.take(&wn, &[c, c]) {
                Err(Error::TensorShape { .. }) => w.take(&wn, &[c, c, 1, 1])?.reshape(vec![c, c])?,
                other => other?,
            };
            let weight = if weight.is_placeholder() { Tensor::from_f32(vec![0.0; c * c], vec![c, c])? } else { weight };
            Ok((weight, w.take_f32(&format!("{p}.{name}.bias"), &[c])?))
        };
        let (q, k, v, out) = (lin("to_q")?, lin("to_k")?, lin("to_v")?, lin("to_out.0")?);
        Ok(Attention { norm: Norm::load(w, &format!("{p}.group_norm"), c, groups)?, q, k, v, out })
    }

    pub fn forward(&self, x: &Planes) -> Result<Planes> {
        let (c, n) = (x.c, x.h * x.w);
        let normed = self.norm.forward(x, false)?;
        let xt = transpose(&normed.data, c, n); // [n, c]
        let proj = |(wt, b): &(Tensor, Vec<f32>), inp: &[f32]| -> Result<Vec<f32>> {
            let mut y = vec![0.0f32; n * c]; // [n, c]
            matmul_xwt(inp, wt, &mut y)?;
            y.chunks_mut(c).for_each(|row| row.iter_mut().zip(b).for_each(|(a, bb)| *a += bb));
            Ok(y)
        };
        let (q, k, v) = (proj(&self.q, &xt)?, proj(&self.k, &xt)?, proj(&self.v, &xt)?);
        let kt = Tensor::from_f32(k, vec![n, c])?; // keys as a [n, c] "weight": scores = q · kᵀ
        let vt = Tensor::from_f32(transpose(&v, n, c), vec![c, n])?; // [c, n]: out = p · v
        let scale = 1.0 / (c as f32).sqrt();
        let mut attn = vec![0.0f32; n * c]; // [n, c]
        let rows = (ATTN_BLOCK_ELEMS / n.max(1)).clamp(1, n.max(1));
        for r0 in (0..n).step_by(rows) {
            let r = rows.min(n - r0);
            let mut s = vec![0.0f32; r * n]; // [r, n]
            matmul_xwt(&q[r0 * c..(r0 + r) * c], &kt, &mut s)?;
            for row in s.chunks_mut(n) {
                row.iter_mut().for_each(|v| *v *= scale);
                softmax_in_place(row);
            }
            matmul_xwt(&s, &vt, &mut attn[r0 * c..(r0 + r) * c])?;
        }
        let o = proj(&self.out, &attn)?; // [n, c]
        let mut y = x.clone();
        let ot = transpose(&o, n, c); // [c, n]
        y.data.iter_mut().zip(&ot).for_each(|(a, b)| *a += b);
        Ok(y)
    }
}

/// `[r, c]` → `[c, r]`.
fn transpose(x: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = x[i * c + j];
        }
    }
    t
}

/// diffusers `UNetMidBlock2D` (no time embedding): resnet, optional attention, resnet.
pub(super) struct Mid {
    res1: Resnet,
    attn: Option<Attention>,
    res2: Resnet,
}

impl Mid {
    pub fn load(w: &mut Weights, p: &str, c: usize, groups: usize, attention: bool) -> Result<Mid> {
        Ok(Mid {
            res1: Resnet::load(w, &format!("{p}.resnets.0"), c, c, groups)?,
            attn: if attention { Some(Attention::load(w, &format!("{p}.attentions.0"), c, groups)?) } else { None },
            res2: Resnet::load(w, &format!("{p}.resnets.1"), c, c, groups)?,
        })
    }

    pub fn forward(&self, x: &Planes) -> Result<Planes> {
        let mut h = self.res1.forward(x)?;
        if let Some(a) = &self.attn {
            h = a.forward(&h)?;
        }
        self.res2.forward(&h)
    }
}

/// diffusers `UpDecoderBlock2D`: `layers_per_block + 1` resnets, then (all levels but the
/// finest) nearest-2× and a 3×3 conv.
struct UpBlock {
    resnets: Vec<Resnet>,
    upsample: Option<Conv>,
}

/// The decoder `[z, h, w] → [out_channels, h·2^(L−1), w·2^(L−1)]`: conv_in → mid → up blocks
/// (coarsest first) → GroupNorm → SiLU → conv_out. Output is unclamped (as diffusers' `decode`).
pub struct Decoder {
    conv_in: Conv,
    mid: Mid,
    up: Vec<UpBlock>,
    norm_out: Norm,
    conv_out: Conv,
}

impl Decoder {
    /// Takes the `decoder.*` tensors (diffusers names) for `cfg`.
    pub fn load(w: &mut Weights, cfg: &VisionDecoderConfig) -> Result<Decoder> {
        let g = cfg.norm_num_groups;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let top = rev[0];
        let conv_in = Conv::load3(w, "decoder.conv_in", cfg.latent_channels, top)?;
        let mid = Mid::load(w, "decoder.mid_block", top, g, cfg.mid_block_add_attention)?;
        let mut up = Vec::with_capacity(rev.len());
        let mut prev = top;
        for (i, &ch) in rev.iter().enumerate() {
            let mut resnets = Vec::with_capacity(cfg.layers_per_block + 1);
            for j in 0..=cfg.layers_per_block {
                let cin = if j == 0 { prev } else { ch };
                resnets.push(Resnet::load(w, &format!("decoder.up_blocks.{i}.resnets.{j}"), cin, ch, g)?);
            }
            let last = i + 1 == rev.len();
            let upsample = if last { None } else { Some(Conv::load3(w, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), ch, ch)?) };
            up.push(UpBlock { resnets, upsample });
            prev = ch;
        }
        let c0 = cfg.block_out_channels[0];
        Ok(Decoder {
            conv_in,
            mid,
            up,
            norm_out: Norm::load(w, "decoder.conv_norm_out", c0, g)?,
            conv_out: Conv::load3(w, "decoder.conv_out", c0, cfg.out_channels)?,
        })
    }

    /// `z`: `[latent_channels, h, w]` (after `post_quant_conv`) → pixels `[out_channels, H, W]`.
    pub(super) fn forward(&self, z: &Planes) -> Result<Planes> {
        let mut x = self.conv_in.forward(z)?;
        x = self.mid.forward(&x)?;
        for block in &self.up {
            for r in &block.resnets {
                x = r.forward(&x)?;
            }
            if let Some(conv) = &block.upsample {
                let data = upsample_nearest2x(&x.data, x.c, x.h, x.w)?;
                x = conv.forward(&Planes { data, c: x.c, h: 2 * x.h, w: 2 * x.w })?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&x, true)?)
    }
}
