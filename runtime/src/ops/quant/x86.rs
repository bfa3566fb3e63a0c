//! x86-64 SIMD kernels of the quantized dot products ([`super::dot`] picks them at run time and
//! keeps the scalar twins they are tested against). The integer work follows llama.cpp's x86
//! kernels (`ggml/src/ggml-cpu/arch/x86/quants.c`): unsigned weight quants × signed activation
//! quants with `maddubs` (u8·i8 → i16 pairs, no saturation possible for 4/6-bit weights), the
//! per-sub-block scales applied with `madd` / `dpwssd` (i16·i16 → i32), and for Q8_0 the
//! `|x|`·`sign(y, x)` trick feeding `dpbusd` (u8·i8 → i32, VNNI). Q8_0 is exact for quants in
//! −127..=127 (what every quantizer writes); a −128 paired with −128 saturates, as in ggml.
//!
//! Callers (`super::dot`) guarantee the CPU features and whole blocks: `x.len() == nb · bytes`.
//! Every kernel prefetches a later weight row (decode streams the weights from DRAM, and the
//! hardware prefetcher stops at 4 KiB pages): on the shared 2-core Xeon this took the Q8_0
//! GEMV from about 3.1 to 4.6–6.2 GiB/s.

use std::arch::x86_64::*;

use super::blocks::{BlockQ8K, Q4_K_BYTES, Q6_D, Q6_K_BYTES, Q6_QH, Q6_SC, Q8_0_BYTES};
use super::dot::{q4_k_accumulate, q6_k_accumulate};

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4E>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xB1>(s));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

// ------------------------------------------------------------------------------------ Q8_0

/// AVX2 Q8_0·Q8_0: `maddubs(|x|, sign(y, x))`, `madd` with ones, f32 FMA with `dx·dy`; prefetches
/// the next row (the same offsets `x.len()` bytes on; a prefetch never faults).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx2(x: &[u8], y: &[u8]) -> f32 {
    let nb = x.len() / Q8_0_BYTES;
    let (px, py) = (x.as_ptr(), y.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (bx, by) = (px.add(i * Q8_0_BYTES), py.add(i * Q8_0_BYTES));
        _mm_prefetch::<_MM_HINT_T0>(bx.wrapping_add(x.len()) as *const i8); // the next row
        let qx = load256(bx.add(2));
        let qy = load256(by.add(2));
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
        let p32 = _mm256_madd_epi16(p16, ones);
        let d = f16_to_f32(bx) * f16_to_f32(by);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(d), acc);
    }
    hsum_f32(acc)
}

/// AVX-512 VNNI Q8_0·Q8_0 of one row: [`dot_q8_0_rows_avx512`] with `R = 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_avx512(x: &[u8], y: &[u8]) -> f32 {
    let mut out = [0.0f32];
    dot_q8_0_rows_avx512::<1>(x, y, &mut out);
    out[0]
}

/// Two consecutive Q8_0 blocks' quants (at `b0 + 2` and `b0 + 36`) in one 512-bit vector.
#[inline(always)]
unsafe fn q8_0_pair(b0: *const u8) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load256(b0.add(2))), load256(b0.add(Q8_0_BYTES + 2)))
}

/// The f16 scales of two consecutive Q8_0 blocks as 16 f32 lanes: 8 × `d₀`, then 8 × `d₁`.
#[inline(always)]
unsafe fn q8_0_pair_scales(b0: *const u8) -> __m512 {
    let h0 = _mm256_set1_epi16(i16::from_le_bytes([*b0, *b0.add(1)]));
    let h1 = _mm256_set1_epi16(i16::from_le_bytes([*b0.add(Q8_0_BYTES), *b0.add(Q8_0_BYTES + 1)]));
    _mm512_cvtph_ps(_mm256_mask_blend_epi16(0xFF00, h0, h1))
}

/// AVX-512 VNNI Q8_0 dots of `R` consecutive weight rows (`w`: `R × y.len()` bytes) with one
/// activation row `y`, two blocks per step, the activation loaded once per step for all rows.
///
/// The integer part is exact for every i8 pair (also −128): `dpbusd(c, x ⊕ 0x80, y)` sums
/// `(x + 128)·y` per 4 bytes into lanes that start at `c = −128·Σy` (from one `dpbusd` with the
/// 0x80 bytes, shared by the rows), so each lane holds `Σ x·y` of its 4 bytes. Each block's lanes
/// are then scaled by `d_x·d_y` (same f32 product as the scalar twin) into 16 f32 partial sums per
/// row, reduced at the end: every row's result equals the `R = 1` kernel's bit for bit.
///
/// Software prefetch: the same bytes `R` rows further on (the next group of a row loop), which
/// the hardware prefetcher, stopping at 4 KiB pages, would fetch late. A prefetch never faults,
/// so running past the weight's end is harmless (`wrapping_add`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0_rows_avx512<const R: usize>(w: &[u8], y: &[u8], out: &mut [f32; R]) {
    let rb = y.len();
    debug_assert_eq!(w.len(), R * rb);
    let nb = rb / Q8_0_BYTES;
    let (pw, py) = (w.as_ptr(), y.as_ptr());
    let flip = _mm512_set1_epi8(0x80u8 as i8);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i + 2 <= nb {
        let o = i * Q8_0_BYTES;
        let qy = q8_0_pair(py.add(o));
        let c = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, qy));
        let dy = q8_0_pair_scales(py.add(o));
        for (r, a) in acc.iter_mut().enumerate() {
            let bx = pw.add(r * rb + o);
            _mm_prefetch::<_MM_HINT_T0>(bx.wrapping_add(R * rb) as *const i8);
            let p32 = _mm512_dpbusd_epi32(c, _mm512_xor_si512(q8_0_pair(bx), flip), qy);
            let d = _mm512_mul_ps(q8_0_pair_scales(bx), dy);
            *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p32), d, *a);
        }
        i += 2;
    }
    for (r, (o, a)) in out.iter_mut().zip(acc).enumerate() {
        *o = _mm512_reduce_add_ps(a);
        if i < nb {
            *o += dot_q8_0_avx2(&w[r * rb + i * Q8_0_BYTES..(r + 1) * rb], &y[i * Q8_0_BYTES..]);
        }
    }
}

// ------------------------------------------------------------------------------------ Q4_K

/// Prefetches the cache lines of block `i` (of `B` bytes) of the row at `pf`: the K-quant kernels'
/// software prefetch of a later row (see [`dot_q8_0_rows_avx512`]); `pf` may point anywhere, a
/// prefetch never faults.
#[inline(always)]
unsafe fn prefetch_block<const B: usize>(pf: *const u8, i: usize) {
    let b = pf.wrapping_add(i * B);
    let mut o = 0;
    while o < B {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(o) as *const i8);
        o += 64;
    }
}

/// The 8 scales and 8 mins of a Q4_K block's 12 packed bytes (ggml's `utmp` unpacking).
#[inline(always)]
fn q4_k_scales_mins(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([p[4 * i], p[4 * i + 1], p[4 * i + 2], p[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let u3 = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let s1 = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    sc[..4].copy_from_slice(&(u0 & KMASK1).to_le_bytes());
    sc[4..].copy_from_slice(&s1.to_le_bytes());
    mn[..4].copy_from_slice(&(u1 & KMASK1).to_le_bytes());
    mn[4..].copy_from_slice(&u3.to_le_bytes());
    (sc, mn)
}

/// `Σ_j m_j · (bsums[2j] + bsums[2j+1])` with one `madd`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4_k_mins_dot(mn: &[u8; 8], yb: &BlockQ8K) -> i32 {
    let mut m2 = [0u8; 16];
    for j in 0..8 {
        m2[2 * j] = mn[j];
        m2[2 * j + 1] = mn[j];
    }
    let mv = _mm256_cvtepu8_epi16(_mm_loadu_si128(m2.as_ptr() as *const __m128i));
    let bs = _mm256_loadu_si256(yb.bsums.as_ptr() as *const __m256i);
    hsum_i32(_mm256_madd_epi16(bs, mv))
}

/// AVX2 Q4_K·Q8_K: per 64 elements two `maddubs` (low / high nibbles) and two `madd` with the
/// sub-block scales.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_avx2(x: &[u8], y: &[BlockQ8K], pf: *const u8) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let mut sumf = 0.0f32;
    for (i, yb) in y.iter().enumerate() {
        let xb = &x[i * Q4_K_BYTES..(i + 1) * Q4_K_BYTES];
        prefetch_block::<Q4_K_BYTES>(pf, i);
        let (sc, mn) = q4_k_scales_mins(&xb[4..16]);
        let (pq, p8) = (xb.as_ptr().add(16), yb.qs.as_ptr() as *const u8);
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q4 = load256(pq.add(32 * c));
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
            let p0 = _mm256_maddubs_epi16(lo, load256(p8.add(64 * c)));
            let p1 = _mm256_maddubs_epi16(hi, load256(p8.add(64 * c + 32)));
            let p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c] as i16));
            let p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1] as i16));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        let sumi = hsum_i32(acc);
        let summ = q4_k_mins_dot(&mn, yb);
        sumf = q4_k_accumulate(sumf, f16_to_f32(xb.as_ptr()), f16_to_f32(xb.as_ptr().add(2)), yb.d, sumi, summ);
    }
    sumf
}

/// AVX-512 Q4_K·Q8_K: 128 elements per step (`maddubs` on 512 bits, scales by `dpwssd`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_avx512(x: &[u8], y: &[BlockQ8K], pf: *const u8) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    // i16 lane l of a product vector belongs to sub-block (l < 16 ? a : b) of the pair (a, b).
    let idx = |a: i16, b: i16| _mm512_mask_blend_epi16(0xFFFF_0000, _mm512_set1_epi16(a), _mm512_set1_epi16(b));
    let (i02, i13, i46, i57) = (idx(0, 2), idx(1, 3), idx(4, 6), idx(5, 7));
    let mut sumf = 0.0f32;
    for (i, yb) in y.iter().enumerate() {
        let xb = &x[i * Q4_K_BYTES..(i + 1) * Q4_K_BYTES];
        prefetch_block::<Q4_K_BYTES>(pf, i);
        let (sc, mn) = q4_k_scales_mins(&xb[4..16]);
        let sc16 = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64(sc.as_ptr() as *const __m128i)));
        let (pq, p8) = (xb.as_ptr().add(16), yb.qs.as_ptr() as *const u8);
        let mut acc = _mm512_setzero_si512();
        for (h, (ia, ib)) in [(i02, i13), (i46, i57)].into_iter().enumerate() {
            let q4 = _mm512_loadu_si512(pq.add(64 * h) as *const _);
            let lo = _mm512_and_si512(q4, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q4), m4);
            let y8 = p8.add(128 * h);
            let ylo = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load256(y8)), load256(y8.add(64)));
            let yhi = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(load256(y8.add(32))), load256(y8.add(96)));
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(lo, ylo), _mm512_permutexvar_epi16(ia, sc16));
            acc = _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(hi, yhi), _mm512_permutexvar_epi16(ib, sc16));
        }
        let sumi = _mm512_reduce_add_epi32(acc);
        let summ = q4_k_mins_dot(&mn, yb);
        sumf = q4_k_accumulate(sumf, f16_to_f32(xb.as_ptr()), f16_to_f32(xb.as_ptr().add(2)), yb.d, sumi, summ);
    }
    sumf
}

// ------------------------------------------------------------------------------------ Q6_K

/// The four 32-element groups of 6-bit quants (0..64) of one 128-element half of a Q6_K block.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6_k_half(ql: *const u8, qh: *const u8) -> [__m256i; 4] {
    let m4 = _mm256_set1_epi8(0x0F);
    let (ql0, ql1, qh) = (load256(ql), load256(ql.add(32)), load256(qh));
    let m30 = _mm256_set1_epi8(0x30);
    [
        _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30)),
        _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), _mm256_and_si256(qh, m30)),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30)),
    ]
}

/// i16 vector whose low 128 bits hold `sc[2m]` and high 128 bits `sc[2m+1]` (`sc16`: the 16
/// scales widened to i16).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6_k_scale_pair(sc16: __m256i, m: i32) -> __m256i {
    let pair = _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(m));
    let shuf = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    _mm256_shuffle_epi8(pair, shuf)
}

macro_rules! q6_k_kernel {
    ($name:ident, $feat:literal, $acc:ident) => {
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn $name(x: &[u8], y: &[BlockQ8K], pf: *const u8) -> f32 {
            let mut sumf = 0.0f32;
            for (i, yb) in y.iter().enumerate() {
                let xb = &x[i * Q6_K_BYTES..(i + 1) * Q6_K_BYTES];
                prefetch_block::<Q6_K_BYTES>(pf, i);
                let p = xb.as_ptr();
                let p8 = yb.qs.as_ptr() as *const u8;
                let sc_lo = _mm_loadu_si128(p.add(Q6_SC) as *const __m128i);
                let sc16 = _mm256_cvtepi8_epi16(sc_lo);
                let mut acc = _mm256_setzero_si256();
                for h in 0..2 {
                    let q = q6_k_half(p.add(64 * h), p.add(Q6_QH + 32 * h));
                    for (k, qk) in q.iter().enumerate() {
                        let prod = _mm256_maddubs_epi16(*qk, load256(p8.add(128 * h + 32 * k)));
                        acc = $acc(acc, prod, q6_k_scale_pair(sc16, (4 * h + k) as i32));
                    }
                }
                let bs = _mm256_loadu_si256(yb.bsums.as_ptr() as *const __m256i);
                let offset = hsum_i32(_mm256_madd_epi16(bs, sc16));
                let sumi = hsum_i32(acc) - 32 * offset;
                sumf = q6_k_accumulate(sumf, f16_to_f32(p.add(Q6_D)), yb.d, sumi);
            }
            sumf
        }
    };
}

#[inline(always)]
unsafe fn madd_add(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
}

#[inline(always)]
unsafe fn dpwssd256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpwssd_epi32(acc, a, b)
}

q6_k_kernel!(dot_q6_k_avx2, "avx2,fma,f16c", madd_add);
q6_k_kernel!(dot_q6_k_avx512, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", dpwssd256);
