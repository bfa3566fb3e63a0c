//! The VAE encoder, the decoder mirrored (spec ernie5-generation §4.1; diffusers 0.42.1
//! `autoencoders/vae.py` `Encoder`, `downsampling.py` `Downsample2D` with `padding=0`): conv_in →
//! down blocks (`layers_per_block` resnets; all levels but the coarsest end in a 3×3 stride-2 conv
//! after zero padding (left 0, right 1, top 0, bottom 1)) → mid → GroupNorm → SiLU → conv_out to
//! `2·z` channels (mean and log-variance, `double_z`).

use crate::ops::conv2d::Padding;
use crate::weights::Weights;
use crate::Result;

use super::config::VisionDecoderConfig;
use super::decoder::{Conv, Mid, Norm, Planes, Resnet};

/// diffusers `Downsample2D(padding=0)`: `F.pad(x, (0, 1, 0, 1))` then a 3×3 stride-2 conv.
const DOWN_PAD: Padding = Padding { left: 0, right: 1, top: 0, bottom: 1 };

struct DownBlock {
    resnets: Vec<Resnet>,
    downsample: Option<Conv>,
}

/// The encoder `[in_channels, H, W] → [2·z, H/2^(L−1), W/2^(L−1)]` (moments before `quant_conv`).
pub struct Encoder {
    conv_in: Conv,
    down: Vec<DownBlock>,
    mid: Mid,
    norm_out: Norm,
    conv_out: Conv,
}

impl Encoder {
    /// Takes the `encoder.*` tensors (diffusers names) for `cfg`.
    pub fn load(w: &mut Weights, cfg: &VisionDecoderConfig) -> Result<Encoder> {
        let g = cfg.norm_num_groups;
        let chans = &cfg.block_out_channels;
        let conv_in = Conv::load3(w, "encoder.conv_in", cfg.in_channels, chans[0])?;
        let mut down = Vec::with_capacity(chans.len());
        let mut prev = chans[0];
        for (i, &ch) in chans.iter().enumerate() {
            let mut resnets = Vec::with_capacity(cfg.layers_per_block);
            for j in 0..cfg.layers_per_block {
                let cin = if j == 0 { prev } else { ch };
                resnets.push(Resnet::load(w, &format!("encoder.down_blocks.{i}.resnets.{j}"), cin, ch, g)?);
            }
            let last = i + 1 == chans.len();
            let downsample = if last {
                None
            } else {
                Some(Conv::load(w, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), ch, ch, 3, 2, DOWN_PAD)?)
            };
            down.push(DownBlock { resnets, downsample });
            prev = ch;
        }
        let top = prev;
        Ok(Encoder {
            conv_in,
            down,
            mid: Mid::load(w, "encoder.mid_block", top, g, cfg.mid_block_add_attention)?,
            norm_out: Norm::load(w, "encoder.conv_norm_out", top, g)?,
            conv_out: Conv::load3(w, "encoder.conv_out", top, 2 * cfg.latent_channels)?,
        })
    }

    /// Image `[in_channels, H, W]` → moments `[2·z, h, w]`.
    pub(super) fn forward(&self, x: &Planes) -> Result<Planes> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down {
            for r in &block.resnets {
                x = r.forward(&x)?;
            }
            if let Some(conv) = &block.downsample {
                x = conv.forward(&x)?;
            }
        }
        x = self.mid.forward(&x)?;
        self.conv_out.forward(&self.norm_out.forward(&x, true)?)
    }
}
