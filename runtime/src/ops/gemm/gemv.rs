//! Streaming GEMV for decode: `y[m, n] = x[m, k] · W[n, k]ᵀ` with few rows (`m ≤ GEMV_MAX_ROWS`),
//! memory-bound, so each weight row is read exactly once for all `m` rows of `x`, upcast in
//! registers (no scratch, no allocation per call). The weight rows of every matrix of one call
//! are cut into `ROWS_PER_TASK`-row tasks run in one rayon pass: one matrix ([`gemv`]), a gate/up
//! pair ([`gemv_pair`]) or all the active experts of a token ([`gemv_experts`]).

use std::ops::Range;

use rayon::prelude::*;

use super::{check_shapes, Kernel, SyncPtr, WeightRef};
use crate::{Error, Result};

/// Rows of `x` read together against each streamed weight row; more rows are done in groups.
pub const GEMV_MAX_ROWS: usize = 4;
/// Weight rows per rayon task (k = 2560 bf16: 320 KiB of weights per task).
const ROWS_PER_TASK: usize = 64;

/// `x, m, k, w, weight rows, out, ldo`: writes `out[i·ldo + j]` for `i < m ≤ 4`, `j ∈ rows`.
type RowsFn = unsafe fn(&[f32], usize, usize, WeightRef<'_>, Range<usize>, *mut f32, usize);

fn rows_fn(kernel: Kernel) -> RowsFn {
    let kernel = if kernel.is_available() { kernel } else { Kernel::Portable };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 | Kernel::Avx512Bf16Dot => super::avx512::gemv_rows,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => super::avx2::gemv_rows,
        _ => super::portable::gemv_rows,
    }
}

/// One matrix of a pass: `out[m, n] = x[m, k] · w[n, k]ᵀ`.
#[derive(Clone, Copy)]
struct Job<'a> {
    x: &'a [f32],
    m: usize,
    w: WeightRef<'a>,
    n: usize,
    k: usize,
    out: SyncPtr<f32>,
}

/// Runs `count` jobs (`job(i)`, shapes already checked) in one parallel pass.
fn run<'a>(count: usize, job: impl Fn(usize) -> Job<'a> + Sync, kernel: Kernel) {
    let f = rows_fn(kernel);
    let tasks: usize = (0..count).map(|i| job(i).n.div_ceil(ROWS_PER_TASK)).sum();
    (0..tasks).into_par_iter().for_each(|mut t| {
        let mut i = 0;
        let jb = loop {
            let jb = job(i);
            let c = jb.n.div_ceil(ROWS_PER_TASK);
            if t < c {
                break jb;
            }
            t -= c;
            i += 1;
        };
        let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(jb.n);
        for g in (0..jb.m).step_by(GEMV_MAX_ROWS) {
            let mg = GEMV_MAX_ROWS.min(jb.m - g);
            let x = &jb.x[g * jb.k..(g + mg) * jb.k];
            // SAFETY: the kernel's features are available (rows_fn); x is [mg, k], w [n, k], and
            // this task alone writes columns `rows` of rows g..g+mg of out [m, n].
            unsafe { f(x, mg, jb.k, jb.w, rows.clone(), jb.out.0.add(g * jb.n), jb.n) };
        }
    });
}

/// `out[m, n] = x[m, k] · w[n, k]ᵀ`, streaming `w` once per group of [`GEMV_MAX_ROWS`] rows.
///
/// Errors: [`Error::ShapeMismatch`] when a slice length disagrees with `m, n, k`.
pub fn gemv(x: &[f32], w: WeightRef<'_>, m: usize, n: usize, k: usize, out: &mut [f32], kernel: Kernel) -> Result<()> {
    check_shapes("gemv", x.len(), w.len(), out.len(), m, n, k)?;
    let out = SyncPtr(out.as_mut_ptr());
    run(1, |_| Job { x, m, w, n, k, out }, kernel);
    Ok(())
}

/// The gate/up pair of an MLP in one pass: `out_a = x · w_aᵀ`, `out_b = x · w_bᵀ`, both `[m, n]`,
/// weights `[n, k]`.
///
/// Errors: [`Error::ShapeMismatch`] as [`gemv`].
#[allow(clippy::too_many_arguments)]
pub fn gemv_pair(
    x: &[f32],
    w_a: WeightRef<'_>,
    w_b: WeightRef<'_>,
    m: usize,
    n: usize,
    k: usize,
    out_a: &mut [f32],
    out_b: &mut [f32],
    kernel: Kernel,
) -> Result<()> {
    check_shapes("gemv_pair a", x.len(), w_a.len(), out_a.len(), m, n, k)?;
    check_shapes("gemv_pair b", x.len(), w_b.len(), out_b.len(), m, n, k)?;
    let outs = [(w_a, SyncPtr(out_a.as_mut_ptr())), (w_b, SyncPtr(out_b.as_mut_ptr()))];
    run(2, |i| Job { x, m, w: outs[i].0, n, k, out: outs[i].1 }, kernel);
    Ok(())
}

/// One expert's product for [`gemv_experts`]: `x` `[m, k]` against `w` `[n, k]`.
#[derive(Clone, Copy, Debug)]
pub struct ExpertJob<'a> {
    /// The expert's weight `[n, k]`.
    pub w: WeightRef<'a>,
    /// The rows routed to it, `[m, k]`.
    pub x: &'a [f32],
    /// Number of rows of `x` (≥ 0).
    pub m: usize,
}

/// Many experts in one parallel pass: `out` is the concatenation of every job's `[m_j, n]` result
/// in job order (`[Σ m_j, n]`). All weights share `[n, k]`.
///
/// Errors: [`Error::ShapeMismatch`] when a job's sizes or `out`'s length disagree.
pub fn gemv_experts(jobs: &[ExpertJob<'_>], n: usize, k: usize, out: &mut [f32], kernel: Kernel) -> Result<()> {
    let mut rows = 0usize;
    for j in jobs {
        check_shapes("gemv_experts job", j.x.len(), j.w.len(), j.m * n, j.m, n, k)?;
        rows += j.m;
    }
    if rows.checked_mul(n) != Some(out.len()) {
        return Err(Error::ShapeMismatch { op: "gemv_experts", expected: format!("out [{rows}, {n}]"), got: format!("out len {}", out.len()) });
    }
    let base = SyncPtr(out.as_mut_ptr());
    run(
        jobs.len(),
        |i| {
            let base = base; // capture the Sync wrapper, not its raw field
            let row0: usize = jobs[..i].iter().map(|j| j.m).sum();
            // SAFETY: row0 + m_i ≤ rows, so the offset stays inside out.
            let out = SyncPtr(unsafe { base.0.add(row0 * n) });
            Job { x: jobs[i].x, m: jobs[i].m, w: jobs[i].w, n, k, out }
        },
        kernel,
    );
    Ok(())
}

/// One matrix of [`gemv_batch`]: `out[m, n] = x[m, k] · w[n, k]ᵀ`, each with its own shape.
/// Holds its output exclusively for `'a` (built from a `&'a mut [f32]`).
pub struct GemvJob<'a> {
    w: WeightRef<'a>,
    x: &'a [f32],
    out: SyncPtr<f32>,
    out_len: usize,
    m: usize,
    n: usize,
    k: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> GemvJob<'a> {
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ`; the shapes are checked by [`gemv_batch`].
    pub fn new(w: WeightRef<'a>, x: &'a [f32], m: usize, n: usize, k: usize, out: &'a mut [f32]) -> GemvJob<'a> {
        GemvJob { w, x, out_len: out.len(), out: SyncPtr(out.as_mut_ptr()), m, n, k, _out: std::marker::PhantomData }
    }
}

/// Any set of products in one parallel pass (decode: the gate and up matrices of every active
/// expert and the shared MLP of a token, then all their down matrices): one rayon fork/join for
/// the lot, each weight row streamed once, no allocation.
///
/// Errors: [`Error::ShapeMismatch`] when a job's slice lengths disagree with its `m, n, k`.
pub fn gemv_batch(jobs: &[GemvJob<'_>], kernel: Kernel) -> Result<()> {
    for j in jobs {
        check_shapes("gemv_batch job", j.x.len(), j.w.len(), j.out_len, j.m, j.n, j.k)?;
    }
    // Each job owns its output exclusively (GemvJob::new took `&mut`), and `run` gives every
    // (job, row range) to one task.
    run(jobs.len(), |i| Job { x: jobs[i].x, m: jobs[i].m, w: jobs[i].w, n: jobs[i].n, k: jobs[i].k, out: jobs[i].out }, kernel);
    Ok(())
}

/// Slow twin of [`gemv`]: plain loops in f64 over the same shapes (same errors).
pub fn gemv_slow(x: &[f32], w: WeightRef<'_>, m: usize, n: usize, k: usize, out: &mut [f32]) -> Result<()> {
    super::gemm_slow(x, w, m, n, k, out)
}
