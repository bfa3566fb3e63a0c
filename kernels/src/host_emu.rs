//! CPU runs of the kernels' own CUDA source (feature `host-emu`).
//!
//! build.rs compiles `cuda/host_emu_entry.cpp` (which #includes routing.cu, moe_align.cu,
//! moe_reduce.cu, moe_gemm.cu, rmsnorm.cu, rope.cu and attention.cu) with g++ against `cuda/host_emu.h`: every CUDA thread becomes a
//! fiber, `__syncthreads` / shuffles / `mma.sync` are warp- and block-collective emulations. The
//! functions here mirror the GPU launchers: the same dimension checks and the same launch
//! configuration, with host slices instead of device views. They exist for tests.

use std::os::raw::c_int;

use half::bf16;

use crate::attention::AttentionDims;
use crate::moe_align::AlignDims;
use crate::moe_gemm::GemmDims;
use crate::moe_reduce::ReduceDims;
use crate::rmsnorm::NormDims;
use crate::rope::RopeDims;
use crate::routing::RouteDims;
use crate::{dim_i32, Error, Result};

mod ffi {
    use std::os::raw::c_int;

    extern "C" {
        pub fn emu_moe_route_f32(
            grid_x: u32,
            block_x: u32,
            logits: *const f32,
            bias: *const f32,
            topk_ids: *mut u32,
            topk_weights: *mut f32,
            n_tokens: c_int,
            n_experts: c_int,
            top_k: c_int,
            norm_min: f32,
        ) -> c_int;
        pub fn emu_moe_align_u32(
            grid_x: u32,
            block_x: u32,
            topk_ids: *const u32,
            sorted_ids: *mut u32,
            expert_ids: *mut u32,
            n_padded: *mut u32,
            n_pairs: c_int,
            n_experts: c_int,
            block_m: c_int,
            capacity: c_int,
        ) -> c_int;
        pub fn emu_moe_reduce_bf16(
            grid_x: u32,
            block_x: u32,
            slot_out: *const u16,
            shared_out: *const u16,
            out: *mut u16,
            n_tokens: c_int,
            top_k: c_int,
            hidden: c_int,
        ) -> c_int;
        pub fn emu_moe_gemm_swiglu_bf16(
            block_m: c_int,
            grid_x: u32,
            grid_y: u32,
            block_x: u32,
            x: *const u16,
            w_gate_up: *const u16,
            sorted_ids: *const u32,
            expert_ids: *const u32,
            n_padded: *const u32,
            act: *mut u16,
            n_pairs: c_int,
            top_k: c_int,
            n_experts: c_int,
            inter: c_int,
            hidden: c_int,
        ) -> c_int;
        pub fn emu_rmsnorm_bf16(
            grid_x: u32,
            block_x: u32,
            x: *const u16,
            w: *const u16,
            out: *mut u16,
            n_rows: c_int,
            hidden: c_int,
            eps: f32,
        ) -> c_int;
        pub fn emu_rope_bf16(
            grid_x: u32,
            block_x: u32,
            x: *mut u16,
            pos: *const u32,
            n_tokens: c_int,
            n_heads: c_int,
            head_dim: c_int,
            theta: f32,
            n_t_pairs: c_int,
        ) -> c_int;
        pub fn emu_attention_bf16(
            decode: c_int,
            grid_x: u32,
            grid_y: u32,
            block_x: u32,
            q: *const u16,
            k_cache: *const u16,
            v_cache: *const u16,
            out: *mut u16,
            n_queries: c_int,
            kv_len: c_int,
            n_heads: c_int,
            n_kv_heads: c_int,
            head_dim: c_int,
            scale: f32,
            causal: c_int,
        ) -> c_int;
        pub fn emu_moe_gemm_down_bf16(
            block_m: c_int,
            grid_x: u32,
            grid_y: u32,
            block_x: u32,
            act: *const u16,
            w_down: *const u16,
            sorted_ids: *const u32,
            expert_ids: *const u32,
            n_padded: *const u32,
            topk_weights: *const f32,
            out: *mut u16,
            n_pairs: c_int,
            n_experts: c_int,
            hidden: c_int,
            inter: c_int,
        ) -> c_int;
    }
}

fn emu_result(op: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::EmulationFailed { op })
    }
}

/// A bf16 copy in 16-byte-aligned storage: the GEMM's uint4 loads need the alignment the device
/// allocator gives for free, and a `Vec<bf16>` only guarantees 2 bytes.
struct Aligned16 {
    storage: Vec<u128>,
}

impl Aligned16 {
    fn copy_of(values: &[bf16]) -> Self {
        let mut storage = vec![0u128; values.len().div_ceil(8)];
        // SAFETY: storage holds at least values.len() * 2 bytes, the two buffers are distinct
        // allocations, and bf16 is a plain 2-byte value (repr(transparent) over u16).
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr().cast::<u8>(),
                storage.as_mut_ptr().cast::<u8>(),
                std::mem::size_of_val(values),
            );
        }
        Self { storage }
    }

    fn as_ptr(&self) -> *const u16 {
        self.storage.as_ptr().cast()
    }
}

/// The three outputs of moe_align.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlignOutput {
    /// `[capacity]` pair ids grouped by expert, padding = n_pairs.
    pub sorted_ids: Vec<u32>,
    /// `[capacity / block_m]` expert per tile, n_experts past the padded total.
    pub expert_ids: Vec<u32>,
    /// Rows the GEMM visits.
    pub n_padded: u32,
}

/// `moe_route_f32` on the CPU: returns (`topk_ids` `[n_tokens, top_k]`, `topk_weights`).
pub fn moe_route(
    logits: &[f32],
    bias: &[f32],
    dims: RouteDims,
    norm_min: f32,
) -> Result<(Vec<u32>, Vec<f32>)> {
    const OP: &str = "moe_route (host emu)";
    dims.check()?;
    let n_out = dims.n_tokens * dims.top_k;
    dims.check_buffers(logits.len(), bias.len(), n_out, n_out)?;
    let mut ids = vec![u32::MAX; n_out];
    let mut weights = vec![f32::NAN; n_out];
    if dims.n_tokens == 0 {
        return Ok((ids, weights));
    }
    let cfg = dims.launch_config();
    // SAFETY: buffer lengths checked against dims above (same checks as the GPU launcher), and
    // the C++ side only reads/writes within them for these dims.
    let rc = unsafe {
        ffi::emu_moe_route_f32(
            cfg.grid_dim.0,
            cfg.block_dim.0,
            logits.as_ptr(),
            bias.as_ptr(),
            ids.as_mut_ptr(),
            weights.as_mut_ptr(),
            dim_i32(OP, "n_tokens", dims.n_tokens)?,
            dim_i32(OP, "n_experts", dims.n_experts)?,
            dim_i32(OP, "top_k", dims.top_k)?,
            norm_min,
        )
    };
    emu_result(OP, rc)?;
    Ok((ids, weights))
}

/// `moe_align_u32` on the CPU.
pub fn moe_align(topk_ids: &[u32], dims: AlignDims) -> Result<AlignOutput> {
    const OP: &str = "moe_align (host emu)";
    dims.check()?;
    let capacity = dims.capacity()?;
    let mut out = AlignOutput {
        sorted_ids: vec![0xdead_beef; capacity],
        expert_ids: vec![0xdead_beef; capacity / dims.block_m],
        n_padded: 0xdead_beef,
    };
    dims.check_buffers(
        topk_ids.len(),
        out.sorted_ids.len(),
        out.expert_ids.len(),
        1,
    )?;
    let cfg = dims.launch_config();
    // SAFETY: lengths checked above; the kernel writes sorted_ids[0..capacity),
    // expert_ids[0..capacity / block_m) and one n_padded.
    let rc = unsafe {
        ffi::emu_moe_align_u32(
            cfg.grid_dim.0,
            cfg.block_dim.0,
            topk_ids.as_ptr(),
            out.sorted_ids.as_mut_ptr(),
            out.expert_ids.as_mut_ptr(),
            &mut out.n_padded,
            dim_i32(OP, "n_pairs", dims.n_pairs)?,
            dim_i32(OP, "n_experts", dims.n_experts)?,
            dim_i32(OP, "block_m", dims.block_m)?,
            dim_i32(OP, "capacity", capacity)?,
        )
    };
    emu_result(OP, rc)?;
    Ok(out)
}

/// `moe_reduce_bf16` / `moe_reduce_add_bf16` on the CPU: returns `[n_tokens, hidden]`.
pub fn moe_reduce(
    slot_out: &[bf16],
    shared_out: Option<&[bf16]>,
    dims: ReduceDims,
) -> Result<Vec<bf16>> {
    const OP: &str = "moe_reduce (host emu)";
    dims.check()?;
    let mut out = vec![bf16::NAN; dims.n_tokens * dims.hidden];
    dims.check_buffers(slot_out.len(), shared_out.map(<[bf16]>::len), out.len())?;
    if dims.n_tokens == 0 {
        return Ok(out);
    }
    let cfg = dims.launch_config();
    let shared_ptr = shared_out.map_or(std::ptr::null(), |s| s.as_ptr().cast::<u16>());
    // SAFETY: lengths checked above; a null shared_out selects the kernel without the add.
    let rc = unsafe {
        ffi::emu_moe_reduce_bf16(
            cfg.grid_dim.0,
            cfg.block_dim.0,
            slot_out.as_ptr().cast(),
            shared_ptr,
            out.as_mut_ptr().cast(),
            dim_i32(OP, "n_tokens", dims.n_tokens)?,
            dim_i32(OP, "top_k", dims.top_k)?,
            dim_i32(OP, "hidden", dims.hidden)?,
        )
    };
    emu_result(OP, rc)?;
    Ok(out)
}

/// `moe_gemm_swiglu_bf16_<tile>` on the CPU (tile from `dims.plan`): returns act `[n_pairs, inter]`
/// (rows of pairs the GEMM never visits stay NaN, which tests would notice).
pub fn moe_gemm_swiglu(
    x: &[bf16],
    w_gate_up: &[bf16],
    rows: &AlignOutput,
    dims: GemmDims,
) -> Result<Vec<bf16>> {
    const OP: &str = "moe_gemm_swiglu (host emu)";
    let plan = dims.plan;
    let mut act = vec![bf16::NAN; plan.n_pairs * dims.inter];
    dims.check_swiglu_buffers(x.len(), w_gate_up.len(), act.len())?;
    dims.check_rows(OP, rows.sorted_ids.len(), rows.expert_ids.len(), 1)?;
    if plan.n_tiles == 0 {
        return Ok(act);
    }
    let cfg = dims.launch_config(OP, dims.inter)?;
    let (x, w) = (Aligned16::copy_of(x), Aligned16::copy_of(w_gate_up));
    // SAFETY: buffer lengths checked above with the GPU launcher's checks; x and w are 16-byte
    // aligned copies; act is written only at rows < n_pairs and columns < inter.
    let rc = unsafe {
        ffi::emu_moe_gemm_swiglu_bf16(
            plan.tile.block_m as c_int,
            cfg.grid_dim.0,
            cfg.grid_dim.1,
            cfg.block_dim.0,
            x.as_ptr(),
            w.as_ptr(),
            rows.sorted_ids.as_ptr(),
            rows.expert_ids.as_ptr(),
            &rows.n_padded,
            act.as_mut_ptr().cast(),
            dim_i32(OP, "n_pairs", plan.n_pairs)?,
            dim_i32(OP, "top_k", plan.top_k)?,
            dim_i32(OP, "n_experts", plan.n_experts)?,
            dim_i32(OP, "inter", dims.inter)?,
            dim_i32(OP, "hidden", dims.hidden)?,
        )
    };
    emu_result(OP, rc)?;
    Ok(act)
}

/// `moe_gemm_down_bf16_<tile>` on the CPU: returns out `[n_pairs, hidden]`, each row scaled by
/// its routing weight.
pub fn moe_gemm_down(
    act: &[bf16],
    w_down: &[bf16],
    rows: &AlignOutput,
    topk_weights: &[f32],
    dims: GemmDims,
) -> Result<Vec<bf16>> {
    const OP: &str = "moe_gemm_down (host emu)";
    let plan = dims.plan;
    let mut out = vec![bf16::NAN; plan.n_pairs * dims.hidden];
    dims.check_down_buffers(act.len(), w_down.len(), topk_weights.len(), out.len())?;
    dims.check_rows(OP, rows.sorted_ids.len(), rows.expert_ids.len(), 1)?;
    if plan.n_tiles == 0 {
        return Ok(out);
    }
    let cfg = dims.launch_config(OP, dims.hidden)?;
    let (act, w) = (Aligned16::copy_of(act), Aligned16::copy_of(w_down));
    // SAFETY: as in moe_gemm_swiglu: lengths checked, aligned copies, bounded writes.
    let rc = unsafe {
        ffi::emu_moe_gemm_down_bf16(
            plan.tile.block_m as c_int,
            cfg.grid_dim.0,
            cfg.grid_dim.1,
            cfg.block_dim.0,
            act.as_ptr(),
            w.as_ptr(),
            rows.sorted_ids.as_ptr(),
            rows.expert_ids.as_ptr(),
            &rows.n_padded,
            topk_weights.as_ptr(),
            out.as_mut_ptr().cast(),
            dim_i32(OP, "n_pairs", plan.n_pairs)?,
            dim_i32(OP, "n_experts", plan.n_experts)?,
            dim_i32(OP, "hidden", dims.hidden)?,
            dim_i32(OP, "inter", dims.inter)?,
        )
    };
    emu_result(OP, rc)?;
    Ok(out)
}

/// `rmsnorm_bf16` on the CPU: returns `[n_rows, hidden]`.
pub fn rms_norm(x: &[bf16], w: &[bf16], dims: NormDims) -> Result<Vec<bf16>> {
    const OP: &str = "rms_norm (host emu)";
    let mut out = vec![bf16::NAN; x.len()];
    dims.check(x.len(), w.len(), out.len())?;
    if dims.n_rows == 0 {
        return Ok(out);
    }
    let cfg = dims.launch_config();
    // SAFETY: lengths checked above with the launcher's checks.
    let rc = unsafe {
        ffi::emu_rmsnorm_bf16(
            cfg.grid_dim.0,
            cfg.block_dim.0,
            x.as_ptr().cast(),
            w.as_ptr().cast(),
            out.as_mut_ptr().cast(),
            dim_i32(OP, "n_rows", dims.n_rows)?,
            dim_i32(OP, "hidden", dims.hidden)?,
            dims.eps,
        )
    };
    emu_result(OP, rc)?;
    Ok(out)
}

/// `rope_bf16` (`positions` `[n_tokens]`, `n_t_pairs` None) or `rope_3d_bf16` (`positions`
/// `[n_tokens, 3]`) on the CPU, in place on `x` `[n_tokens, n_heads, head_dim]`.
pub fn rope(
    x: &mut [bf16],
    positions: &[u32],
    dims: RopeDims,
    n_t_pairs: Option<usize>,
) -> Result<()> {
    const OP: &str = "rope (host emu)";
    let n_pairs = dims.check(OP, x.len())?;
    let per_token = if n_t_pairs.is_some() { 3 } else { 1 };
    crate::check_len(OP, "positions", positions.len(), dims.n_tokens * per_token)?;
    if let Some(f) = n_t_pairs {
        if f > dims.head_dim / 2 {
            crate::bail!(OP, "n_t_pairs = {f} exceeds head_dim / 2");
        }
    }
    if n_pairs == 0 {
        return Ok(());
    }
    let cfg = RopeDims::launch_config(n_pairs);
    let f = n_t_pairs.map_or(Ok(-1), |f| dim_i32(OP, "n_t_pairs", f))?;
    // SAFETY: lengths checked above; the kernel rotates pairs in place within x.
    let rc = unsafe {
        ffi::emu_rope_bf16(
            cfg.grid_dim.0,
            cfg.block_dim.0,
            x.as_mut_ptr().cast(),
            positions.as_ptr(),
            dim_i32(OP, "n_tokens", dims.n_tokens)?,
            dim_i32(OP, "n_heads", dims.n_heads)?,
            dim_i32(OP, "head_dim", dims.head_dim)?,
            dims.theta,
            f,
        )
    };
    emu_result(OP, rc)
}

/// `attention_{decode,prefill}_bf16` on the CPU (kernel chosen as the launcher chooses):
/// returns out `[n_queries, n_heads, head_dim]`.
pub fn attention(
    q: &[bf16],
    k_cache: &[bf16],
    v_cache: &[bf16],
    dims: AttentionDims,
) -> Result<Vec<bf16>> {
    const OP: &str = "attention (host emu)";
    let mut out = vec![bf16::NAN; q.len()];
    dims.check(q.len(), k_cache.len(), v_cache.len(), out.len())?;
    if dims.n_queries == 0 {
        return Ok(out);
    }
    let cfg = dims.launch_config();
    // SAFETY: lengths checked above with the launcher's checks.
    let rc = unsafe {
        ffi::emu_attention_bf16(
            c_int::from(dims.should_use_decode_kernel()),
            cfg.grid_dim.0,
            cfg.grid_dim.1,
            cfg.block_dim.0,
            q.as_ptr().cast(),
            k_cache.as_ptr().cast(),
            v_cache.as_ptr().cast(),
            out.as_mut_ptr().cast(),
            dim_i32(OP, "n_queries", dims.n_queries)?,
            dim_i32(OP, "kv_len", dims.kv_len)?,
            dim_i32(OP, "n_heads", dims.n_heads)?,
            dim_i32(OP, "n_kv_heads", dims.n_kv_heads)?,
            dim_i32(OP, "head_dim", dims.head_dim)?,
            dims.scale,
            c_int::from(dims.causal),
        )
    };
    emu_result(OP, rc)?;
    Ok(out)
}
