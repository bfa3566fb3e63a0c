//! Streaming decode: codes in, audio out, a few frames at a time, so speech can play while it is
//! generated (issue #14). Each call runs the same layers as [`MimiCodec::decode`] with carried
//! state: the upsample's overlap-add tail, the decoder transformer's sliding-window KV
//! ([`KvState`], bounded by `sliding_window`), and every SEANet conv's left context. Concatenated
//! outputs equal the whole-clip decode up to float summation order (`tests/model/audio_codec.rs`).

use super::seanet::Slots;
use super::transformer::KvState;
use super::{transpose, MimiCodec, PadMode};
use crate::{Error, Result};

/// Decoder state between [`MimiDecodeStream::push`] calls. Memory stays bounded however long
/// the stream runs (when the config has a sliding window).
pub struct MimiDecodeStream<'a> {
    codec: &'a MimiCodec,
    upsample_tail: Vec<f32>,
    kv: KvState,
    seanet: Slots,
    frames: usize,
}

impl MimiCodec {
    /// Starts a streaming decode.
    ///
    /// Errors ([`Error::Request`]): no decoder half, or a config whose whole-clip output depends
    /// on future samples (non-causal convs, reflect padding, `trim_right_ratio` ≠ 1).
    pub fn decode_stream(&self) -> Result<MimiDecodeStream<'_>> {
        let dec = self.decoder.as_ref().ok_or_else(|| Error::Request("this Mimi checkpoint has no decoder: it cannot decode codes".into()))?;
        let c = &self.cfg;
        if !c.use_causal_conv || c.pad_mode == PadMode::Reflect || c.trim_right_ratio != 1.0 {
            return Err(Error::Request("streaming decode needs causal convs, constant or replicate padding and trim_right_ratio 1".into()));
        }
        Ok(MimiDecodeStream { codec: self, upsample_tail: Vec::new(), kv: dec.transformer.new_state(), seanet: Slots::default(), frames: 0 })
    }
}

impl MimiDecodeStream<'_> {
    /// Decodes the next frames: codes `[levels][n]` (checked as in [`MimiCodec::decode`]) →
    /// `n · samples_per_frame` samples, the continuation of everything pushed before.
    ///
    /// Errors: as [`MimiCodec::decode`]; without a sliding window, also more than
    /// [`MimiCodec::max_frames`] frames in all (the KV state would grow without bound).
    pub fn push(&mut self, codes: &[Vec<u32>]) -> Result<Vec<f32>> {
        let codec = self.codec;
        let Some(dec) = codec.decoder.as_ref() else { return Err(Error::Request("no decoder".into())) };
        let n = codec.check_codes(codes)?;
        if codec.cfg.sliding_window.is_none() && self.frames + n > codec.max_frames() {
            return Err(Error::Request(format!("streamed codes exceed {} frames (no sliding window bounds the state)", codec.max_frames())));
        }
        let h = codec.cfg.hidden_size;
        let q = codec.quantizer.decode(codes, n)?; // [n, H]
        let x = transpose(&q, n, h); // [H, n]
        let (x, t) = match &dec.upsample {
            Some(u) => (u.forward_stream(&x, n, &mut self.upsample_tail)?, n * u.stride()),
            None => (x, n),
        };
        let y = dec.transformer.forward(&transpose(&x, h, t), t, &mut self.kv)?; // [t, H]
        let (audio, _) = dec.seanet.forward_stream(&transpose(&y, t, h), t, &mut self.seanet)?;
        self.frames += n;
        Ok(audio)
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }
}
