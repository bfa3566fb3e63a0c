//! GPU ops, one function per CPU op of the same name ([`crate::ops`], [`crate::nn::moe`]), on device
//! buffers. Each checks its shapes (through the `ernie-kernels` launcher or here) and maps errors to
//! [`crate::Error`]. They queue work on the device's stream and return without waiting.
//!
//! | CPU                          | GPU (here)            | how                          |
//! |------------------------------|-----------------------|------------------------------|
//! | `Transformer::embed`         | [`embedding`]         | `embedding_bf16`             |
//! | `ops::rms_norm`              | [`rms_norm`]          | `rmsnorm_bf16`               |
//! | `ops::matmul_xwt`            | [`matmul_xwt`]        | cuBLAS GemmEx                |
//! | `ops::rope_interleaved`      | [`rope_interleaved`]  | `rope_bf16`                  |
//! | `ops::silu_mul`              | [`silu_mul`], [`silu_mul_fused`] | `silu_mul(_fused)_bf16` |
//! | residual `+=`                | [`add_inplace`]       | `add_inplace_bf16`           |
//! | `moe::route_logits`          | [`route_logits`]      | `moe_route_f32`              |
//! | `moe::group_by_expert`       | [`moe_align`]         | `moe_align_u32`              |
//! | `SwiGlu::forward` per expert | [`moe_gemm_swiglu`] / [`moe_gemm_down`] | grouped GEMMs |
//! | slot sum + shared experts    | [`moe_reduce`]        | `moe_reduce(_add)_bf16`      |
//! | `Attention` softmax(qkᵀ)v    | [`attention`]         | `attention_{decode,prefill}_bf16` |

use ernie_kernels::attention::AttentionDims;
use ernie_kernels::cudarc::driver::{CudaView, CudaViewMut};
use ernie_kernels::moe_align::AlignDims;
use ernie_kernels::moe_gemm::{AlignedRows, GemmDims};
use ernie_kernels::moe_reduce::ReduceDims;
use ernie_kernels::rmsnorm::NormDims;
use ernie_kernels::rope::RopeDims;
use ernie_kernels::routing::RouteDims;
use half::bf16;

pub use super::gemm::{add_bias_rows, matmul_xwt};
use super::{cuda_err, CudaDevice};
use crate::{Error, Result};

type In<'a, 'b, T> = &'a CudaView<'b, T>;
type Out<'a, 'b, T> = &'a mut CudaViewMut<'b, T>;

/// `out[i] = table[ids[i]]`: table `[vocab, hidden]`, ids `[t]` (validate `< vocab` on the host
/// first: the kernel writes a zero row for an out-of-range id), out `[t, hidden]`.
pub fn embedding(dev: &CudaDevice, table: In<bf16>, ids: In<u32>, out: Out<bf16>, vocab: usize, hidden: usize) -> Result<()> {
    dev.kernels().embedding(dev.stream(), table, ids, out, vocab, hidden).map_err(cuda_err("embedding"))
}

/// RMSNorm of each `[hidden]` row: x `[t, hidden]`, w `[hidden]`, out `[t, hidden]`, math in f32.
pub fn rms_norm(dev: &CudaDevice, x: In<bf16>, w: In<bf16>, eps: f32, out: Out<bf16>) -> Result<()> {
    let hidden = w.len();
    if hidden == 0 || x.len() % hidden != 0 {
        return Err(Error::ShapeMismatch {
            op: "cuda::rms_norm",
            expected: format!("x [t, {hidden}]"),
            got: format!("{} elements", x.len()),
        });
    }
    let dims = NormDims { n_rows: x.len() / hidden, hidden, eps };
    dev.kernels().rms_norm(dev.stream(), x, w, out, dims).map_err(cuda_err("rms_norm"))
}

/// Interleaved RoPE in place: x `[t, n_heads, head_dim]`, positions `[t]` u32, angle
/// `pos * theta^(-2m/head_dim)` (f64 in the kernel; the CPU table forms it in f32).
pub fn rope_interleaved(dev: &CudaDevice, x: Out<bf16>, n_heads: usize, head_dim: usize, positions: In<u32>, theta: f32) -> Result<()> {
    let dims = RopeDims { n_tokens: positions.len(), n_heads, head_dim, theta };
    dev.kernels().rope(dev.stream(), x, positions, dims).map_err(cuda_err("rope_interleaved"))
}

/// `out = silu(gate) * up`, all `[n]`.
pub fn silu_mul(dev: &CudaDevice, gate: In<bf16>, up: In<bf16>, out: Out<bf16>) -> Result<()> {
    dev.kernels().silu_mul(dev.stream(), gate, up, out).map_err(cuda_err("silu_mul"))
}

/// SwiGLU on a stacked projection: gate_up `[t, 2 * inter]` (gate columns first) → out `[t, inter]`.
pub fn silu_mul_fused(dev: &CudaDevice, gate_up: In<bf16>, out: Out<bf16>, inter: usize) -> Result<()> {
    let n_rows = out.len().checked_div(inter).unwrap_or(0);
    dev.kernels().silu_mul_fused(dev.stream(), gate_up, out, n_rows, inter).map_err(cuda_err("silu_mul_fused"))
}

/// `acc += b`, both `[n]` (the residual update), sum in f32.
pub fn add_inplace(dev: &CudaDevice, acc: Out<bf16>, b: In<bf16>) -> Result<()> {
    dev.kernels().add_inplace(dev.stream(), acc, b).map_err(cuda_err("add_inplace"))
}

/// `out = f32(x)`, both `[n]` (exact).
pub fn to_f32(dev: &CudaDevice, x: In<bf16>, out: Out<f32>) -> Result<()> {
    dev.kernels().to_f32(dev.stream(), x, out).map_err(cuda_err("to_f32"))
}

/// Softmax → top-k of `p + bias` (ties to the lower expert) → renormalise by
/// `max(Σ p[sel], norm_min)`: logits `[t, e]` f32, bias `[e]` f32, ids / weights `[t, k]` out.
#[allow(clippy::too_many_arguments)]
pub fn route_logits(
    dev: &CudaDevice,
    logits: In<f32>,
    n_experts: usize,
    top_k: usize,
    bias: In<f32>,
    norm_min: f32,
    ids: Out<u32>,
    weights: Out<f32>,
) -> Result<()> {
    let n_tokens = logits.len().checked_div(n_experts).unwrap_or(0);
    let dims = RouteDims { n_tokens, n_experts, top_k };
    dev.kernels().moe_route(dev.stream(), logits, bias, ids, weights, dims, norm_min).map_err(cuda_err("route_logits"))
}

/// The aligned pair order of `moe_align`: `[capacity]` pair ids grouped by expert, `[tiles]` expert
/// per tile, `[1]` padded row count. Sizes come from an [`ernie_kernels::MoePlan`].
pub fn moe_align(
    dev: &CudaDevice,
    ids: In<u32>,
    n_experts: usize,
    block_m: usize,
    sorted: Out<u32>,
    expert_ids: Out<u32>,
    n_padded: Out<u32>,
) -> Result<()> {
    let dims = AlignDims { n_pairs: ids.len(), n_experts, block_m };
    dev.kernels().moe_align(dev.stream(), ids, sorted, expert_ids, n_padded, dims).map_err(cuda_err("moe_align"))
}

/// Grouped gate/up GEMM + SwiGLU: x `[t, h]`, w_gate_up `[e, 2i, h]` → act `[t*k, i]`.
pub fn moe_gemm_swiglu(
    dev: &CudaDevice,
    x: In<bf16>,
    w_gate_up: In<bf16>,
    rows: &AlignedRows<'_, '_>,
    act: Out<bf16>,
    dims: GemmDims,
) -> Result<()> {
    dev.kernels().moe_gemm_swiglu(dev.stream(), x, w_gate_up, rows, act, dims).map_err(cuda_err("moe_gemm_swiglu"))
}

/// Grouped down GEMM scaled by the routing weight: act `[t*k, i]`, w_down `[e, h, i]` →
/// slot `[t*k, h]`.
#[allow(clippy::too_many_arguments)]
pub fn moe_gemm_down(
    dev: &CudaDevice,
    act: In<bf16>,
    w_down: In<bf16>,
    rows: &AlignedRows<'_, '_>,
    weights: In<f32>,
    slot: Out<bf16>,
    dims: GemmDims,
) -> Result<()> {
    dev.kernels().moe_gemm_down(dev.stream(), act, w_down, rows, weights, slot, dims).map_err(cuda_err("moe_gemm_down"))
}

/// `out[t] = Σ_j slot[t*k + j] (+ shared[t])`: slot `[t*k, h]`, shared / out `[t, h]`.
pub fn moe_reduce(dev: &CudaDevice, slot: In<bf16>, shared: Option<In<bf16>>, out: Out<bf16>, top_k: usize, hidden: usize) -> Result<()> {
    let n_tokens = out.len().checked_div(hidden).unwrap_or(0);
    let dims = ReduceDims { n_tokens, top_k, hidden };
    dev.kernels().moe_reduce(dev.stream(), slot, shared, out, dims).map_err(cuda_err("moe_reduce"))
}

/// Causal GQA attention of the last `q.len() / (n_heads * head_dim)` positions over the first
/// `dims.kv_len` cache rows: q / out `[n_queries, n_heads, head_dim]`, caches
/// `[max_seq, n_kv_heads, head_dim]`, f32 softmax.
pub fn attention(dev: &CudaDevice, q: In<bf16>, k_cache: In<bf16>, v_cache: In<bf16>, out: Out<bf16>, dims: AttentionDims) -> Result<()> {
    dev.kernels().attention(dev.stream(), q, k_cache, v_cache, out, dims).map_err(cuda_err("attention"))
}
