//! The decoder's blocks on the GPU, each uploaded from its CPU struct: [`GpuAttention`] (from
//! [`Attention`]), [`GpuSwiGlu`] (from [`SwiGlu`]: the dense FFN and the shared experts) and
//! [`GpuMoe`] (from [`MoeBlock`]), plus [`Scratch`], the activation buffers one forward pass uses,
//! allocated once for a token count and reused (decode steps allocate nothing).

use std::ops::Range;

use ernie_kernels::attention::AttentionDims;
use ernie_kernels::cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits};
use ernie_kernels::moe_align;
use ernie_kernels::moe_gemm::{AlignedRows, GemmDims};
use ernie_kernels::tuning::MOE_GEMM_TILES;
use ernie_kernels::MoePlan;
use half::bf16;

use crate::backend::cuda::{cuda_err, extend_bf16, ops, CudaDevice, Linear};
use crate::config::{MlpKind, TextConfig};
use crate::nn::attention::Attention;
use crate::nn::mlp::SwiGlu;
use crate::nn::moe::{MoeBlock, Routing};
use crate::{Error, Result};

/// `s[range]` as a view, or a shape error instead of cudarc's panic.
pub(crate) fn view<T>(s: &CudaSlice<T>, range: Range<usize>) -> Result<CudaView<'_, T>> {
    let (start, end, len) = (range.start, range.end, s.len());
    s.try_slice(range).ok_or_else(|| Error::ShapeMismatch {
        op: "cuda view",
        expected: format!("{start}..{end} within {len}"),
        got: format!("{len} elements"),
    })
}

/// `s[range]` as a mutable view; see [`view`].
pub(crate) fn view_mut<T>(s: &mut CudaSlice<T>, range: Range<usize>) -> Result<CudaViewMut<'_, T>> {
    let (start, end, len) = (range.start, range.end, s.len());
    s.try_slice_mut(range).ok_or_else(|| Error::ShapeMismatch {
        op: "cuda view",
        expected: format!("{start}..{end} within {len}"),
        got: format!("{len} elements"),
    })
}

/// Per-token sizes a [`Scratch`] serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScratchDims {
    /// Hidden width `h`.
    pub hidden: usize,
    /// `n_heads * head_dim`
    pub q_dim: usize,
    /// Widest dense SwiGLU: the dense FFN or the shared experts (0 if none).
    pub ffn_inter: usize,
    /// MoE sizes (all 0 without MoE layers).
    pub n_experts: usize,
    /// Experts per token `k`.
    pub top_k: usize,
    /// Routed expert width `i`.
    pub moe_inter: usize,
}

impl ScratchDims {
    /// What every layer of `cfg` needs.
    pub fn of(cfg: &TextConfig) -> ScratchDims {
        let has = |k| cfg.mlp_layer_types.contains(&k);
        let dense = if has(MlpKind::Dense) || cfg.moe.is_none() { cfg.intermediate_size } else { 0 };
        let (e, k, i, shared) = match (&cfg.moe, has(MlpKind::Moe)) {
            (Some(m), true) => (m.num_experts, m.top_k, m.moe_intermediate_size, m.moe_intermediate_size * m.moe_num_shared_experts),
            _ => (0, 0, 0, 0),
        };
        ScratchDims { hidden: cfg.hidden_size, q_dim: cfg.q_dim(), ffn_inter: dense.max(shared), n_experts: e, top_k: k, moe_inter: i }
    }
}

/// Activation buffers for up to `t_cap` tokens (shapes per token in [`ScratchDims`]).
pub struct Scratch {
    /// The sizes the buffers were made for.
    pub dims: ScratchDims,
    /// Rows the buffers hold.
    pub t_cap: usize,
    /// `[t, h]` the residual stream.
    pub x: CudaSlice<bf16>,
    /// `[t, h]` normed input of the current block.
    pub normed: CudaSlice<bf16>,
    /// `[t, q_dim]` queries; `[t, q_dim]` attention output before o_proj.
    pub q: CudaSlice<bf16>,
    /// `[t, q_dim]` attention output before o_proj.
    pub attn: CudaSlice<bf16>,
    /// `[t, 2 * ffn_inter]`, `[t, ffn_inter]`, `[t, h]`: dense SwiGLU scratch and shared-expert output.
    pub ffn_gate_up: CudaSlice<bf16>,
    /// `[t, ffn_inter]` SwiGLU activation.
    pub ffn_act: CudaSlice<bf16>,
    /// `[t, h]` shared-expert output.
    pub ffn_out: CudaSlice<bf16>,
    /// `[t, h]` f32 router input, `[t, e]` router logits, `[t, k]` ids and weights.
    pub x_f32: CudaSlice<f32>,
    /// `[t, e]` router logits.
    pub router_logits: CudaSlice<f32>,
    /// `[t, k]` selected experts.
    pub topk_ids: CudaSlice<u32>,
    /// `[t, k]` routing weights.
    pub topk_weights: CudaSlice<f32>,
    /// moe_align output for the largest plan of up to `t_cap` tokens.
    pub sorted_ids: CudaSlice<u32>,
    /// Expert of each aligned tile.
    pub expert_ids: CudaSlice<u32>,
    /// Padded row count after alignment.
    pub n_padded: CudaSlice<u32>,
    /// `[t*k, i]`, `[t*k, h]`, `[t, h]`: expert activations, weighted slot outputs, their sum.
    pub moe_act: CudaSlice<bf16>,
    /// `[t, k, h]` per-slot expert outputs.
    pub moe_slot: CudaSlice<bf16>,
    /// `[t, h]` MoE output.
    pub moe_out: CudaSlice<bf16>,
    /// `[t]` token ids and positions.
    pub ids: CudaSlice<u32>,
    /// `[t]` rotary positions.
    pub positions: CudaSlice<u32>,
}

impl Scratch {
    /// Allocates every buffer for `t_cap` tokens. Errors: [`Error::Cuda`] (out of memory),
    /// [`Error::ShapeMismatch`] (sizes overflow).
    pub fn new(dev: &CudaDevice, dims: ScratchDims, t_cap: usize) -> Result<Scratch> {
        let d = dims;
        let n = |a: usize, b: usize| {
            a.checked_mul(b).ok_or_else(|| Error::ShapeMismatch {
                op: "cuda::Scratch",
                expected: "sizes within usize".into(),
                got: format!("{a} x {b}"),
            })
        };
        // cuMemAlloc refuses 0 bytes: every buffer gets at least one element.
        fn z<T: DeviceRepr + ValidAsZeroBits>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
            dev.zeros(len.max(1))
        }
        let pairs = n(t_cap, d.top_k)?;
        let (mut cap, mut tiles) = (0, 0);
        if d.n_experts > 0 {
            for rule in MOE_GEMM_TILES {
                let block_m = rule.tile.block_m as usize;
                let c = moe_align::capacity(pairs, d.n_experts, block_m).map_err(cuda_err("Scratch"))?;
                cap = cap.max(c);
                tiles = tiles.max(c / block_m);
            }
        }
        Ok(Scratch {
            dims,
            t_cap,
            x: z(dev, n(t_cap, d.hidden)?)?,
            normed: z(dev, n(t_cap, d.hidden)?)?,
            q: z(dev, n(t_cap, d.q_dim)?)?,
            attn: z(dev, n(t_cap, d.q_dim)?)?,
            ffn_gate_up: z(dev, n(t_cap, 2 * d.ffn_inter)?)?,
            ffn_act: z(dev, n(t_cap, d.ffn_inter)?)?,
            ffn_out: z(dev, n(t_cap, d.hidden)?)?,
            x_f32: z(dev, if d.n_experts > 0 { n(t_cap, d.hidden)? } else { 0 })?,
            router_logits: z(dev, n(t_cap, d.n_experts)?)?,
            topk_ids: z(dev, pairs)?,
            topk_weights: z(dev, pairs)?,
            sorted_ids: z(dev, cap)?,
            expert_ids: z(dev, tiles)?,
            n_padded: z(dev, 1)?,
            moe_act: z(dev, n(pairs, d.moe_inter)?)?,
            moe_slot: z(dev, if d.n_experts > 0 { n(pairs, d.hidden)? } else { 0 })?,
            moe_out: z(dev, if d.n_experts > 0 { n(t_cap, d.hidden)? } else { 0 })?,
            ids: z(dev, t_cap)?,
            positions: z(dev, t_cap)?,
        })
    }
}

/// One layer's KV cache: `[max_seq, n_kv_heads, head_dim]` bf16 each, K after RoPE.
pub struct GpuLayerKv {
    /// `[max_seq, n_kv_heads, head_dim]` keys after RoPE.
    pub k: CudaSlice<bf16>,
    /// `[max_seq, n_kv_heads, head_dim]` values.
    pub v: CudaSlice<bf16>,
}

/// SwiGLU `down(silu(gate(x)) ⊙ up(x))` with gate and up stacked into one `[2i, h]` GEMM.
pub struct GpuSwiGlu {
    /// `[2i, h]`, gate rows first.
    pub gate_up: Linear,
    /// `[h, i]`
    pub down: Linear,
    /// Width `i`.
    pub inter: usize,
    /// Hidden width `h`.
    pub hidden: usize,
}

impl GpuSwiGlu {
    /// Errors: [`Error::Cuda`] (allocation), [`Error::ShapeMismatch`].
    pub fn upload(dev: &CudaDevice, m: &SwiGlu) -> Result<GpuSwiGlu> {
        Ok(GpuSwiGlu {
            gate_up: Linear::upload_rows(dev, &[(m.gate.weight.dense()?, m.gate.bias.as_deref()), (m.up.weight.dense()?, m.up.bias.as_deref())])?,
            down: Linear::upload(dev, m.down.weight.dense()?, m.down.bias.as_deref())?,
            inter: m.inter,
            hidden: m.hidden,
        })
    }

    /// `x` `[t, h]` → `out` `[t, h]` (added onto `out` with `accumulate`); `gate_up` `[t, 2i]` and
    /// `act` `[t, i]` are scratch. Errors: shape mismatches, [`Error::Cuda`].
    pub fn forward(
        &self,
        dev: &CudaDevice,
        x: &CudaView<'_, bf16>,
        gate_up: &mut CudaViewMut<'_, bf16>,
        act: &mut CudaViewMut<'_, bf16>,
        out: &mut CudaViewMut<'_, bf16>,
        accumulate: bool,
    ) -> Result<()> {
        self.gate_up.forward(dev, x, gate_up, false)?; // [t, 2i]
        ops::silu_mul_fused(dev, &gate_up.as_view(), act, self.inter)?; // [t, i]
        self.down.forward(dev, &act.as_view(), out, accumulate) // [t, h]
    }
}

/// Grouped-query attention with RoPE over the device KV cache.
pub struct GpuAttention {
    /// `[n_heads * head_dim, h]`, `[n_kv_heads * head_dim, h]` x 2, `[h, n_heads * head_dim]`
    pub q: Linear,
    /// `[n_kv_heads * head_dim, h]`
    pub k: Linear,
    /// `[n_kv_heads * head_dim, h]`
    pub v: Linear,
    /// `[h, n_heads * head_dim]`
    pub o: Linear,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Lanes per head.
    pub head_dim: usize,
}

impl GpuAttention {
    /// Errors: [`Error::Cuda`] (allocation), [`Error::ShapeMismatch`].
    pub fn upload(dev: &CudaDevice, a: &Attention) -> Result<GpuAttention> {
        Ok(GpuAttention {
            q: Linear::upload(dev, a.q_proj.weight.dense()?, a.q_proj.bias.as_deref())?,
            k: Linear::upload(dev, a.k_proj.weight.dense()?, a.k_proj.bias.as_deref())?,
            v: Linear::upload(dev, a.v_proj.weight.dense()?, a.v_proj.bias.as_deref())?,
            o: Linear::upload(dev, a.o_proj.weight.dense()?, a.o_proj.bias.as_deref())?,
            n_heads: a.n_heads,
            n_kv_heads: a.n_kv_heads,
            head_dim: a.head_dim,
        })
    }

    /// `x` `[t, h]` at positions `start..start+t` (`positions` `[t]`): writes K (after RoPE) and V
    /// of those rows into `kv`, attends causally over `0..start+t`, and ADDS the output
    /// projection onto `residual` `[t, h]`. `q` and `attn` `[t, n_heads * head_dim]` are scratch.
    ///
    /// Errors: [`Error::ShapeMismatch`] when the cache has no room for the rows, kernel and cuBLAS
    /// errors as [`Error::Cuda`].
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        dev: &CudaDevice,
        x: &CudaView<'_, bf16>,
        q: &mut CudaViewMut<'_, bf16>,
        attn: &mut CudaViewMut<'_, bf16>,
        kv: &mut GpuLayerKv,
        start: usize,
        positions: &CudaView<'_, u32>,
        theta: f32,
        residual: &mut CudaViewMut<'_, bf16>,
    ) -> Result<()> {
        let (t, hd) = (positions.len(), self.head_dim);
        let kv_dim = self.n_kv_heads * hd;
        let rows = start * kv_dim..(start + t) * kv_dim;
        self.q.forward(dev, x, q, false)?; // [t, n_heads, hd]
        ops::rope_interleaved(dev, q, self.n_heads, hd, positions, theta)?; // q_rope
        {
            let mut k_rows = view_mut(&mut kv.k, rows.clone())?; // [t, n_kv_heads, hd] in the cache
            self.k.forward(dev, x, &mut k_rows, false)?;
            ops::rope_interleaved(dev, &mut k_rows, self.n_kv_heads, hd, positions, theta)?;
            // k_rope
        }
        self.v.forward(dev, x, &mut view_mut(&mut kv.v, rows)?, false)?;
        let dims = AttentionDims {
            n_queries: t,
            kv_len: start + t,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            causal: true,
        };
        ops::attention(dev, &q.as_view(), &kv.k.as_view(), &kv.v.as_view(), attn, dims)?; // [t, n_heads, hd]
        self.o.forward(dev, &attn.as_view(), residual, true) // residual += attn_out
    }
}

/// The MoE block: f32 router, stacked expert weights for the grouped GEMMs, shared experts.
pub struct GpuMoe {
    /// `[e, h]` f32 and `[e]` f32 (zeros when the checkpoint has no correction bias).
    pub router: CudaSlice<f32>,
    /// `[e]` correction bias (zeros when the checkpoint has none).
    pub bias: CudaSlice<f32>,
    /// `[e, 2i, h]` (gate rows then up rows per expert) and `[e, h, i]`.
    pub w_gate_up: CudaSlice<bf16>,
    /// `[e, h, i]` stacked down projections.
    pub w_down: CudaSlice<bf16>,
    /// Shared experts.
    pub shared: Option<GpuSwiGlu>,
    /// Routed experts `e`.
    pub n_experts: usize,
    /// Experts per token `k`.
    pub top_k: usize,
    /// Routed expert width `i`.
    pub inter: usize,
    /// Hidden width `h`.
    pub hidden: usize,
    /// Clamp of the renormalisation denominator.
    pub norm_min: f32,
}

impl GpuMoe {
    /// Errors: [`Error::Config`] for what the kernels do not cover (expert biases, more than 256
    /// experts, hidden or expert width not a multiple of 8); [`Error::Cuda`] (allocation).
    pub fn upload(dev: &CudaDevice, m: &MoeBlock) -> Result<GpuMoe> {
        let unsupported = |key: &str, reason: String| Error::Config { key: key.into(), reason: format!("{reason} (CUDA MoE kernels)") };
        let (e, h) = (m.experts.len(), m.hidden());
        let i = m.experts.first().map_or(0, |x| x.inter);
        if e == 0 || e > ernie_kernels::routing::MAX_EXPERTS {
            return Err(unsupported("moe_num_experts", format!("{e} experts; 1..=256 are supported")));
        }
        if h % 8 != 0 || i % 8 != 0 {
            return Err(unsupported("hidden_size", format!("hidden {h} and expert width {i} must be multiples of 8")));
        }
        let mut w_gate_up = Vec::with_capacity(e * 2 * i * h);
        let mut w_down = Vec::with_capacity(e * h * i);
        for x in &m.experts {
            if x.gate.bias.is_some() || x.up.bias.is_some() || x.down.bias.is_some() {
                return Err(unsupported("use_bias", "routed experts with biases are not supported".into()));
            }
            extend_bf16(&mut w_gate_up, x.gate.weight.dense()?)?;
            extend_bf16(&mut w_gate_up, x.up.weight.dense()?)?;
            extend_bf16(&mut w_down, x.down.weight.dense()?)?;
        }
        if w_gate_up.len() != e * 2 * i * h || w_down.len() != e * h * i {
            return Err(unsupported("moe_intermediate_size", "experts of different widths".into()));
        }
        let mut bias = m.router.bias.clone().unwrap_or_else(|| vec![0.0; e]);
        // Elastic width: a masked expert gets a -inf selection score, as on the CPU. Its -inf
        // logit there also drops it from the softmax, but the renormalised weights of the chosen
        // experts are ratios of p and do not depend on that (up to norm_min).
        if let Some(mask) = &m.router.expert_mask {
            bias.iter_mut().zip(mask).filter(|(_, &keep)| !keep).for_each(|(b, _)| *b = f32::NEG_INFINITY);
        }
        Ok(GpuMoe {
            router: dev.upload(&m.router.weight)?,
            bias: dev.upload(&bias)?,
            w_gate_up: dev.upload(&w_gate_up)?,
            w_down: dev.upload(&w_down)?,
            shared: m.shared.as_ref().map(|s| GpuSwiGlu::upload(dev, s)).transpose()?,
            n_experts: e,
            top_k: m.router.top_k,
            inter: i,
            hidden: h,
            norm_min: m.router.norm_min,
        })
    }

    /// `s.normed[..t]` `[t, h]` → ADDS the MoE output onto `s.x[..t]`: route → align → grouped
    /// gate/up + SwiGLU → grouped down (× routing weight) → reduce (+ shared experts) → residual.
    /// Returns the routing (downloaded) when `want_routing`.
    ///
    /// Errors: shape mismatches (scratch too small), kernel and cuBLAS errors as [`Error::Cuda`].
    pub fn forward(&self, dev: &CudaDevice, s: &mut Scratch, t: usize, want_routing: bool) -> Result<Option<Routing>> {
        let (e, k, h, i) = (self.n_experts, self.top_k, self.hidden, self.inter);
        let x = view(&s.normed, 0..t * h)?; // [t, h]
        ops::to_f32(dev, &x, &mut view_mut(&mut s.x_f32, 0..t * h)?)?; // [t, h] f32
        let x_f32 = view(&s.x_f32, 0..t * h)?;
        // f32 here: the router's probabilities decide discrete choices (HF keeps it in fp32 too).
        ops::matmul_xwt(dev, &x_f32, &self.router, &mut view_mut(&mut s.router_logits, 0..t * e)?, e, h, false)?; // ffn_moe_logits [t, e]
        let plan = MoePlan::new(t, k, e).map_err(cuda_err("moe plan"))?;
        let mut ids = view_mut(&mut s.topk_ids, 0..plan.n_pairs)?;
        let mut weights = view_mut(&mut s.topk_weights, 0..plan.n_pairs)?;
        ops::route_logits(dev, &view(&s.router_logits, 0..t * e)?, e, k, &self.bias.as_view(), self.norm_min, &mut ids, &mut weights)?; // ffn_moe_topk [t, k]
        let (ids, weights) = (ids.as_view(), weights.as_view());
        ops::moe_align(
            dev,
            &ids,
            e,
            plan.tile.block_m as usize,
            &mut view_mut(&mut s.sorted_ids, 0..plan.capacity)?,
            &mut view_mut(&mut s.expert_ids, 0..plan.n_tiles)?,
            &mut view_mut(&mut s.n_padded, 0..1)?,
        )?;
        let (sorted, tiles, n_padded) =
            (view(&s.sorted_ids, 0..plan.capacity)?, view(&s.expert_ids, 0..plan.n_tiles)?, view(&s.n_padded, 0..1)?);
        let rows = AlignedRows { sorted_ids: &sorted, expert_ids: &tiles, n_padded: &n_padded };
        let dims = GemmDims { plan, hidden: h, inter: i };
        let mut act = view_mut(&mut s.moe_act, 0..plan.n_pairs * i)?; // [t*k, i]
        ops::moe_gemm_swiglu(dev, &x, &self.w_gate_up.as_view(), &rows, &mut act, dims)?;
        let mut slot = view_mut(&mut s.moe_slot, 0..plan.n_pairs * h)?; // [t*k, h]
        ops::moe_gemm_down(dev, &act.as_view(), &self.w_down.as_view(), &rows, &weights, &mut slot, dims)?;
        let mut out = view_mut(&mut s.moe_out, 0..t * h)?; // ffn_moe_out [t, h]
        match &self.shared {
            Some(shared) => {
                let si = shared.inter;
                let mut shared_out = view_mut(&mut s.ffn_out, 0..t * h)?;
                shared.forward(
                    dev,
                    &x,
                    &mut view_mut(&mut s.ffn_gate_up, 0..t * 2 * si)?,
                    &mut view_mut(&mut s.ffn_act, 0..t * si)?,
                    &mut shared_out,
                    false,
                )?;
                ops::moe_reduce(dev, &slot.as_view(), Some(&shared_out.as_view()), &mut out, k, h)?;
            }
            None => ops::moe_reduce(dev, &slot.as_view(), None, &mut out, k, h)?,
        }
        ops::add_inplace(dev, &mut view_mut(&mut s.x, 0..t * h)?, &out.as_view())?; // l_out
        if !want_routing {
            return Ok(None);
        }
        Ok(Some(Routing { top_k: k, expert_ids: dev.download(&ids)?, weights: dev.download(&weights)? }))
    }
}
