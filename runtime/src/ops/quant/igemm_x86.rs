//! AVX-512 VNNI tile of the integer GEMM ([`super::igemm`], whose module doc gives the panel
//! layouts and the formula). Register tile: [`TILE_ROWS`] weight rows × `V` vectors of
//! [`COLS`] activation rows; per 4-byte quad one 64-byte activation load per vector and one
//! broadcast weight dword per row feed `TILE_ROWS · V` `vpdpbusd`. Per sub-block the i32 sums
//! start from `nsum` (the `+128` correction), then `vcvtdq2ps` and the f32 steps of
//! [`super::igemm::tile_scalar`], in the same order, so the two agree bit for bit.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::igemm::{views, ActPanel, Views, WeightPanel, COLS, TILE_ROWS};

/// The tile of [`super::igemm::tile_scalar`]'s contract on AVX-512 VNNI.
///
/// # Safety
/// avx512f, avx512bw, avx512vnni present; `r0 + TILE_ROWS ≤ w.rows`; `c0 + cols` ≤ the
/// panel's groups × COLS; `out` valid for writes at every `c·ldo + r` (`c < cols`, `r < rows`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn tile(w: &WeightPanel, r0: usize, rows: usize, a: &ActPanel, c0: usize, cols: usize, out: *mut f32, ldo: usize) {
    let v = views(w, a);
    let g0 = c0 / COLS;
    let mut acc = [[0.0f32; 2 * COLS]; TILE_ROWS];
    match (cols > COLS, v.min, v.sub) {
        (true, _, _) if v.per_sb == 1 => run::<2>(&v, r0, g0, &mut acc),
        (false, _, _) if v.per_sb == 1 => run::<1>(&v, r0, g0, &mut acc),
        (true, true, 32) => run_k::<2, true, 32>(&v, r0, g0, &mut acc),
        (true, _, _) => run_k::<2, false, 16>(&v, r0, g0, &mut acc),
        (false, true, 32) => run_k::<1, true, 32>(&v, r0, g0, &mut acc),
        (false, _, _) => run_k::<1, false, 16>(&v, r0, g0, &mut acc),
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        for (c, &val) in row.iter().enumerate().take(cols) {
            *out.add(c * ldo + r) = val;
        }
    }
}

/// The exact i32 sums of sub-block `b` for the tile: `nsum + Σ wq · (q + 128)` per weight row
/// (`wq`, `nsum` at the tile's first row) and activation vector (`xu` at its first group).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn sub_block<const V: usize, const S: usize>(wq: *const i8, nsum: *const i32, xu: *const u8, k: usize, nb: usize, b: usize) -> [[__m512i; V]; TILE_ROWS] {
    let mut isum = [[_mm512_setzero_si512(); V]; TILE_ROWS];
    for (r, row) in isum.iter_mut().enumerate() {
        let init = _mm512_set1_epi32(*nsum.add(r * nb + b));
        for s in row.iter_mut() {
            *s = init;
        }
    }
    for q in 0..S / 4 {
        let quad = b * S / 4 + q; // quad index along k
        let mut x = [_mm512_setzero_si512(); V];
        for (j, xv) in x.iter_mut().enumerate() {
            *xv = _mm512_loadu_si512(xu.add(j * k * COLS + quad * COLS * 4) as *const _);
        }
        for (r, row) in isum.iter_mut().enumerate() {
            let wv = _mm512_set1_epi32((wq.add(r * k + quad * 4) as *const i32).read_unaligned());
            for (s, xv) in row.iter_mut().zip(&x) {
                *s = _mm512_dpbusd_epi32(*s, *xv, wv);
            }
        }
    }
    isum
}

/// `V` vectors of activation rows from group `g0` over Q8_0 weights (32-element blocks, a scale
/// per block on both sides).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run<const V: usize>(v: &Views, r0: usize, g0: usize, out: &mut [[f32; 2 * COLS]; TILE_ROWS]) {
    const S: usize = 32;
    const MIN: bool = false;
    let (k, nb) = (v.k, v.k / S);
    let wq = v.wq.as_ptr().add(r0 * k);
    let (ws, wm, nsum) = (v.ws.as_ptr().add(r0 * nb), v.wm.as_ptr().add(r0 * nb), v.nsum.as_ptr().add(r0 * nb));
    // Group g's quads start at xu[g·k·COLS]; its per-sub-block vectors at xs[g·nb·COLS].
    let xu = v.xu.as_ptr().add(g0 * k * COLS);
    let (xs, xm) = (v.xs.as_ptr().add(g0 * nb * COLS), v.xm.as_ptr().add(g0 * nb * COLS));
    let mut acc = [[_mm512_setzero_ps(); V]; TILE_ROWS];
    for b in 0..nb {
        let isum = sub_block::<V, S>(wq, nsum, xu, k, nb, b);
        let mut xsv = [_mm512_setzero_ps(); V];
        let mut xmv = [_mm512_setzero_ps(); V];
        for j in 0..V {
            xsv[j] = _mm512_loadu_ps(xs.add((j * nb + b) * COLS));
            if MIN {
                xmv[j] = _mm512_loadu_ps(xm.add((j * nb + b) * COLS));
            }
        }
        for r in 0..TILE_ROWS {
            let wsb = _mm512_set1_ps(*ws.add(r * nb + b));
            let wmb = if MIN { _mm512_set1_ps(*wm.add(r * nb + b)) } else { _mm512_setzero_ps() };
            for j in 0..V {
                let s = _mm512_mul_ps(wsb, xsv[j]);
                acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][j]), s, acc[r][j]);
                if MIN {
                    acc[r][j] = _mm512_fnmadd_ps(wmb, xmv[j], acc[r][j]);
                }
            }
        }
    }
    for r in 0..TILE_ROWS {
        for j in 0..V {
            _mm512_storeu_ps(out[r].as_mut_ptr().add(j * COLS), acc[r][j]);
        }
    }
}

/// `V` vectors of activation rows from group `g0` over K-quant weights: `S`-element sub-blocks
/// (32 for Q4_K with its min term `MIN`, 16 for Q6_K), one activation scale per 256-element
/// super-block applied once to the super-block's partial sum (the scalar twin's order).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn run_k<const V: usize, const MIN: bool, const S: usize>(v: &Views, r0: usize, g0: usize, out: &mut [[f32; 2 * COLS]; TILE_ROWS]) {
    let (k, nb) = (v.k, v.k / S);
    let per = 256 / S;
    let wq = v.wq.as_ptr().add(r0 * k);
    let (ws, wm, nsum) = (v.ws.as_ptr().add(r0 * nb), v.wm.as_ptr().add(r0 * nb), v.nsum.as_ptr().add(r0 * nb));
    let xu = v.xu.as_ptr().add(g0 * k * COLS);
    let (xs, xm) = (v.xs.as_ptr().add(g0 * nb * COLS), v.xm.as_ptr().add(g0 * nb * COLS));
    let mut acc = [[_mm512_setzero_ps(); V]; TILE_ROWS];
    for sb in 0..nb / per {
        let mut part = [[_mm512_setzero_ps(); V]; TILE_ROWS];
        for b in sb * per..(sb + 1) * per {
            let isum = sub_block::<V, S>(wq, nsum, xu, k, nb, b);
            let mut xmv = [_mm512_setzero_ps(); V];
            if MIN {
                for (j, m) in xmv.iter_mut().enumerate() {
                    *m = _mm512_loadu_ps(xm.add((j * nb + b) * COLS));
                }
            }
            for r in 0..TILE_ROWS {
                let wsb = _mm512_set1_ps(*ws.add(r * nb + b));
                let wmb = if MIN { _mm512_set1_ps(*wm.add(r * nb + b)) } else { _mm512_setzero_ps() };
                for j in 0..V {
                    part[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][j]), wsb, part[r][j]);
                    if MIN {
                        part[r][j] = _mm512_fnmadd_ps(wmb, xmv[j], part[r][j]);
                    }
                }
            }
        }
        for j in 0..V {
            let xsv = _mm512_loadu_ps(xs.add((j * nb + sb * per) * COLS));
            for r in 0..TILE_ROWS {
                acc[r][j] = _mm512_fmadd_ps(part[r][j], xsv, acc[r][j]);
            }
        }
    }
    for r in 0..TILE_ROWS {
        for j in 0..V {
            _mm512_storeu_ps(out[r].as_mut_ptr().add(j * COLS), acc[r][j]);
        }
    }
}

// ------------------------------------------------------------------------------- unpacking

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load32(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store32(p: *mut i8, v: __m256i) {
    _mm256_storeu_si256(p as *mut __m256i, v)
}

/// Sum of the 32 unsigned bytes of `v` (`vpsadbw` against zero, then the four lanes).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_u8(v: __m256i) -> i32 {
    let s = _mm256_sad_epu8(v, _mm256_setzero_si256()); // 4 × u64
    let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as i32
}

/// Sums of the low and high 16 bytes of `v` (unsigned).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn sum_u8_halves(v: __m256i) -> (i32, i32) {
    let s = _mm256_sad_epu8(v, _mm256_setzero_si256()); // lanes 0,1: low 16 bytes; 2,3: high
    let lo = _mm256_castsi256_si128(s);
    let hi = _mm256_extracti128_si256::<1>(s);
    ((_mm_cvtsi128_si64(lo) + _mm_extract_epi64::<1>(lo)) as i32, (_mm_cvtsi128_si64(hi) + _mm_extract_epi64::<1>(hi)) as i32)
}

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// SIMD twin of `unpack_q8_0` + the `nsum` pass: one row (`src`: `nb × 34` bytes).
///
/// # Safety
/// avx2 + f16c present; `wq` holds `32·nb`, `ws`, `wm`, `nsum` `nb` elements.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn unpack_q8_0(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32], nsum: &mut [i32]) {
    let flip = _mm256_set1_epi8(-128);
    for b in 0..ws.len() {
        let p = src.as_ptr().add(b * super::blocks::Q8_0_BYTES);
        let q = load32(p.add(2));
        store32(wq.as_mut_ptr().add(32 * b), q);
        ws[b] = f16_at(p);
        wm[b] = 0.0;
        // Σ q = Σ (q ^ 0x80) − 32·128 (the xor maps i8 onto u8 by adding 128).
        nsum[b] = -128 * (sum_u8(_mm256_xor_si256(q, flip)) - 32 * 128);
    }
}

/// SIMD twin of `unpack_q4_k` + the `nsum` pass (`src`: `nb × 144` bytes; `ws` etc. `8·nb`).
///
/// # Safety
/// avx2 + f16c present; `wq` holds `256·nb` elements.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn unpack_q4_k(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32], nsum: &mut [i32]) {
    let m4 = _mm256_set1_epi8(0xF);
    for sb in 0..ws.len() / 8 {
        let blk = &src[sb * super::blocks::Q4_K_BYTES..(sb + 1) * super::blocks::Q4_K_BYTES];
        let (d, dmin) = (f16_at(blk.as_ptr()), f16_at(blk.as_ptr().add(2)));
        for j in 0..8 {
            let (sc, m) = super::blocks::scale_min_k4(j, &blk[4..16]);
            ws[sb * 8 + j] = d * sc as f32;
            wm[sb * 8 + j] = dmin * m as f32;
        }
        for c in 0..4 {
            let v = load32(blk.as_ptr().add(16 + 32 * c));
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            let o = wq.as_mut_ptr().add(sb * 256 + 64 * c);
            store32(o, lo);
            store32(o.add(32), hi);
            nsum[sb * 8 + 2 * c] = -128 * sum_u8(lo);
            nsum[sb * 8 + 2 * c + 1] = -128 * sum_u8(hi);
        }
    }
}

/// SIMD twin of `unpack_q6_k` + the `nsum` pass (`src`: `nb × 210` bytes; `ws` etc. `16·nb`).
///
/// # Safety
/// avx2 + f16c present; `wq` holds `256·nb` elements.
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn unpack_q6_k(src: &[u8], wq: &mut [i8], ws: &mut [f32], wm: &mut [f32], nsum: &mut [i32]) {
    use super::blocks::{Q6_D, Q6_K_BYTES, Q6_SC};
    let (m4, m30, k32) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x30), _mm256_set1_epi8(32));
    for sb in 0..ws.len() / 16 {
        let blk = src.as_ptr().add(sb * Q6_K_BYTES);
        let d = f16_at(blk.add(Q6_D));
        for g in 0..16 {
            ws[sb * 16 + g] = d * *blk.add(Q6_SC + g) as i8 as f32;
            wm[sb * 16 + g] = 0.0;
        }
        for h in 0..2 {
            let ql0 = load32(blk.add(64 * h));
            let ql1 = load32(blk.add(64 * h + 32));
            let qh = load32(blk.add(128 + 32 * h));
            // The 6-bit levels of the four quarters (see the scalar `unpack_q6_k`).
            let l0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30));
            let l1 = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30));
            let l2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), _mm256_and_si256(qh, m30));
            let l3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30));
            for (quarter, l) in [l0, l1, l2, l3].into_iter().enumerate() {
                let o = wq.as_mut_ptr().add(sb * 256 + 128 * h + 32 * quarter);
                store32(o, _mm256_sub_epi8(l, k32));
                let (s0, s1) = sum_u8_halves(l);
                let g = sb * 16 + 8 * h + 2 * quarter;
                nsum[g] = -128 * (s0 - 16 * 32);
                nsum[g + 1] = -128 * (s1 - 16 * 32);
            }
        }
    }
}

// ------------------------------------------------------------------------------ activations

/// SIMD twin of ggml's `quantize_row_q8_K_ref` for the GEMM: per 256-block the element of largest
/// |x| (the first one on ties, as the reference's strict `>`) gives `iscale = −127/max`, quants
/// `min(127, nearest(iscale·x))` (`vcvtps2dq` rounds half to even, as `nearest_int`'s magic-number
/// add does for these magnitudes), `d = 1/iscale`, and `per` equal sub-blocks get the block's `d`
/// and their quant sums. `q`: `[k]`, `d`, `s`: `[k/256 · per]`.
///
/// # Safety
/// avx512f + avx512bw present; `row.len()` a multiple of 256, outputs sized as above.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) unsafe fn quantize_q8_k(row: &[f32], per: usize, q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    let sub = 256 / per;
    for (blk, xb) in row.chunks_exact(256).enumerate() {
        let p = xb.as_ptr();
        let mut amax = _mm512_setzero_ps();
        for i in 0..16 {
            amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(p.add(16 * i))));
        }
        let amax = _mm512_reduce_max_ps(amax);
        if amax == 0.0 {
            q[blk * 256..(blk + 1) * 256].fill(0);
            d[blk * per..(blk + 1) * per].fill(0.0);
            s[blk * per..(blk + 1) * per].fill(0);
            continue;
        }
        let first = xb.iter().position(|v| v.abs() == amax).unwrap_or(0);
        let iscale = -127.0 / xb[first];
        let vs = _mm512_set1_ps(iscale);
        let top = _mm512_set1_epi32(127);
        for i in 0..16 {
            let v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p.add(16 * i)), vs));
            let v = _mm512_min_epi32(v, top);
            _mm_storeu_si128(q.as_mut_ptr().add(blk * 256 + 16 * i) as *mut __m128i, _mm512_cvtepi32_epi8(v));
        }
        let dv = 1.0 / iscale;
        for j in 0..per {
            d[blk * per + j] = dv;
            s[blk * per + j] = q[blk * 256 + j * sub..blk * 256 + (j + 1) * sub].iter().map(|&v| v as i32).sum();
        }
    }
}

/// SIMD twin of ggml's `quantize_row_q8_0_ref` for the GEMM: per 32-block `d = amax/127`
/// (rounded to f16 as stored, which is what the dot products use), quants `round(x · 1/d)` with
/// C's `roundf` (half away from zero), and the block's quant sum. `q`: `[k]`, `d`, `s`: `[k/32]`.
///
/// # Safety
/// avx512f + avx512bw + f16c present; `row.len()` a multiple of 32, outputs sized as above.
#[target_feature(enable = "avx512f,avx512bw,f16c")]
pub(crate) unsafe fn quantize_q8_0(row: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_epi32(i32::MIN);
    for (b, xb) in row.chunks_exact(32).enumerate() {
        let p = xb.as_ptr();
        let (x0, x1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        let dd = amax / 127.0;
        let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
        let vid = _mm512_set1_ps(id);
        let mut sum = 0i32;
        for (h, x) in [x0, x1].into_iter().enumerate() {
            // roundf(y) = trunc(y + copysign(0.5, y)) is off by one where y + 0.5 rounds up
            // (y = 0.49999997); instead: t = trunc(y), then step away from zero when |y − t| ≥ ½.
            let y = _mm512_mul_ps(x, vid);
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
            let frac = _mm512_abs_ps(_mm512_sub_ps(y, t));
            let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, half);
            let one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0)), _mm512_and_si512(_mm512_castps_si512(y), sign)));
            let r = _mm512_mask_add_ps(t, up, t, one);
            let v = _mm512_cvttps_epi32(r);
            sum += _mm512_reduce_add_epi32(v);
            _mm_storeu_si128(q.as_mut_ptr().add(32 * b + 16 * h) as *mut __m128i, _mm512_cvtepi32_epi8(v));
        }
        d[b] = half::f16::from_f32(dd).to_f32();
        s[b] = sum;
    }
}
