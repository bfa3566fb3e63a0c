//! Mimi's `config.json`, as transformers 5.25.0 `MimiConfig` writes it (`model_type` `"mimi"`;
//! keys and defaults from `models/mimi/configuration_mimi.py`), validated up front so that a bad
//! value is one [`Error::Config`] naming the key, never a panic or a huge allocation later.

use serde_json::Value;

use crate::{Error, Result};

/// Bounds on counts read from the config: far above the published Mimi (8 layers, 32 quantizers,
/// 4 ratios, 512 channels), low enough that a corrupt value cannot make the loader loop or
/// allocate without limit before the tensor shapes are checked.
const MAX_LAYERS: usize = 256;
const MAX_QUANTIZERS: usize = 1024;
const MAX_RATIOS: usize = 16;
const MAX_RATIO: usize = 64;
const MAX_CHANNELS: usize = 1 << 16;

/// How a causal / asymmetric conv pads its input (`MimiConv1d.pad_mode`, `torch.nn.functional.pad`
/// modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (`"constant"`, the published Mimi's SEANet).
    Constant,
    /// Edge value repeated (`"replicate"`, always used by the 25 → 12.5 Hz downsample).
    Replicate,
    /// Mirror without repeating the edge (`"reflect"`; short inputs get transformers' extra zeros).
    Reflect,
}

/// The fields of `MimiConfig` the codec runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct MimiConfig {
    /// Audio sample rate in Hz (24000).
    pub sampling_rate: usize,
    /// Channels of the waveform; only 1 (mono) is supported.
    pub audio_channels: usize,
    /// Latent width H of the SEANet output and both transformers (512).
    pub hidden_size: usize,
    /// Channels of the first SEANet conv (64); doubled after every ratio.
    pub num_filters: usize,
    /// Residual blocks per SEANet stage (1).
    pub num_residual_layers: usize,
    /// Decoder upsampling ratios ([8, 6, 5, 4]); the encoder uses them reversed.
    pub upsampling_ratios: Vec<usize>,
    /// Kernel of the first SEANet conv (7).
    pub kernel_size: usize,
    /// Kernel of the last SEANet conv (3).
    pub last_kernel_size: usize,
    /// Kernel of the first conv of each residual block (3; the second is 1).
    pub residual_kernel_size: usize,
    /// Residual block j of a stage uses dilation `dilation_growth_rate^j` (2).
    pub dilation_growth_rate: usize,
    /// Causal convolutions (true): all padding on the left.
    pub use_causal_conv: bool,
    /// SEANet padding mode.
    pub pad_mode: PadMode,
    /// Residual branch width divisor (2).
    pub compress: usize,
    /// Share of a transposed conv's trim taken on the right (1.0).
    pub trim_right_ratio: f64,
    /// Codes per codebook V (2048).
    pub codebook_size: usize,
    /// Width D of a code vector (256); equals `vector_quantization_hidden_dimension`.
    pub codebook_dim: usize,
    /// Quantizer levels Q (32): semantic ones first, then acoustic.
    pub num_quantizers: usize,
    /// A 1x1 conv shortcut in residual blocks instead of the identity (false).
    pub use_conv_shortcut: bool,
    /// Width of the RVQ space (256); in/out projections exist when it differs from H.
    pub vector_quantization_hidden_dimension: usize,
    /// Semantic levels (1).
    pub num_semantic_quantizers: usize,
    /// Groups of the transposed-conv upsample (512 = H: depthwise).
    pub upsample_groups: usize,
    /// Transformer layers per side (8).
    pub num_hidden_layers: usize,
    /// MLP width (2048).
    pub intermediate_size: usize,
    /// Attention heads (8).
    pub num_attention_heads: usize,
    /// Key/value heads (8).
    pub num_key_value_heads: usize,
    /// Width of one head (64).
    pub head_dim: usize,
    /// LayerNorm epsilon (1e-5).
    pub norm_eps: f32,
    /// RoPE base (10000).
    pub rope_theta: f32,
    /// Attention sees the last `sliding_window` positions including itself (250); `None` = all.
    pub sliding_window: Option<usize>,
    /// Biases on q/k/v/o (false).
    pub attention_bias: bool,
    /// Code frame rate in Hz (12.5): `frame_rate` in the config, else `sampling_rate / frame_size`.
    pub frame_rate: f64,
    /// Whether the checkpoint has the encoder half (`encoder_config` is not `null`).
    pub has_encoder: bool,
    /// Whether the checkpoint has the decoder half.
    pub has_decoder: bool,
}

impl MimiConfig {
    /// Parses and validates a Mimi `config.json` value.
    ///
    /// Errors: [`Error::Config`] naming the key for a wrong `model_type`, a missing or mistyped
    /// value, or a value out of range (zero sizes, heads not dividing H, odd head_dim,
    /// `num_semantic_quantizers` not in `1..num_quantizers`, `codebook_dim` ≠ the RVQ width, a
    /// `hidden_act` other than `gelu`, a RoPE type other than `default`, stereo audio...).
    pub fn from_json(v: &Value) -> Result<MimiConfig> {
        let f = Fields(v);
        match v.get("model_type").and_then(Value::as_str) {
            Some("mimi") => {}
            other => return Err(cfg("model_type", format!("expected \"mimi\", found {other:?}"))),
        }
        let hidden_size = f.size("hidden_size", 512, MAX_CHANNELS)?;
        let num_attention_heads = f.size("num_attention_heads", 8, MAX_CHANNELS)?;
        let head_dim = match v.get("head_dim") {
            None | Some(Value::Null) => hidden_size / num_attention_heads,
            Some(_) => f.size("head_dim", 0, MAX_CHANNELS)?,
        };
        let vq = f.size("vector_quantization_hidden_dimension", 256, MAX_CHANNELS)?;
        let codebook_dim = match v.get("codebook_dim") {
            None => 256,
            Some(Value::Null) => hidden_size,
            Some(_) => f.size("codebook_dim", 0, MAX_CHANNELS)?,
        };
        let ratios = match v.get("upsampling_ratios") {
            None | Some(Value::Null) => vec![8, 6, 5, 4],
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_RATIOS => a
                .iter()
                .map(|x| x.as_u64().map(|n| n as usize).filter(|&n| (1..=MAX_RATIO).contains(&n)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| cfg("upsampling_ratios", format!("entries must be integers in 1..={MAX_RATIO}")))?,
            Some(other) => return Err(cfg("upsampling_ratios", format!("expected 1..={MAX_RATIOS} integers, found {other}"))),
        };
        let pad_mode = match v.get("pad_mode").map(|p| p.as_str()) {
            None | Some(Some("constant")) => PadMode::Constant,
            Some(Some("replicate")) => PadMode::Replicate,
            Some(Some("reflect")) => PadMode::Reflect,
            Some(other) => return Err(cfg("pad_mode", format!("expected constant, replicate or reflect, found {other:?}"))),
        };
        let rope = v.get("rope_parameters").filter(|r| !r.is_null());
        if let Some(t) = rope.and_then(|r| r.get("rope_type")).filter(|t| t.as_str() != Some("default")) {
            return Err(cfg("rope_parameters.rope_type", format!("only \"default\" is supported, found {t}")));
        }
        let rope_theta = match rope.and_then(|r| r.get("rope_theta")).or_else(|| v.get("rope_theta")) {
            None => 10000.0,
            Some(t) => t.as_f64().filter(|t| t.is_finite() && *t > 1.0).ok_or_else(|| cfg("rope_theta", format!("expected a number > 1, found {t}")))?,
        };
        let sliding_window = match v.get("sliding_window") {
            None => Some(250),
            Some(Value::Null) => None,
            Some(_) => Some(f.size("sliding_window", 0, usize::MAX)?),
        };
        match v.get("hidden_act").map(|a| a.as_str()) {
            None | Some(Some("gelu")) => {}
            Some(other) => return Err(cfg("hidden_act", format!("only \"gelu\" (exact erf GELU) is supported, found {other:?}"))),
        }
        let c = MimiConfig {
            sampling_rate: f.size("sampling_rate", 24000, 1 << 20)?,
            audio_channels: f.size("audio_channels", 1, 2)?,
            hidden_size,
            num_filters: f.size("num_filters", 64, MAX_CHANNELS)?,
            num_residual_layers: f.count("num_residual_layers", 1, 16)?,
            upsampling_ratios: ratios,
            kernel_size: f.size("kernel_size", 7, 1024)?,
            last_kernel_size: f.size("last_kernel_size", 3, 1024)?,
            residual_kernel_size: f.size("residual_kernel_size", 3, 1024)?,
            dilation_growth_rate: f.size("dilation_growth_rate", 2, 64)?,
            use_causal_conv: f.flag("use_causal_conv", true)?,
            pad_mode,
            compress: f.size("compress", 2, MAX_CHANNELS)?,
            trim_right_ratio: f.number("trim_right_ratio", 1.0)?,
            codebook_size: f.size("codebook_size", 2048, 1 << 24)?,
            codebook_dim,
            num_quantizers: f.size("num_quantizers", 32, MAX_QUANTIZERS)?,
            use_conv_shortcut: f.flag("use_conv_shortcut", false)?,
            vector_quantization_hidden_dimension: vq,
            num_semantic_quantizers: f.size("num_semantic_quantizers", 1, MAX_QUANTIZERS)?,
            upsample_groups: f.size("upsample_groups", 512, MAX_CHANNELS)?,
            num_hidden_layers: f.count("num_hidden_layers", 8, MAX_LAYERS)?,
            intermediate_size: f.size("intermediate_size", 2048, 1 << 20)?,
            num_attention_heads,
            num_key_value_heads: f.size("num_key_value_heads", 8, MAX_CHANNELS)?,
            head_dim,
            norm_eps: f.number("norm_eps", 1e-5)? as f32,
            rope_theta: rope_theta as f32,
            sliding_window,
            attention_bias: f.flag("attention_bias", false)?,
            frame_rate: 0.0,
            has_encoder: !matches!(v.get("encoder_config"), Some(Value::Null)),
            has_decoder: !matches!(v.get("decoder_config"), Some(Value::Null)),
        };
        let frame_rate = match v.get("frame_rate").filter(|x| !x.is_null()).or_else(|| v.get("_frame_rate").filter(|x| !x.is_null())) {
            Some(x) => x.as_f64().filter(|r| r.is_finite() && *r > 0.0).ok_or_else(|| cfg("frame_rate", format!("expected a positive number, found {x}")))?,
            None => c.sampling_rate as f64 / (c.hop_length() * 2) as f64,
        };
        let c = MimiConfig { frame_rate, ..c };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        if self.audio_channels != 1 {
            return Err(cfg("audio_channels", "only mono (1) is supported"));
        }
        if self.num_semantic_quantizers >= self.num_quantizers {
            return Err(cfg("num_semantic_quantizers", format!("must be below num_quantizers {}", self.num_quantizers)));
        }
        if self.codebook_dim != self.vector_quantization_hidden_dimension {
            return Err(cfg("codebook_dim", format!("must equal vector_quantization_hidden_dimension {}", self.vector_quantization_hidden_dimension)));
        }
        if self.hidden_size % self.num_attention_heads != 0 || self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(cfg("num_attention_heads", "heads must divide hidden_size and be a multiple of num_key_value_heads"));
        }
        if self.head_dim % 2 != 0 {
            return Err(cfg("head_dim", "RoPE needs an even head_dim"));
        }
        if self.hidden_size % self.upsample_groups != 0 {
            return Err(cfg("upsample_groups", format!("must divide hidden_size {}", self.hidden_size)));
        }
        let widest = self.num_filters.checked_shl(self.upsampling_ratios.len() as u32).filter(|&w| w <= MAX_CHANNELS);
        if widest.is_none() {
            return Err(cfg("num_filters", "num_filters · 2^len(upsampling_ratios) is too large"));
        }
        if self.num_filters % self.compress != 0 {
            return Err(cfg("compress", format!("must divide num_filters {}", self.num_filters)));
        }
        if !(0.0..=1.0).contains(&self.trim_right_ratio) || (!self.use_causal_conv && self.trim_right_ratio != 1.0) {
            return Err(cfg("trim_right_ratio", "must be in [0, 1], and 1.0 for non-causal convolutions"));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(cfg("norm_eps", "must be positive"));
        }
        if self.sliding_window == Some(0) {
            return Err(cfg("sliding_window", "must be positive (or null)"));
        }
        if !self.has_encoder && !self.has_decoder {
            return Err(cfg("encoder_config", "the checkpoint has neither an encoder nor a decoder"));
        }
        let ls = self.latent_stride();
        if self.has_latent_resample() && !(1..=64).contains(&ls) {
            return Err(cfg("frame_rate", format!("gives latent stride {ls} (encodec frame rate {})", self.encodec_frame_rate())));
        }
        Ok(())
    }

    /// `prod(upsampling_ratios)`: audio samples per SEANet latent step (960).
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// `ceil(sampling_rate / hop_length)`: the SEANet latent rate (25 Hz).
    pub fn encodec_frame_rate(&self) -> usize {
        self.sampling_rate.div_ceil(self.hop_length())
    }

    /// Whether there is a downsample / upsample between the SEANet rate and the code rate
    /// (`frame_rate != encodec_frame_rate` in transformers).
    pub fn has_latent_resample(&self) -> bool {
        self.frame_rate != self.encodec_frame_rate() as f64
    }

    /// `int(encodec_frame_rate / frame_rate)`: the down/upsample stride (2).
    pub fn latent_stride(&self) -> usize {
        (self.encodec_frame_rate() as f64 / self.frame_rate) as usize
    }

    /// Audio samples per code frame (1920 for the published Mimi).
    pub fn samples_per_frame(&self) -> usize {
        self.hop_length() * if self.has_latent_resample() { self.latent_stride() } else { 1 }
    }
}

fn cfg(key: &str, reason: impl Into<String>) -> Error {
    Error::Config { key: key.to_string(), reason: reason.into() }
}

/// Typed reads of optional keys with transformers' defaults.
struct Fields<'a>(&'a Value);

impl Fields<'_> {
    /// A positive integer ≤ `max`; absent → `default`.
    fn size(&self, key: &str, default: usize, max: usize) -> Result<usize> {
        let n = self.count(key, default, max)?;
        if n == 0 {
            return Err(cfg(key, "must be positive"));
        }
        Ok(n)
    }

    /// A non-negative integer ≤ `max`; absent → `default`.
    fn count(&self, key: &str, default: usize, max: usize) -> Result<usize> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= max)
                .ok_or_else(|| cfg(key, format!("expected an integer in 0..={max}, found {v}"))),
        }
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| cfg(key, format!("expected true or false, found {v}"))),
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| cfg(key, format!("expected a finite number, found {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_the_published_mimi() {
        let c = MimiConfig::from_json(&json!({"model_type": "mimi"})).unwrap();
        assert_eq!((c.hidden_size, c.num_quantizers, c.codebook_size, c.head_dim), (512, 32, 2048, 64));
        assert_eq!((c.hop_length(), c.encodec_frame_rate(), c.latent_stride(), c.samples_per_frame()), (960, 25, 2, 1920));
        assert_eq!(c.frame_rate, 12.5);
        assert_eq!(c.sliding_window, Some(250));
        assert!(c.has_latent_resample());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (json!({"model_type": "encodec"}), "model_type"),
            (json!({"model_type": "mimi", "hidden_size": 0}), "hidden_size"),
            (json!({"model_type": "mimi", "hidden_size": "x"}), "hidden_size"),
            (json!({"model_type": "mimi", "num_semantic_quantizers": 32}), "num_semantic_quantizers"),
            (json!({"model_type": "mimi", "codebook_dim": 128}), "codebook_dim"),
            (json!({"model_type": "mimi", "num_attention_heads": 7}), "num_attention_heads"),
            (json!({"model_type": "mimi", "pad_mode": "circular"}), "pad_mode"),
            (json!({"model_type": "mimi", "hidden_act": "relu"}), "hidden_act"),
            (json!({"model_type": "mimi", "audio_channels": 2}), "audio_channels"),
            (json!({"model_type": "mimi", "upsampling_ratios": []}), "upsampling_ratios"),
            (json!({"model_type": "mimi", "upsampling_ratios": [8, 0]}), "upsampling_ratios"),
            (json!({"model_type": "mimi", "num_quantizers": 1_000_000_000u64}), "num_quantizers"),
            (json!({"model_type": "mimi", "rope_parameters": {"rope_type": "yarn"}}), "rope_parameters.rope_type"),
            (json!({"model_type": "mimi", "frame_rate": -1.0}), "frame_rate"),
            (json!({"model_type": "mimi", "sliding_window": 0}), "sliding_window"),
            (json!({"model_type": "mimi", "num_filters": 60000}), "num_filters"),
        ];
        for (v, key) in cases {
            match MimiConfig::from_json(&v) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: expected a config error on {key}, got {other:?}"),
            }
        }
    }
}
