//! Many quantised products in one parallel pass, for decode (issue #13, item 4): the gate and up
//! matrices of every active expert and of the shared MLP, then all their down matrices, as
//! [`crate::ops::gemm::gemv_batch`] does for 16-bit weights. Each job's activation rows are
//! quantised once (Q8_0 or Q8_K, by the weight's type, exactly as [`super::qmatmul_xwt`] does), then
//! one rayon pass streams every weight row of every job once, in runs of up to `ROWS_PER_TASK`
//! rows through the row kernels (`dot_q8_0_rows` etc.: activation blocks shared by a group of
//! rows, software prefetch of the rows ahead). The activation buffers are reused
//! per thread, so the steady state allocates only the small offset lists.
//!
//! Same numbers as [`super::qmatmul_xwt`] on each job, bit for bit (same quantizer, same dots).

use std::cell::RefCell;
use std::marker::PhantomData;

use rayon::prelude::*;

use super::blocks::{quantize_row_q8_0, quantize_row_q8_k, BlockQ8K, Q8_0_BYTES, QK8_0, QK_K};
use super::dot::{dot_q4_k_rows, dot_q6_k_rows, dot_q8_0_rows, Path};
use super::{QType, QWeight};
use crate::ops::gemm::SyncPtr;
use crate::{Error, Result};

/// Weight rows per rayon task (Q4_K at k = 2560: 90 KiB of weights).
const ROWS_PER_TASK: usize = 64;

/// One product of [`qgemv_batch`]: `out[m, n] = x[m, k] · w[n, k]ᵀ`. Holds `out` exclusively.
pub struct QGemvJob<'a> {
    w: &'a QWeight,
    x: &'a [f32],
    m: usize,
    out: SyncPtr<f32>,
    out_len: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl<'a> QGemvJob<'a> {
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ` with `(n, k) = w.dims()`; shapes checked by [`qgemv_batch`].
    pub fn new(w: &'a QWeight, x: &'a [f32], m: usize, out: &'a mut [f32]) -> QGemvJob<'a> {
        QGemvJob { w, x, m, out_len: out.len(), out: SyncPtr(out.as_mut_ptr()), _out: PhantomData }
    }
}

#[derive(Default)]
struct Scratch {
    q80: Vec<u8>,
    q8k: Vec<BlockQ8K>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs every job in one parallel pass on the fastest [`Path`] of this CPU.
///
/// Errors: [`Error::ShapeMismatch`] when a job's `x` is not `[m, k]` or `out` not `[m, n]`.
pub fn qgemv_batch(jobs: &[QGemvJob<'_>]) -> Result<()> {
    qgemv_batch_on(Path::detect(), jobs)
}

/// [`qgemv_batch`] on a given kernel `path` (a path the CPU lacks falls back to scalar).
pub fn qgemv_batch_on(path: Path, jobs: &[QGemvJob<'_>]) -> Result<()> {
    for j in jobs {
        let (n, k) = j.w.dims();
        if j.m.checked_mul(k) != Some(j.x.len()) || j.m.checked_mul(n) != Some(j.out_len) {
            return Err(Error::ShapeMismatch {
                op: "qgemv_batch job",
                expected: format!("x [{}, {k}], out [{}, {n}]", j.m, j.m),
                got: format!("x len {}, out len {}", j.x.len(), j.out_len),
            });
        }
    }
    let path = if Path::available().contains(&path) { path } else { Path::Scalar };
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => run(path, jobs, &mut s),
        Err(_) => run(path, jobs, &mut Scratch::default()), // re-entered on this thread
    });
    Ok(())
}

/// Where job `i`'s quantised rows start: a byte offset into `q80` or a block offset into `q8k`.
fn run(path: Path, jobs: &[QGemvJob<'_>], s: &mut Scratch) {
    let mut offs = Vec::with_capacity(jobs.len());
    let (mut b80, mut bk) = (0usize, 0usize);
    for j in jobs {
        let k = j.w.dims().1;
        match j.w.qtype() {
            QType::Q8_0 => {
                offs.push(b80);
                b80 += j.m * k / QK8_0 * Q8_0_BYTES;
            }
            QType::Q4K | QType::Q6K => {
                offs.push(bk);
                bk += j.m * k / QK_K;
            }
        }
    }
    if s.q80.len() < b80 {
        s.q80.resize(b80, 0);
    }
    if s.q8k.len() < bk {
        s.q8k.resize(bk, BlockQ8K::default());
    }
    for (j, &o) in jobs.iter().zip(&offs) {
        let k = j.w.dims().1;
        for (r, xr) in j.x.chunks_exact(k.max(1)).enumerate().take(j.m) {
            match j.w.qtype() {
                QType::Q8_0 => {
                    let rb = k / QK8_0 * Q8_0_BYTES;
                    quantize_row_q8_0(xr, &mut s.q80[o + r * rb..o + (r + 1) * rb]);
                }
                QType::Q4K | QType::Q6K => {
                    let kb = k / QK_K;
                    quantize_row_q8_k(xr, &mut s.q8k[o + r * kb..o + (r + 1) * kb]);
                }
            }
        }
    }
    let (q80, q8k) = (&s.q80[..], &s.q8k[..]);
    let tasks: usize = jobs.iter().map(|j| j.w.dims().0.div_ceil(ROWS_PER_TASK)).sum();
    (0..tasks).into_par_iter().for_each(|mut t| {
        let mut i = 0;
        while t >= jobs[i].w.dims().0.div_ceil(ROWS_PER_TASK) {
            t -= jobs[i].w.dims().0.div_ceil(ROWS_PER_TASK);
            i += 1;
        }
        let j = &jobs[i];
        let (n, k) = j.w.dims();
        let (wb, wrb, o) = (j.w.bytes(), j.w.row_bytes(), offs[i]);
        let rows = t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(n);
        let w = &wb[rows.start * wrb..rows.end * wrb];
        for r in 0..j.m {
            // SAFETY: r < m and `rows` ⊂ 0..n: a contiguous run of this job's out [m, n], which it
            // holds exclusively; each (job, row) belongs to one task, so no other task touches it.
            let out = unsafe { std::slice::from_raw_parts_mut(j.out.0.add(r * n + rows.start), rows.len()) };
            let kb = k / QK_K;
            match j.w.qtype() {
                QType::Q8_0 => dot_q8_0_rows(path, w, &q80[o + r * wrb..o + (r + 1) * wrb], out),
                QType::Q4K => dot_q4_k_rows(path, w, &q8k[o + r * kb..o + (r + 1) * kb], out),
                QType::Q6K => dot_q6_k_rows(path, w, &q8k[o + r * kb..o + (r + 1) * kb], out),
            }
        }
    });
}
