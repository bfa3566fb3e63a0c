//! Packed GEMM and streaming GEMV for 16-bit weights: `y[m, n] = x[m, k] · W[n, k]ᵀ` (issue #13,
//! item 1). `x` and `y` are row-major f32; `W` is the PyTorch `Linear` layout `[n, k]` in bf16,
//! f16 or f32 and is never converted in memory.
//!
//! - [`gemm`] (prefill, busy experts): per call, `x` is packed once into `MR`-row micro-panels
//!   and every `[NC, KC]` weight block is packed (transposed, upcast to f32) into `NR`-column
//!   micro-panels by the rayon task that owns those `NC` columns; an `MR × NR` register-tile
//!   micro-kernel (the GotoBLAS / BLIS scheme) then runs over them. The packed tiles are
//!   zero-padded, so every shape takes the same kernel; only the final stores are masked. With
//!   AVX-512 the B blocks are packed by register transposes (`pack512.rs`, 16 rows × 16 depth
//!   steps per transpose; the scalar `pack.rs` is their twin): the MoE experts' GEMMs have ~48
//!   rows (pp512, 64 experts top-6), so each packed weight is used by only 4 register tiles and
//!   the scalar pack cost as much as the kernel (issue #13 profile: 41 % pack, 37 % kernel).
//!   The packed-A buffer is reused across calls on the calling thread.
//! - [`gemv`], [`gemv_pair`], [`gemv_experts`] (decode, m ≤ [`GEMV_MAX_ROWS`]): each weight row is
//!   streamed once for all rows of `x`, upcast in registers; see `gemv.rs`.
//!
//! Kernels ([`Kernel`]) are chosen at run time ([`Kernel::detect`]); every one can be forced, so
//! the AVX2 kernels are tested on AVX-512 machines too. The exact kernels (all but
//! [`Kernel::Avx512Bf16Dot`]) multiply the exact f32 values of the weights and activations and sum
//! in f32 with FMA, so they differ from the f64 twin [`gemm_slow`] only by f32 summation rounding:
//! `|Δ| ≤ γ_k · Σ_k |x·w|`, `γ_k ≈ k · 2⁻²⁴` (worst case; typically `√k · 2⁻²⁴`).
//! [`Kernel::Avx512Bf16Dot`] (`vdpbf16ps`) first rounds `x` to bf16 (8-bit significand: relative error
//! ≤ 2⁻⁸ per element, round-to-nearest-even; subnormals flushed), so
//! `|Δ| ≤ (2⁻⁸ + γ_k) · Σ_k |x·w|`; this breaks the 1e-4 parity tolerances of the model tests, so it
//! is opt-in ([`Precision::Bf16Activations`]).

mod avx2;
mod avx512;
mod gemv;
mod pack;
mod pack512;
mod portable;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use crate::{Error, Result};

pub use gemv::{gemv, gemv_batch, gemv_experts, gemv_pair, gemv_slow, ExpertJob, GemvJob, GEMV_MAX_ROWS};

/// A borrowed `[n, k]` weight matrix in one of the three storage types (raw bits for 16-bit ones).
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bf16 bit patterns (`half::bf16::to_bits`).
    Bf16(&'a [u16]),
    /// IEEE half bit patterns (`half::f16::to_bits`).
    F16(&'a [u16]),
}

impl<'a> WeightRef<'a> {
    /// Borrows a [`Tensor`](crate::Tensor)'s elements (any dtype).
    pub fn of(t: &'a crate::Tensor) -> WeightRef<'a> {
        match t.elems() {
            crate::tensor::Elems::F32(s) => WeightRef::F32(s),
            crate::tensor::Elems::Bf16(s) => WeightRef::Bf16(bytemuck::cast_slice(s)),
            crate::tensor::Elems::F16(s) => WeightRef::F16(bytemuck::cast_slice(s)),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            WeightRef::F32(s) => s.len(),
            WeightRef::Bf16(s) | WeightRef::F16(s) => s.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f32 (slow path: twins and tails).
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> f32 {
        match self {
            WeightRef::F32(s) => s[i],
            WeightRef::Bf16(s) => bf16_to_f32(s[i]),
            WeightRef::F16(s) => half::f16::from_bits(s[i]).to_f32(),
        }
    }
}

/// Which micro-kernel family runs. All are selectable on any CPU that has their features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, auto-vectorised for the build target (SSE2 on x86-64). Always available.
    Portable,
    /// AVX2 + FMA (+ F16C for f16 weights): 6 × 16 f32 register tile.
    Avx2,
    /// AVX-512F: 12 × 32 f32 register tile.
    Avx512,
    /// AVX-512 BF16 `vdpbf16ps`: activations rounded to bf16, 12 × 32 tile over k pairs. bf16
    /// weights only (f16/f32 weights run [`Kernel::Avx512`] instead): not exact, see the module doc.
    Avx512Bf16Dot,
}

/// Whether the activations may be rounded to bf16 (the `vdpbf16ps` kernel).
///
/// Not faster everywhere: on the Xeon of issue #13 (AVX-512 BF16, no usable AMX) one `vdpbf16ps`
/// zmm retires at a quarter of the `vfmadd` rate (measured 0.7 vs 2.9 G instructions/s, 24
/// independent chains), so its two k-steps per instruction make the tile half as fast as the exact
/// f32 kernel, and `ernie bench -p 512 --bf16-activations` was slower (medians 38–44 vs 52–64
/// tok/s, same run, loaded machine). It pays only on CPUs where `vdpbf16ps` issues at the FMA
/// rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 activations, f32 accumulation: the default.
    #[default]
    Exact,
    /// Round `x` to bf16 before the product where the CPU has `avx512_bf16`.
    Bf16Activations,
}

impl Kernel {
    /// The fastest kernel of the requested precision this CPU runs (cached feature detection).
    pub fn detect(precision: Precision) -> Kernel {
        if precision == Precision::Bf16Activations && Kernel::Avx512Bf16Dot.is_available() {
            return Kernel::Avx512Bf16Dot;
        }
        if Kernel::Avx512.is_available() {
            Kernel::Avx512
        } else if Kernel::Avx2.is_available() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    /// True when this CPU has the features the kernel needs.
    pub fn is_available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Portable => true,
                Kernel::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                Kernel::Avx512 => has!("avx512f"),
                Kernel::Avx512Bf16Dot => has!("avx512f") && has!("avx512bf16"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` for bf16 weights (bits as `half::bf16`), exact f32 kernel.
///
/// `x`: `[m, k]` f32, `w`: `[n, k]` bf16, `out`: `[m, n]` f32 (overwritten).
/// Errors: [`Error::ShapeMismatch`] when a slice length disagrees with `m, n, k`.
pub fn gemm_bf16(x: &[f32], w: &[half::bf16], m: usize, n: usize, k: usize, out: &mut [f32]) -> Result<()> {
    gemm(x, WeightRef::Bf16(bytemuck::cast_slice(w)), m, n, k, out, Kernel::detect(Precision::Exact))
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` for f16 weights, exact f32 kernel. Shapes as [`gemm_bf16`].
pub fn gemm_f16(x: &[f32], w: &[half::f16], m: usize, n: usize, k: usize, out: &mut [f32]) -> Result<()> {
    gemm(x, WeightRef::F16(bytemuck::cast_slice(w)), m, n, k, out, Kernel::detect(Precision::Exact))
}

/// `y = x · Wᵀ` with `w` a [`Tensor`](crate::Tensor) `[n, k]` of any dtype: the drop-in for
/// [`matmul_xwt`](crate::ops::matmul_xwt). Rows of `x` ≤ [`GEMV_MAX_ROWS`] take [`gemv`], the
/// others [`gemm`], with the exact kernel of this CPU.
///
/// Errors: a non-2-D `w`, or slice lengths that disagree with it ([`Error::ShapeMismatch`]).
pub fn matmul(x: &[f32], w: &crate::Tensor, out: &mut [f32]) -> Result<()> {
    matmul_with(x, w, out, Precision::Exact)
}

/// [`matmul`] at `precision`: with [`Precision::Bf16Activations`] the GEMM (more than
/// [`GEMV_MAX_ROWS`] rows, bf16 weights) runs [`Kernel::detect`]'s `vdpbf16ps` kernel where the CPU
/// has it (error bound in the module doc); the GEMV (decode) stays exact, as do f16 / f32 weights.
/// Shapes and errors as [`matmul`].
pub fn matmul_with(x: &[f32], w: &crate::Tensor, out: &mut [f32], precision: Precision) -> Result<()> {
    let (n, k) = w.dims2()?;
    let m = if k == 0 { out.len() / n.max(1) } else { x.len() / k };
    if m <= GEMV_MAX_ROWS {
        gemv(x, WeightRef::of(w), m, n, k, out, Kernel::detect(Precision::Exact))
    } else {
        gemm(x, WeightRef::of(w), m, n, k, out, Kernel::detect(precision))
    }
}

pub(crate) fn check_shapes(op: &'static str, x: usize, w: usize, out: usize, m: usize, n: usize, k: usize) -> Result<()> {
    let ok = m.checked_mul(k) == Some(x) && n.checked_mul(k) == Some(w) && m.checked_mul(n) == Some(out);
    if ok {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        op,
        expected: format!("x [{m}, {k}] = {}, w [{n}, {k}] = {}, out [{m}, {n}] = {}", m * k, n * k, m * n),
        got: format!("x len {x}, w len {w}, out len {out}"),
    })
}

/// Software prefetch distance of the GEMV weight streams, bytes ahead in each row (1 KiB measured
/// best of 0 / 512 / 1024 / 2048 on the Xeon of issue #13).
pub(crate) const GEMV_PREFETCH_BYTES: usize = 1024;

/// Columns of `y` (weight rows) per rayon task of the GEMM: `NC × KC` packed f32 = 128 KiB (L2).
const NC: usize = 128;
/// Depth of one packed block (f32 kernels; the bf16-pair kernel packs `KC` pairs).
const KC: usize = 256;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` with the given kernel (falling back to [`Kernel::Portable`] when
/// the CPU lacks its features, and from [`Kernel::Avx512Bf16Dot`] to [`Kernel::Avx512`] for
/// non-bf16 weights). `x`: `[m, k]`, `out`: `[m, n]` (overwritten).
///
/// Errors: [`Error::ShapeMismatch`] when a slice length disagrees with `m, n, k`.
pub fn gemm(x: &[f32], w: WeightRef<'_>, m: usize, n: usize, k: usize, out: &mut [f32], kernel: Kernel) -> Result<()> {
    check_shapes("gemm", x.len(), w.len(), out.len(), m, n, k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let kernel = if kernel.is_available() { kernel } else { Kernel::Portable };
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx512Bf16Dot => match w {
            WeightRef::Bf16(wb) => {
                let k2 = k.div_ceil(2);
                let geo = Geo { mr: avx512::MR, nr: avx512::NR, depth: k2, kc: KC };
                // SAFETY: avx512f + avx512bf16 were detected; dst is k2 × MR words.
                let pa = |rows: std::ops::Range<usize>, dst: &mut [u32]| unsafe { pack512::pack_a_bf16_pairs_avx512(x, k, rows, avx512::MR, dst) };
                // SAFETY: avx512f was detected; NC is a multiple of NR = 32; dst is NC × kc words.
                let pb = |n0: usize, kb: usize, kc: usize, dst: &mut [u32]| unsafe { pack512::pack_b_bf16_pairs_nr32(wb, n, k, n0, NC, kb, kc, dst) };
                // SAFETY: avx512f + avx512bf16 were detected (`is_available`).
                let kern = |kc, a, b, c, ldc, mr, nr, acc| unsafe { avx512::kernel_dpbf16(kc, a, b, c, ldc, mr, nr, acc) };
                drive(m, n, geo, out, pa, pb, |_, _, _, _, _| {}, kern);
                return Ok(());
            }
            _ => return gemm(x, w, m, n, k, out, Kernel::Avx512),
        },
        Kernel::Avx512 => {
            // SAFETY: avx512f was detected.
            let kern = |kc, a, b, c, ldc, mr, nr, acc| unsafe { avx512::kernel_f32(kc, a, b, c, ldc, mr, nr, acc) };
            drive_f32(x, w, m, n, k, out, avx512::MR, avx512::NR, true, kern);
            return Ok(());
        }
        Kernel::Avx2 => {
            // SAFETY: avx2 + fma were detected.
            let kern = |kc, a, b, c, ldc, mr, nr, acc| unsafe { avx2::kernel_f32(kc, a, b, c, ldc, mr, nr, acc) };
            drive_f32(x, w, m, n, k, out, avx2::MR, avx2::NR, false, kern);
            return Ok(());
        }
        Kernel::Portable => {}
    }
    let kern = |kc, a, b, c, ldc, mr, nr, acc| unsafe { portable::kernel_f32(kc, a, b, c, ldc, mr, nr, acc) };
    drive_f32(x, w, m, n, k, out, portable::MR, portable::NR, false, kern);
    Ok(())
}

/// Slow twin of [`gemm`]: the triple loop in f64. Same shapes and errors.
pub fn gemm_slow(x: &[f32], w: WeightRef<'_>, m: usize, n: usize, k: usize, out: &mut [f32]) -> Result<()> {
    check_shapes("gemm_slow", x.len(), w.len(), out.len(), m, n, k)?;
    for r in 0..m {
        for c in 0..n {
            let mut acc = 0.0f64;
            for i in 0..k {
                acc += x[r * k + i] as f64 * w.get(c * k + i) as f64;
            }
            out[r * n + c] = acc as f32;
        }
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// A raw output pointer shared by rayon tasks that write disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
// SAFETY: every user writes disjoint index sets from different tasks (documented at each use).
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

/// Blocking geometry: register tile `mr × nr`, packed depth `depth` (k, or k pairs), block `kc`.
#[derive(Clone, Copy)]
struct Geo {
    mr: usize,
    nr: usize,
    depth: usize,
    kc: usize,
}

#[allow(clippy::too_many_arguments)]
fn drive_f32(
    x: &[f32],
    w: WeightRef<'_>,
    m: usize,
    n: usize,
    k: usize,
    out: &mut [f32],
    mr: usize,
    nr: usize,
    avx512_pack: bool,
    kern: impl Fn(usize, *const f32, *const f32, *mut f32, usize, usize, usize, bool) + Sync,
) {
    let geo = Geo { mr, nr, depth: k, kc: KC };
    let pa = |rows: std::ops::Range<usize>, dst: &mut [f32]| pack::pack_a_f32(x, k, rows, mr, dst);
    let pb = |n0: usize, kb: usize, kc: usize, dst: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx512_pack && nr == 32 {
            // SAFETY: the caller passes avx512_pack only for the AVX-512 kernel (avx512f
            // detected); NC is a multiple of 32; dst is NC × kc floats.
            unsafe { pack512::pack_b_f32_nr32(w, n, k, n0, NC, kb, kc, dst) };
            return;
        }
        pack::pack_b_f32(w, n, k, n0, NC, kb, kc, nr, dst)
    };
    // Part `part` of `parts` of the weight block rows n0..n0+NC × columns kb..kb+kc, into L2.
    let (base, esz) = match w {
        WeightRef::F32(s) => (s.as_ptr() as usize, 4),
        WeightRef::Bf16(s) | WeightRef::F16(s) => (s.as_ptr() as usize, 2),
    };
    let prefetch_b = |n0: usize, kb: usize, kc: usize, part: usize, parts: usize| {
        let per_row = (kc * esz).div_ceil(64);
        let total = NC.min(n - n0) * per_row;
        for l in total * part / parts..total * (part + 1) / parts {
            let (r, j) = (l / per_row, l % per_row);
            prefetch_l2((base + ((n0 + r) * k + kb) * esz + j * 64) as *const u8);
        }
    };
    drive(m, n, geo, out, pa, pb, prefetch_b, kern);
}

/// Largest packed-A buffer (in 32-bit words, 16 MiB) kept for the next call; larger ones are freed.
const A_KEEP_WORDS: usize = 4 << 20;

thread_local! {
    /// The calling thread's packed-A buffer, reused across calls (taken out while in use, so a
    /// nested call on the same thread, e.g. from inside a rayon task, just allocates its own).
    static A_SCRATCH: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    /// Per-thread B-panel scratch (`NC × KC` elements), reused across calls: no allocation after
    /// the first call on a thread.
    static B_SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hints that the cache line at `p` will be read soon (into L2); a no-op off x86-64. Never
/// faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The blocked loop. `T` is the packed element (f32, or u32 = a bf16 pair); `pack_a(rows, dst)`
/// writes `[depth][mr]` for the rows (zero past `m`), `pack_b(n0, kb, kc, dst)` writes
/// `[NC / nr][kc][nr]` for weight rows `n0..n0+NC` (zero past `n`); `prefetch_b(n0, kb, kc,
/// part, parts)` hints part of the next weight block, spread over the current block's
/// register tiles so the pack of the next block finds its weights in L2 (the pack read them from
/// memory, 20 % of a bf16 prefill profile).
fn drive<T: bytemuck::Pod + Send + Sync + Default>(
    m: usize,
    n: usize,
    geo: Geo,
    out: &mut [f32],
    pack_a: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync,
    pack_b: impl Fn(usize, usize, usize, &mut [T]) + Sync,
    prefetch_b: impl Fn(usize, usize, usize, usize, usize) + Sync,
    kern: impl Fn(usize, *const T, *const T, *mut f32, usize, usize, usize, bool) + Sync,
) {
    let Geo { mr, nr, depth, kc: kc_max } = geo;
    let m_blocks = m.div_ceil(mr);
    let panel = depth * mr;
    // x packed once: [m_blocks][depth][mr], into the reused buffer (pack_a writes every element,
    // padding included, so it is not cleared).
    let mut store = A_SCRATCH.with(|s| s.take());
    let words = m_blocks * panel * std::mem::size_of::<T>() / 4;
    if store.len() < words {
        store.resize(words, 0);
    }
    let a: &mut [T] = bytemuck::cast_slice_mut(&mut store[..words]);
    a.par_chunks_mut(panel).enumerate().for_each(|(b, dst)| pack_a(b * mr..((b + 1) * mr).min(m), dst));
    let c = SyncPtr(out.as_mut_ptr());
    let a = &*a;
    (0..n.div_ceil(NC)).into_par_iter().for_each(|nb| {
        let c = c;
        B_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let words = NC * kc_max * std::mem::size_of::<T>() / 4;
            if s.len() < words {
                s.resize(words, 0);
            }
            let bp: &mut [T] = bytemuck::cast_slice_mut(&mut s[..words]);
            let n0 = nb * NC;
            let ncols = NC.min(n - n0);
            for kb in (0..depth).step_by(kc_max) {
                let kc = kc_max.min(depth - kb);
                pack_b(n0, kb, kc, bp);
                let next = (kb + kc < depth).then(|| (kb + kc, kc_max.min(depth - kb - kc)));
                let (parts, mut part) = (m_blocks * ncols.div_ceil(nr), 0);
                for mb in 0..m_blocks {
                    let rows = mr.min(m - mb * mr);
                    let ap = a[mb * panel + kb * mr..].as_ptr();
                    for p in 0..ncols.div_ceil(nr) {
                        if let Some((nkb, nkc)) = next {
                            prefetch_b(n0, nkb, nkc, part, parts);
                            part += 1;
                        }
                        let cols = nr.min(ncols - p * nr);
                        let bpp = bp[p * kc * nr..].as_ptr();
                        // SAFETY: tile (rows × cols at row mb*mr, column n0+p*nr) lies inside
                        // out [m, n]; tasks own disjoint column ranges n0..n0+NC.
                        let cp = unsafe { c.0.add(mb * mr * n + n0 + p * nr) };
                        kern(kc, ap, bpp, cp, n, rows, cols, kb > 0);
                    }
                }
            }
        });
    });
    if store.len() <= A_KEEP_WORDS {
        A_SCRATCH.with(|s| s.set(store));
    }
}
