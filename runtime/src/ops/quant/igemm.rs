//! Quantised prefill as an integer GEMM: `out[t, n] = Σ_k x[t, k] · W[n, k]` with `W` in
//! Q8_0 / Q4_K / Q6_K and the activation rows quantised as llama.cpp's `vec_dot_type` (Q8_0 for
//! Q8_0 weights, Q8_K for the K-quants, ggml's reference quantizers), multiplied 4 bytes at a
//! time by AVX-512 VNNI `vpdpbusd` (u8 · i8 → i32) in a register tile (issue #13, item 2).
//!
//! Why a GEMM and not the block dots of [`super::qmatmul_xwt`]: those stream every weight block
//! once per activation row (GEMV speed), and the dequantised-panel path ([`super::qmatmul_dequant`])
//! multiplies f32 at a quarter of `vpdpbusd`'s rate after writing 4 bytes per weight. Here each
//! call does two cheap passes and one integer product:
//!
//! 1. **Activations** ([`ActPanel`]): each row is quantised per block, then stored as `q + 128`
//!    (u8, the operand `vpdpbusd` wants unsigned) in groups of [`COLS`] rows interleaved by
//!    4-byte quads (`[groups, k/4, 16, 4]`), so one 64-byte load feeds 16 rows. Per sub-block and
//!    row it keeps the scale `xs` (the block's `d`) and `xm = xs · Σ q` (the min term's factor).
//! 2. **Weights** ([`WeightPanel`], per rayon task, [`PANEL_ROWS`] rows): each row unpacked to
//!    signed quants `wq` (i8, row-major) with one f32 scale `ws` and min `wm` per sub-block of
//!    `S` elements (`S` = 32 for Q8_0 and Q4_K, 16 for Q6_K) so that `deq(W) = ws · wq − wm`:
//!    Q8_0 `ws = d`; Q4_K `ws = d·sc_j`, `wm = dmin·m_j`; Q6_K `ws = d·sc_g`, `wq = q − 32`.
//!    `d·sc` is exact in f32 (an f16 times a ≤ 8-bit integer). `nsum = −128 · Σ wq` undoes the
//!    `+128` of the activations in the integers.
//! 3. **Kernel**: per sub-block, `isum = nsum + Σ wq · (q + 128)` (exact i32, no saturation:
//!    `vpdpbusd` adds 4 products into 32 bits), then in f32: Q8_0 `acc = fma(isum, ws · xs, acc)`;
//!    the K-quants, whose Q8_K activations have one scale per 256, `part = fma(isum, ws, part)`
//!    and for Q4_K `part = part − wm · Σq`, then per super-block `acc = fma(part, xs, acc)`:
//!    ggml's `d_y · (d_w · Σ sc·isum − dmin · Σ m·bsum)` with the products regrouped per
//!    sub-block (one multiply per sub-block fewer than scaling each by `ws · xs`).
//!
//! Twins: [`tile_scalar`] runs the same panels with the same f32 operations in the same order
//! (`mul_add` for every fused multiply-add), so the VNNI kernel equals it **bit for bit**; both
//! differ from the block dots ([`super::qmatmul_xwt`], same quantised activations, same
//! integers) only by the order of the f32 sums, and from [`super::qmatmul_xwt_slow`] (f32
//! activations) by the activation rounding. CPUs without AVX-512 VNNI keep the dequantised path.

use std::cell::RefCell;

use rayon::prelude::*;

use super::blocks::{
    f16_at, q6_level, quantize_row_q8_0, quantize_row_q8_k, scale_min_k4, BlockQ8K, Q4_K_BYTES, Q6_D, Q6_K_BYTES, Q6_SC,
    Q8_0_BYTES, QK8_0, QK_K,
};
use super::dot::Path;
use crate::ops::gemm::prefetch_l2;
use super::{QType, QWeight};
use crate::{Error, Result};

/// Activation rows (GEMM columns) per SIMD vector: one `__m512i` holds 4 bytes of 16 rows.
pub const COLS: usize = 16;
/// Weight rows per register tile.
pub const TILE_ROWS: usize = 4;
/// Weight rows unpacked per rayon task: `PANEL_ROWS · in` bytes of quants (160 KB at `in` =
/// 2560) stay in L2 while every activation row meets them.
pub const PANEL_ROWS: usize = 64;

/// Which kernel runs the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IKernel {
    /// Plain Rust: the twin, on every CPU.
    Scalar,
    /// AVX-512 F/BW + VNNI `vpdpbusd`.
    Avx512Vnni,
}

impl IKernel {
    /// The VNNI kernel where this CPU has it ([`Path::detect`]), else `None`: callers then take
    /// the dequantised path, which outruns the scalar twin by far.
    pub fn detect() -> Option<IKernel> {
        (Path::detect() == Path::Avx512Vnni).then_some(IKernel::Avx512Vnni)
    }
}

/// Elements per sub-block that carries its own weight scale.
pub fn sub_elems(q: QType) -> usize {
    match q {
        QType::Q8_0 | QType::Q4K => 32,
        QType::Q6K => 16,
    }
}

// ------------------------------------------------------------------------------ activations

/// The activation rows of one call, quantised and interleaved for the kernel (module doc, 1).
pub struct ActPanel {
    /// Groups of [`COLS`] rows (the last zero-padded: `q = 0`, `xs = xm = 0`, contributing 0).
    pub groups: usize,
    k: usize,
    sub: usize,
    /// Sub-blocks sharing one activation scale: 1 for Q8_0, 8 or 16 for the K-quants (Q8_K's
    /// one `d` per 256), whose kernels then apply `xs` once per super-block.
    per_sb: usize,
    /// `[groups, k/4, COLS, 4]` u8: `q + 128`.
    xu: Vec<u8>,
    /// `[groups, k/S, COLS]` f32: the block scale `d` of each sub-block.
    xs: Vec<f32>,
    /// `[groups, k/S, COLS]` f32: the sub-block's `Σ q` times `xs` for Q8_0, plain `Σ q` for the
    /// K-quants (their `xs` is applied per super-block).
    xm: Vec<f32>,
}

impl ActPanel {
    /// Quantises `x` (`[t, k]` f32, `k` a multiple of the weight's block) as `qtype`'s
    /// `vec_dot_type` (module doc): with [`IKernel::Avx512Vnni`] by the SIMD quantisers, else by
    /// ggml's reference ones (their twins: identical quants and scales). Parallel over groups.
    pub fn quantize(x: &[f32], t: usize, k: usize, qtype: QType, kern: IKernel) -> ActPanel {
        let sub = sub_elems(qtype);
        let (groups, nb) = (t.div_ceil(COLS), k / sub);
        let per_sb = if qtype == QType::Q8_0 { 1 } else { QK_K / sub };
        let mut p = ActPanel {
            groups,
            k,
            sub,
            per_sb,
            xu: vec![128u8; groups * k * COLS],
            xs: vec![0.0; groups * nb * COLS],
            xm: vec![0.0; groups * nb * COLS],
        };
        let g_xu = k * COLS;
        let g_x = nb * COLS;
        p.xu.par_chunks_mut(g_xu)
            .zip(p.xs.par_chunks_mut(g_x))
            .zip(p.xm.par_chunks_mut(g_x))
            .enumerate()
            .for_each_init(
                || (vec![0i8; k], vec![0.0f32; nb], vec![0i32; nb], vec![0u8; k / QK8_0 * Q8_0_BYTES], vec![BlockQ8K::default(); k / QK_K]),
                |(q, d, s, q80, q8k), (g, ((xu, xs), xm))| {
                    for c in 0..COLS.min(t - g * COLS) {
                        let row = &x[(g * COLS + c) * k..(g * COLS + c + 1) * k];
                        quantize_act_row(qtype, kern, row, q, d, s, q80, q8k);
                        for (qi, quad) in q.chunks_exact(4).enumerate() {
                            // q + 128 per byte is q ^ 0x80 as u8: one 4-byte store per quad.
                            let v = u32::from_le_bytes([quad[0] as u8, quad[1] as u8, quad[2] as u8, quad[3] as u8]) ^ 0x8080_8080;
                            let o = (qi * COLS + c) * 4;
                            xu[o..o + 4].copy_from_slice(&v.to_le_bytes());
                        }
                        for b in 0..nb {
                            xs[b * COLS + c] = d[b];
                            xm[b * COLS + c] = if per_sb == 1 { d[b] * s[b] as f32 } else { s[b] as f32 };
                        }
                    }
                },
            );
        p
    }

    /// Row `c`'s sub-block `b` as `(q, d, Σ q)`: the twin's view of the packed layout.
    fn get(&self, c: usize, b: usize) -> (impl Iterator<Item = i32> + '_, f32, f32) {
        let (g, cl) = (c / COLS, c % COLS);
        let base = g * self.k * COLS;
        let q = (b * self.sub..(b + 1) * self.sub).map(move |i| self.xu[base + ((i / 4) * COLS + cl) * 4 + i % 4] as i32 - 128);
        let at = (g * (self.k / self.sub) + b) * COLS + cl;
        (q, self.xs[at], self.xm[at])
    }
}

/// One activation row as signed quants `q` (`[k]`), a scale `d` and a quant sum `s` per
/// sub-block (`[k/S]` each), through ggml's Q8_0 or Q8_K quantizer (the buffers are reused), or
/// their SIMD twins with [`IKernel::Avx512Vnni`].
#[allow(clippy::too_many_arguments)]
fn quantize_act_row(
    qtype: QType,
    kern: IKernel,
    row: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    s: &mut [i32],
    q80: &mut [u8],
    q8k: &mut [BlockQ8K],
) {
    #[cfg(target_arch = "x86_64")]
    if kern == IKernel::Avx512Vnni {
        // SAFETY: IKernel::Avx512Vnni implies avx512f/bw and f16c (Path::detect); `row` is `k`
        // long, a multiple of the block, and q, d, s are sized `k` and `k/S`.
        unsafe {
            match qtype {
                QType::Q8_0 => super::igemm_x86::quantize_q8_0(row, q, d, s),
                QType::Q4K | QType::Q6K => super::igemm_x86::quantize_q8_k(row, QK_K / sub_elems(qtype), q, d, s),
            }
        }
        return;
    }
    let _ = kern;
    match qtype {
        QType::Q8_0 => {
            quantize_row_q8_0(row, q80);
            for (b, blk) in q80.chunks_exact(Q8_0_BYTES).enumerate() {
                d[b] = f16_at(blk, 0);
                let qs = &mut q[b * QK8_0..(b + 1) * QK8_0];
                for (o, &v) in qs.iter_mut().zip(&blk[2..]) {
                    *o = v as i8;
                }
                s[b] = qs.iter().map(|&v| v as i32).sum();
            }
        }
        QType::Q4K | QType::Q6K => {
            quantize_row_q8_k(row, q8k);
            let per = QK_K / sub_elems(qtype); // sub-blocks per super-block: 8 or 16
            let bsums_per = 16 / per; // ggml's 16-element bsums per sub-block: 2 or 1
            for (sb, blk) in q8k.iter().enumerate() {
                q[sb * QK_K..(sb + 1) * QK_K].copy_from_slice(&blk.qs);
                for j in 0..per {
                    d[sb * per + j] = blk.d;
                    s[sb * per + j] = blk.bsums[j * bsums_per..(j + 1) * bsums_per].iter().map(|&v| v as i32).sum();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------- weights

/// Up to [`PANEL_ROWS`] weight rows unpacked for the kernel (module doc, 2); reused per task.
#[derive(Default)]
pub struct WeightPanel {
    /// Rows held, padded to a multiple of [`TILE_ROWS`] with zero rows.
    pub rows: usize,
    k: usize,
    sub: usize,
    /// `[rows, k]` signed quants.
    wq: Vec<i8>,
    /// `[rows, k/S]` sub-block scales.
    ws: Vec<f32>,
    /// `[rows, k/S]` sub-block mins (Q4_K; zero otherwise).
    wm: Vec<f32>,
    /// `[rows, k/S]` `−128 · Σ wq`.
    nsum: Vec<i32>,
    /// Whether `wm` is used (Q4_K): the kernels skip the min term otherwise.
    min: bool,
}

impl WeightPanel {
    /// Unpacks `rows` (whole rows of `qtype`, `k` elements each) into this panel: with
    /// [`IKernel::Avx512Vnni`] through the SIMD unpackers, else the scalar ones (the twins; the
    /// two write identical panels).
    pub fn unpack(&mut self, qtype: QType, rows: &[u8], k: usize, kern: IKernel) {
        let sub = sub_elems(qtype);
        let nb = k / sub;
        let rb = qtype.row_bytes(k).unwrap_or(1).max(1);
        let n = rows.len() / rb;
        let padded = n.div_ceil(TILE_ROWS) * TILE_ROWS;
        (self.rows, self.k, self.sub, self.min) = (padded, k, sub, qtype == QType::Q4K);
        self.wq.resize(padded * k, 0);
        self.ws.resize(padded * nb, 0.0);
        self.wm.resize(padded * nb, 0.0);
        self.nsum.resize(padded * nb, 0);
        for r in 0..padded {
            let (wq, ws) = (&mut self.wq[r * k..(r + 1) * k], &mut self.ws[r * nb..(r + 1) * nb]);
            let (wm, nsum) = (&mut self.wm[r * nb..(r + 1) * nb], &mut self.nsum[r * nb..(r + 1) * nb]);
            if r >= n {
                wq.fill(0);
                ws.fill(0.0);
                wm.fill(0.0);
                nsum.fill(0);
                continue;
            }
            let src = &rows[r * rb..(r + 1) * rb];
            #[cfg(target_arch = "x86_64")]
            if kern == IKernel::Avx512Vnni {
                use super::igemm_x86 as x;
                // SAFETY: IKernel::Avx512Vnni implies avx2 + f16c (Path::detect); `src` is one
                // whole row and the outputs hold its k elements / k/S sub-blocks.
                unsafe {
                    match qtype {
                        QType::Q8_0 => x::unpack_q8_0(src, wq, ws, wm, nsum),
                        QType::Q4K => x::unpack_q4_k(src, wq, ws, wm, nsum),
                        QType::Q6K => x::unpack_q6_k(src, wq, ws, wm, nsum),
                    }
                }
                continue;
            }
            let _ = kern;
            match qtype {
                QType::Q8_0 => unpack_q8_0(src, wq, ws, wm),
                QType::Q4K => unpack_q4_k(src, wq, ws, wm),
                QType::Q6K => unpack_q6_k(src, wq, ws, wm),
            }
            for (o, blk) in nsum.iter_mut().zip(wq.chunks_exact(sub)) {
                *o = -128 * blk.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
    }
}

fn unpack_q8_0(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32]) {
    for (b, blk) in src.chunks_exact(Q8_0_BYTES).enumerate() {
        ws[b] = f16_at(blk, 0);
        wm[b] = 0.0;
        for (o, &v) in wq[b * QK8_0..(b + 1) * QK8_0].iter_mut().zip(&blk[2..]) {
            *o = v as i8;
        }
    }
}

fn unpack_q4_k(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32]) {
    for (sb, blk) in src.chunks_exact(Q4_K_BYTES).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &blk[4..16]);
            ws[sb * 8 + j] = d * sc as f32;
            wm[sb * 8 + j] = dmin * m as f32;
        }
        let out = &mut wq[sb * QK_K..(sb + 1) * QK_K];
        for c in 0..4 {
            let q = &blk[16 + 32 * c..16 + 32 * c + 32];
            let (lo, hi) = out[64 * c..64 * c + 64].split_at_mut(32);
            for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
                *l = (v & 0xF) as i8;
                *h = (v >> 4) as i8;
            }
        }
    }
}

fn unpack_q6_k(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32]) {
    for (sb, blk) in src.chunks_exact(Q6_K_BYTES).enumerate() {
        let d = f16_at(blk, Q6_D);
        for g in 0..16 {
            ws[sb * 16 + g] = d * blk[Q6_SC + g] as i8 as f32;
            wm[sb * 16 + g] = 0.0;
        }
        // ql: 2 halves of 128 elements; in each, bytes 0..32 hold quarters 0 (low) and 2 (high
        // nibble), bytes 32..64 quarters 1 and 3; qh byte l holds bits 4-5 of quarters 0..3.
        let out = &mut wq[sb * QK_K..(sb + 1) * QK_K];
        for h in 0..2 {
            let (ql, qh) = (&blk[64 * h..64 * h + 64], &blk[128 + 32 * h..128 + 32 * h + 32]);
            let o = &mut out[128 * h..128 * h + 128];
            for l in 0..32 {
                let hb = qh[l];
                o[l] = ((ql[l] & 0xF) | ((hb & 3) << 4)) as i8 - 32;
                o[32 + l] = ((ql[32 + l] & 0xF) | (((hb >> 2) & 3) << 4)) as i8 - 32;
                o[64 + l] = ((ql[l] >> 4) | (((hb >> 4) & 3) << 4)) as i8 - 32;
                o[96 + l] = ((ql[32 + l] >> 4) | (((hb >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        debug_assert!((0..QK_K).all(|i| out[i] as i32 == q6_level(blk, i) as i32 - 32));
    }
}

// ----------------------------------------------------------------------------------- kernel

/// Scalar twin of the VNNI tile: rows `r0..r0+TILE_ROWS` of `w` against activation rows
/// `c0..c0+cols` of `a`, written to `out[(c − c0) · ldo + r − r0]` for the first `rows` rows.
/// Per sub-block `isum` as in the module doc, then in f32, each multiply-add fused (`mul_add`):
/// Q8_0 (a scale per block) `acc = fma(isum, ws·xs, acc)`; the K-quants (one activation scale
/// per super-block, as ggml factors `d_y` out) `part = fma(isum, ws, part)`, for Q4_K also
/// `part = part − wm·Σq`, and per super-block `acc = fma(part, xs, acc)`.
///
/// # Safety
/// `r0 + rows ≤ w.rows`, `c0 + cols ≤ a.groups · COLS`, and `out` is valid for writes at
/// every `(c − c0) · ldo + r − r0` above (other tasks may own the elements in between).
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_scalar(w: &WeightPanel, r0: usize, rows: usize, a: &ActPanel, c0: usize, cols: usize, out: *mut f32, ldo: usize) {
    let (k, sub) = (w.k, w.sub);
    let nb = k / sub;
    let per = a.per_sb;
    for r in r0..r0 + rows {
        for c in c0..c0 + cols {
            let mut acc = 0.0f32;
            for sb in 0..nb / per {
                let mut part = 0.0f32;
                for b in sb * per..(sb + 1) * per {
                    let (q, xs, xm) = a.get(c, b);
                    let wq = &w.wq[r * k + b * sub..r * k + (b + 1) * sub];
                    let isum = w.nsum[r * nb + b] + wq.iter().zip(q).map(|(&wv, xq)| wv as i32 * (xq + 128)).sum::<i32>();
                    if per == 1 {
                        acc = (isum as f32).mul_add(w.ws[r * nb + b] * xs, acc);
                    } else {
                        part = (isum as f32).mul_add(w.ws[r * nb + b], part);
                        if w.min {
                            part = (-w.wm[r * nb + b]).mul_add(xm, part);
                        }
                    }
                }
                if per > 1 {
                    acc = part.mul_add(a.get(c, sb * per).1, acc);
                }
            }
            *out.add((c - c0) * ldo + r - r0) = acc;
        }
    }
}

thread_local! {
    /// Each thread's reusable [`WeightPanel`].
    static PANEL: RefCell<WeightPanel> = RefCell::new(WeightPanel::default());
}

/// A raw output pointer shared by the rayon tasks, each of which writes a disjoint set of
/// columns (weight rows) of `out`.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (see `qmatmul_int8_on`); the pointer outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Rows `t` of `x` `[t, k]` with `out` `[t, n]` for the quantised GEMMs (`op` names the caller).
/// Errors: [`Error::ShapeMismatch`] unless `k > 0`, `x` is whole rows and `out` matches.
pub(super) fn dims(op: &'static str, x_len: usize, out_len: usize, n: usize, k: usize) -> Result<usize> {
    let t = if k > 0 { x_len / k } else { 0 };
    if k == 0 || x_len % k != 0 || Some(out_len) != t.checked_mul(n) {
        return Err(Error::ShapeMismatch {
            op,
            expected: format!("x [t, {k}] and out [t, {n}]"),
            got: format!("x len {x_len}, out len {out_len}"),
        });
    }
    Ok(t)
}

/// `out[t, n] = x[t, k] · W[n, k]ᵀ` for prefill-sized `t` (more rows than decode's GEMV): the
/// integer GEMM on this CPU's VNNI kernel (faster than the block dots from 5 rows on: 1.4 ms
/// against 2.0 ms for 8 rows of a Q4_K expert, `benches/quant.rs`); without VNNI the
/// dequantised f32 panels ([`super::qmatmul_dequant`]) from [`super::DEQUANT_MIN_ROWS`] rows,
/// the block dots ([`super::qmatmul_xwt`]) below.
///
/// Errors: [`Error::ShapeMismatch`] when `x` is not `[t, k]` or `out` is not `[t, n]`.
pub fn qmatmul_int8(x: &[f32], w: &QWeight, out: &mut [f32]) -> Result<()> {
    match IKernel::detect() {
        Some(kern) => qmatmul_int8_on(kern, x, w, out),
        None if x.len() >= super::DEQUANT_MIN_ROWS * w.dims().1 => super::qmatmul_dequant(x, w, out),
        None => super::qmatmul_xwt(x, w, out),
    }
}

/// [`qmatmul_int8`] on a given kernel (tests run both; [`IKernel::Avx512Vnni`] on a CPU without
/// it runs the scalar twin instead).
pub fn qmatmul_int8_on(kern: IKernel, x: &[f32], w: &QWeight, out: &mut [f32]) -> Result<()> {
    let (n, k) = w.dims();
    let t = dims("qmatmul_int8", x.len(), out.len(), n, k)?;
    if t == 0 || n == 0 {
        return Ok(());
    }
    let kern = if kern == IKernel::Avx512Vnni && IKernel::detect().is_none() { IKernel::Scalar } else { kern };
    let qtype = w.qtype();
    let act = ActPanel::quantize(x, t, k, qtype, kern);
    let rb = w.row_bytes();
    let ptr = OutPtr(out.as_mut_ptr());
    let bytes = w.bytes();
    let work = |panel: &mut WeightPanel, pi: usize, rows: &[u8]| {
        panel.unpack(qtype, rows, k, kern);
        let r_base = pi * PANEL_ROWS;
        let valid = rows.len() / rb;
        // The next panel's bytes are prefetched into L2 across this panel's tiles: unpacking
        // reads the weights from memory once per call, and without this it waits on every line
        // (the unpack was 12 % of a q4_k_m prefill, stalled on its loads).
        let next = bytes.get((pi + 1) * PANEL_ROWS * rb..((pi + 2) * PANEL_ROWS * rb).min(bytes.len())).unwrap_or(&[]);
        let (lines, tiles) = (next.len().div_ceil(64), t.div_ceil(2 * COLS) * valid.div_ceil(TILE_ROWS));
        let per_tile = lines.div_ceil(tiles.max(1));
        let mut line = 0;
        for c0 in (0..t).step_by(2 * COLS) {
            let cols = (t - c0).min(2 * COLS);
            for r0 in (0..valid).step_by(TILE_ROWS) {
                for _ in 0..per_tile.min(lines - line) {
                    prefetch_l2(next[line * 64..].as_ptr());
                    line += 1;
                }
                let nr = TILE_ROWS.min(valid - r0);
                // This task alone writes columns r_base..r_base+valid of out's t rows; the tile
                // writes rows c0..c0+cols ≤ t, columns r_base+r0..+nr ≤ n.
                let o = ptr.get().wrapping_add(c0 * n + r_base + r0);
                match kern {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: IKernel::Avx512Vnni only runs where detect() found the features;
                    // bounds as above.
                    IKernel::Avx512Vnni => unsafe { super::igemm_x86::tile(panel, r0, nr, &act, c0, cols, o, n) },
                    // SAFETY: bounds as above.
                    _ => unsafe { tile_scalar(panel, r0, nr, &act, c0, cols, o, n) },
                }
            }
        }
    };
    w.bytes().par_chunks(PANEL_ROWS * rb).enumerate().for_each(|(pi, rows)| {
        // One panel buffer per thread, kept across calls (no allocation or page faults per
        // call). `work` does not re-enter rayon, so the borrow is free; were it not, a fresh
        // panel would do.
        PANEL.with(|cell| match cell.try_borrow_mut() {
            Ok(mut panel) => work(&mut panel, pi, rows),
            Err(_) => work(&mut WeightPanel::default(), pi, rows),
        })
    });
    Ok(())
}

/// Raw views for the x86 kernel: `(wq, ws, wm, nsum, k, sub)` of a panel and `(xu, xs, xm)` of
/// an activation panel.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Views<'a> {
    pub wq: &'a [i8],
    pub ws: &'a [f32],
    pub wm: &'a [f32],
    pub nsum: &'a [i32],
    pub xu: &'a [u8],
    pub xs: &'a [f32],
    pub xm: &'a [f32],
    pub k: usize,
    pub sub: usize,
    pub min: bool,
    pub per_sb: usize,
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn views<'a>(w: &'a WeightPanel, a: &'a ActPanel) -> Views<'a> {
    Views { wq: &w.wq, ws: &w.ws, wm: &w.wm, nsum: &w.nsum, xu: &a.xu, xs: &a.xs, xm: &a.xm, k: w.k, sub: w.sub, min: w.min, per_sb: a.per_sb }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::quant::{qmatmul_xwt_on, QScratch};

    use crate::test_util::uniform as rnd;

    const QTYPES: [QType; 3] = [QType::Q8_0, QType::Q4K, QType::Q6K];

    /// The unpacked panel is the format: `ws · wq − wm` equals ggml's dequantisation bit for bit
    /// (the same f32 operations), on ragged row counts (padding rows are zero).
    #[test]
    fn unpacked_panel_dequantises_as_ggml() {
        let (n, k) = (7, 512);
        let mut r = rnd(7);
        let w: Vec<f32> = (0..n * k).map(|_| r() * 3.0).collect();
        for qt in QTYPES {
            let q = QWeight::quantize_f32(&w, n, k, qt).unwrap();
            let deq = q.dequantize();
            let mut p = WeightPanel::default();
            p.unpack(qt, q.bytes(), k, IKernel::Scalar);
            assert_eq!(p.rows, 8, "{qt:?}");
            if IKernel::detect().is_some() {
                let mut v = WeightPanel::default();
                v.unpack(qt, q.bytes(), k, IKernel::Avx512Vnni);
                assert!(v.wq == p.wq && v.nsum == p.nsum && v.rows == p.rows, "{qt:?}: SIMD unpack differs");
                assert!(v.ws.iter().zip(&p.ws).chain(v.wm.iter().zip(&p.wm)).all(|(a, b)| a.to_bits() == b.to_bits()), "{qt:?}");
            }
            let (sub, nb) = (sub_elems(qt), k / sub_elems(qt));
            for row in 0..p.rows {
                for i in 0..k {
                    let b = row * nb + i / sub;
                    let v = p.ws[b] * p.wq[row * k + i] as f32 - p.wm[b];
                    let want = if row < n { deq[row * k + i] } else { 0.0 };
                    assert_eq!(v, want, "{qt:?} [{row}, {i}]");
                }
                for b in 0..nb {
                    let s: i32 = p.wq[row * k + b * sub..row * k + (b + 1) * sub].iter().map(|&v| v as i32).sum();
                    assert_eq!(p.nsum[row * nb + b], -128 * s);
                }
            }
        }
    }

    /// Every format, ragged `t` (1 row, less than a vector, one vector, vector + 1, several tiles)
    /// and `n` (a partial register tile, a partial panel): the VNNI kernel equals the scalar twin
    /// bit for bit, and the twin equals the block dots of `qmatmul_xwt` (same quantised
    /// activations, same integers) within the f32 rounding of two summation orders:
    /// `|Δ| ≤ 4·nb·ε·Σ|x_q·w|`.
    #[test]
    fn int8_gemm_matches_twin_and_block_dots() {
        let k = 512;
        for qt in QTYPES {
            for &(t, n) in &[(1, 5), (9, 4), (16, 67), (17, 130), (50, 7)] {
                let mut r = rnd(t as u64 * 1000 + n as u64);
                // A few large activations per row, as in real hidden states.
                let x: Vec<f32> = (0..t * k).map(|i| if i % 97 == 5 { r() * 40.0 } else { r() }).collect();
                let w: Vec<f32> = (0..n * k).map(|_| r()).collect();
                let q = QWeight::quantize_f32(&w, n, k, qt).unwrap();
                let mut scalar = vec![f32::NAN; t * n];
                qmatmul_int8_on(IKernel::Scalar, &x, &q, &mut scalar).unwrap();
                if IKernel::detect().is_some() {
                    let mut vnni = vec![f32::NAN; t * n];
                    qmatmul_int8_on(IKernel::Avx512Vnni, &x, &q, &mut vnni).unwrap();
                    for i in 0..t * n {
                        assert_eq!(vnni[i].to_bits(), scalar[i].to_bits(), "{qt:?} t {t} n {n} at {i}");
                    }
                }
                let mut dots = vec![0.0f32; t * n];
                qmatmul_xwt_on(Path::Scalar, &x, &q, &mut dots, &mut QScratch::default()).unwrap();
                // |x_q · w| per output, from the quantised activations the kernel used.
                let act = ActPanel::quantize(&x, t, k, qt, IKernel::Scalar);
                let deq = q.dequantize();
                let nb = k / sub_elems(qt);
                for c in 0..t {
                    let xq: Vec<f32> =
                        (0..nb).flat_map(|b| { let (q, d, _) = act.get(c, b); q.map(move |v| v as f32 * d) }).collect();
                    for j in 0..n {
                        let mag: f32 = (0..k).map(|i| (xq[i] * deq[j * k + i]).abs()).sum();
                        let d = (scalar[c * n + j] - dots[c * n + j]).abs();
                        let tol = 4.0 * nb as f32 * f32::EPSILON * mag + 1e-30;
                        assert!(d <= tol, "{qt:?} [{c}, {j}]: {} vs {} (tol {tol})", scalar[c * n + j], dots[c * n + j]);
                    }
                }
            }
        }
    }

    /// The SIMD activation quantisers write exactly ggml's reference quants, scales and sums,
    /// on rows with ties of |x| (±, first wins), an all-zero block, tiny and huge values and
    /// exact halves after scaling.
    #[test]
    fn simd_activation_quantisers_equal_the_reference() {
        if IKernel::detect().is_none() {
            return;
        }
        let (t, k) = (3, 768);
        let mut r = rnd(11);
        let mut x: Vec<f32> = (0..t * k).map(|_| r() * 8.0).collect();
        x[5] = 9.0;
        x[9] = -9.0; // a tie in block 0: the first (+9) sets the sign
        x[256..512].fill(0.0); // an all-zero block of row 0
        x[k + 3] = 1e-30;
        x[k + 300] = -3e4;
        // amax 127 → d = 1: the others scale to exact halves (−15.5 … 14.5), where Q8_0's roundf
        // (away from zero) and round-half-even differ.
        for (i, v) in x[2 * k..2 * k + 32].iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        x[2 * k + 31] = 127.0;
        for qt in QTYPES {
            let a = ActPanel::quantize(&x, t, k, qt, IKernel::Scalar);
            let b = ActPanel::quantize(&x, t, k, qt, IKernel::Avx512Vnni);
            assert!(a.xu == b.xu, "{qt:?}: quants differ");
            assert!(a.xs.iter().zip(&b.xs).chain(a.xm.iter().zip(&b.xm)).all(|(u, v)| u.to_bits() == v.to_bits()), "{qt:?}");
        }
    }

    #[test]
    fn shape_errors_are_typed() {
        let q = QWeight::quantize_f32(&vec![0.5; 4 * 64], 4, 64, QType::Q8_0).unwrap();
        let mut out = vec![0.0; 3];
        assert!(matches!(qmatmul_int8(&vec![0.0; 64], &q, &mut out), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(qmatmul_int8(&vec![0.0; 65], &q, &mut vec![0.0; 4]), Err(Error::ShapeMismatch { .. })));
    }
}
