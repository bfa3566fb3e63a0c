//! [`CudaModel`]: the text decoder's weights on one GPU (uploaded once from the CPU
//! [`Transformer`]) and its forward pass; [`CudaKvCache`]: the KV cache in device memory.
//!
//! `forward` reads like [`Transformer::forward`]: embedding gather → L × (rmsnorm → attention →
//! residual → rmsnorm → dense SwiGLU or MoE → residual) → rmsnorm → head, with the residual adds
//! folded into the projections (cuBLAS beta = 1) and the head writing f32 logits that are copied
//! to the host.

use std::sync::{Arc, Mutex};

use ernie_kernels::cudarc::driver::CudaSlice;
use half::bf16;

use super::layers::{view, view_mut, GpuAttention, GpuLayerKv, GpuMoe, GpuSwiGlu, Scratch, ScratchDims};
use crate::backend::cuda::{cuda_err, ops, to_bf16, upload_bf16, CudaDevice, Linear};
use crate::config::TextConfig;
use crate::model::decoder::{Logits, Mlp, Transformer};
use crate::nn::kv_cache::CacheLen;
use crate::nn::trace::Trace;
use crate::{Error, Result};

/// The feed-forward half of a layer on the GPU.
pub enum GpuMlp {
    Dense(GpuSwiGlu),
    Moe(Box<GpuMoe>),
}

/// One decoder layer on the GPU.
pub struct GpuLayer {
    /// Index in the checkpoint and in the KV cache (elastic sub-models skip layers).
    pub index: usize,
    /// `[h]` bf16
    pub input_layernorm: CudaSlice<bf16>,
    /// Self-attention.
    pub self_attn: GpuAttention,
    /// `[h]` bf16
    pub post_attention_layernorm: CudaSlice<bf16>,
    /// Feed-forward half.
    pub mlp: GpuMlp,
}

/// The decoder on a GPU.
pub struct CudaModel {
    dev: CudaDevice,
    cfg: TextConfig,
    /// `[v, h]`; shared with `lm_head.w` when the embeddings are tied.
    embed_tokens: Arc<CudaSlice<bf16>>,
    /// The kept decoder layers.
    pub layers: Vec<GpuLayer>,
    /// `[h]`
    norm: CudaSlice<bf16>,
    /// `[v, h]` (no bias here: the optional head bias is added on the host, in f32).
    lm_head: Linear,
    lm_head_bias: Option<Vec<f32>>,
    /// Activations of the last call, reused while big enough.
    scratch: Mutex<Option<Scratch>>,
}

impl CudaModel {
    /// Uploads every weight of `model` to `dev` as bf16 (router weights stay f32).
    ///
    /// Errors: [`Error::Cuda`] (out of device memory), [`Error::Config`] for shapes the kernels do
    /// not cover (see [`GpuMoe::upload`]; head_dim above 256 or odd), [`Error::ShapeMismatch`].
    pub fn upload(model: &Transformer, dev: &CudaDevice) -> Result<CudaModel> {
        let cfg = model.cfg.clone();
        if cfg.head_dim > ernie_kernels::attention::MAX_HEAD_DIM {
            return Err(Error::Config {
                key: "head_dim".into(),
                reason: format!("{} exceeds the CUDA attention kernel's 256", cfg.head_dim),
            });
        }
        let embed_tokens = Arc::new(upload_bf16(dev, &model.embed_tokens)?);
        let lm_head = if cfg.tie_word_embeddings {
            Linear { w: embed_tokens.clone(), bias: None, n: cfg.vocab_size, k: cfg.hidden_size }
        } else {
            Linear::upload(dev, model.lm_head.weight.dense()?, None)?
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for layer in &model.layers {
            layers.push(GpuLayer {
                index: layer.index,
                input_layernorm: dev.upload(&to_bf16(&layer.input_layernorm))?,
                self_attn: GpuAttention::upload(dev, &layer.self_attn)?,
                post_attention_layernorm: dev.upload(&to_bf16(&layer.post_attention_layernorm))?,
                mlp: match &layer.mlp {
                    Mlp::Dense(m) => GpuMlp::Dense(GpuSwiGlu::upload(dev, m)?),
                    Mlp::Moe(m) => GpuMlp::Moe(Box::new(GpuMoe::upload(dev, m)?)),
                    Mlp::Grouped(_) => {
                        return Err(crate::error::unsupported("routing-group (VL) MoE layers on a CUDA device", "run this checkpoint on the cpu device"))
                    }
                },
            });
        }
        Ok(CudaModel {
            dev: dev.clone(),
            embed_tokens,
            layers,
            norm: dev.upload(&to_bf16(&model.norm))?,
            lm_head,
            lm_head_bias: model.lm_head.bias.clone(),
            scratch: Mutex::new(None),
            cfg,
        })
    }

    /// The device holding the weights.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// The decoder's configuration.
    pub fn cfg(&self) -> &TextConfig {
        &self.cfg
    }

    /// Runs `tokens` at positions `cache.len()..` and appends them to the cache; returns, on the
    /// host, last-row logits `[v]`, all logits `[t, v]`, or the final normed hidden `[t, h]`, in
    /// f32 (as [`Transformer::forward`]). With `trace`, each MoE layer's routing is downloaded
    /// and recorded.
    ///
    /// Errors: [`Error::Request`] for an empty input, an id `>= vocab_size`, a full cache or a
    /// cache of another model shape; [`Error::Cuda`] for device failures (the cache length is then
    /// unchanged).
    pub fn forward(&self, tokens: &[u32], cache: &mut CudaKvCache, which: Logits, mut trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        let (h, v, eps, theta) = (self.cfg.hidden_size, self.cfg.vocab_size, self.cfg.rms_norm_eps, self.cfg.rope_theta);
        let t = tokens.len();
        if t == 0 {
            return Err(Error::Request("no input tokens".into()));
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= v) {
            return Err(Error::Request(format!("token id {id} is outside the vocabulary of {v}")));
        }
        cache.check_room(t)?;
        if cache.layers.len() != self.cfg.num_hidden_layers || cache.kv_dim != self.cfg.kv_dim() {
            return Err(Error::Request("the KV cache was made for another model".into()));
        }
        let start = cache.len();
        let positions: Vec<u32> = (start..start + t).map(|p| p as u32).collect(); // < max_seq <= u32 (CudaKvCache::new)
        let d = &self.dev;

        // A poisoned lock only means an earlier call failed midway; the buffers are plain scratch.
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|s| s.t_cap < t) {
            *guard = None; // free the old buffers before allocating larger ones
            *guard = Some(Scratch::new(d, ScratchDims::of(&self.cfg), t)?);
        }
        let Some(s) = guard.as_mut() else {
            return Err(Error::Cuda { op: "forward", message: "scratch buffers missing".into() });
        };
        d.stream().memcpy_htod(tokens, &mut view_mut(&mut s.ids, 0..t)?).map_err(cuda_err("upload ids"))?;
        d.stream().memcpy_htod(&positions, &mut view_mut(&mut s.positions, 0..t)?).map_err(cuda_err("upload positions"))?;
        ops::embedding(d, &self.embed_tokens.as_view(), &view(&s.ids, 0..t)?, &mut view_mut(&mut s.x, 0..t * h)?, v, h)?; // [t, h]

        for layer in &self.layers {
            let l = layer.index;
            let kv = cache.layers.get_mut(l).ok_or_else(|| Error::Request(format!("the KV cache has no layer {l}")))?;
            ops::rms_norm(d, &view(&s.x, 0..t * h)?, &layer.input_layernorm.as_view(), eps, &mut view_mut(&mut s.normed, 0..t * h)?)?; // attn_norm
            let q_dim = self.cfg.q_dim();
            layer.self_attn.forward(
                d,
                &view(&s.normed, 0..t * h)?,
                &mut view_mut(&mut s.q, 0..t * q_dim)?,
                &mut view_mut(&mut s.attn, 0..t * q_dim)?,
                kv,
                start,
                &view(&s.positions, 0..t)?,
                theta,
                &mut view_mut(&mut s.x, 0..t * h)?,
            )?; // x += attn_out
            ops::rms_norm(
                d,
                &view(&s.x, 0..t * h)?,
                &layer.post_attention_layernorm.as_view(),
                eps,
                &mut view_mut(&mut s.normed, 0..t * h)?,
            )?; // ffn_norm
            match &layer.mlp {
                GpuMlp::Dense(m) => {
                    let i = m.inter;
                    m.forward(
                        d,
                        &view(&s.normed, 0..t * h)?,
                        &mut view_mut(&mut s.ffn_gate_up, 0..t * 2 * i)?,
                        &mut view_mut(&mut s.ffn_act, 0..t * i)?,
                        &mut view_mut(&mut s.x, 0..t * h)?,
                        true,
                    )?; // x += ffn_out
                }
                GpuMlp::Moe(m) => {
                    if let Some(routing) = m.forward(d, s, t, trace.is_some())? {
                        if let Some(tr) = trace.as_deref_mut() {
                            tr.record_routing(l, routing);
                        }
                    }
                }
            }
        }
        ops::rms_norm(d, &view(&s.x, 0..t * h)?, &self.norm.as_view(), eps, &mut view_mut(&mut s.normed, 0..t * h)?)?; // result_norm
        let rows = match which {
            Logits::Hidden => {
                let normed = d.download(&view(&s.normed, 0..t * h)?)?;
                cache.advance(t);
                return Ok(normed.iter().map(|x| x.to_f32()).collect());
            }
            Logits::All => 0..t,
            Logits::Last => t - 1..t,
        };
        let n_rows = rows.len();
        let mut logits = d.zeros::<f32>(n_rows * v)?; // [rows, v]
        self.lm_head.forward(d, &view(&s.normed, rows.start * h..rows.end * h)?, &mut logits, false)?;
        let mut out = d.download(&logits)?; // waits for the whole pass
        cache.advance(t);
        if let Some(b) = &self.lm_head_bias {
            for row in out.chunks_exact_mut(v) {
                row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
            }
        }
        Ok(out)
    }
}

/// The KV cache of one sequence in device memory: per layer `[max_seq, n_kv_heads, head_dim]` bf16
/// K (after RoPE) and V, allocated up front like [`crate::KvCache`].
pub struct CudaKvCache {
    pub(crate) layers: Vec<GpuLayerKv>,
    kv_dim: usize,
    fill: CacheLen,
}

impl CudaKvCache {
    /// Room for `max_seq` positions of `model`. Errors: [`Error::Request`] when `max_seq` is 0 or
    /// exceeds `max_position_embeddings` (or u32), [`Error::Cuda`] (out of device memory).
    pub fn new(model: &CudaModel, max_seq: usize) -> Result<CudaKvCache> {
        let cfg = &model.cfg;
        if max_seq == 0 || max_seq > cfg.max_position_embeddings || u32::try_from(max_seq).is_err() {
            return Err(Error::Request(format!(
                "context of {max_seq} tokens is outside 1..={} (max_position_embeddings)",
                cfg.max_position_embeddings
            )));
        }
        let kv_dim = cfg.kv_dim();
        let n = max_seq.checked_mul(kv_dim).ok_or_else(|| Error::Request(format!("a KV cache of {max_seq} positions is too large")))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok(GpuLayerKv { k: model.dev.zeros(n)?, v: model.dev.zeros(n)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(CudaKvCache { layers, kv_dim, fill: CacheLen::new(max_seq) })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.fill.len()
    }

    /// Whether no position is filled.
    pub fn is_empty(&self) -> bool {
        self.fill.is_empty()
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.fill.capacity()
    }

    /// Errors if `n` more positions do not fit ([`CacheLen::check_room`]).
    pub fn check_room(&self, n: usize) -> Result<()> {
        self.fill.check_room(n)
    }

    fn advance(&mut self, n: usize) {
        self.fill.advance(n);
    }

    /// Drops positions `len..` ([`CacheLen::truncate`]).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.fill.truncate(len)
    }

    /// Empties the cache for a new sequence.
    pub fn reset(&mut self) {
        self.fill.reset();
    }
}
