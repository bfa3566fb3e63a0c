//! The four ggml block formats, byte for byte (`ggml/src/ggml-common.h`), with ggml's reference
//! quantizers (`quantize_row_*_ref` in `ggml/src/ggml-quants.c`) and dequantizers.
//!
//! Weight blocks are handled as little-endian byte slices (a GGUF file only promises 32-byte
//! alignment of a tensor, and the f16 fields sit at odd offsets inside Q6_K), so nothing here
//! needs aligned memory. The activation format [`BlockQ8K`] is ours to allocate and is a struct.
//!
//! | type | elements | bytes | layout |
//! |------|----------|-------|--------|
//! | Q8_0 | 32  | 34  | `d: f16`, `qs: [i8; 32]`; `x = d·q` |
//! | Q4_K | 256 | 144 | `d: f16`, `dmin: f16`, `scales: [u8; 12]` (8 × 6-bit scale + 8 × 6-bit min), `qs: [u8; 128]` (nibbles); `x = d·sc·q − dmin·m` |
//! | Q6_K | 256 | 210 | `ql: [u8; 128]` (low 4 bits), `qh: [u8; 64]` (high 2 bits), `scales: [i8; 16]`, `d: f16`; `x = d·sc·(q − 32)` |
//! | Q8_K | 256 | 292 | `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]` (sums of 16 quants) |

use half::f16;

use super::search::{make_qkx2_quants, make_qx_quants, nearest_int, GROUP_MAX_EPS};

/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = 34;
/// Bytes per Q4_K block.
pub const Q4_K_BYTES: usize = 144;
/// Bytes per Q6_K block.
pub const Q6_K_BYTES: usize = 210;
/// Bytes per Q8_K block in ggml's layout ([`BlockQ8K::to_bytes`]).
pub const Q8_K_BYTES: usize = 292;

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

#[inline(always)]
fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

// ------------------------------------------------------------------------------------ Q8_0

/// `quantize_row_q8_0_ref`: `x`: `[k]` f32 with `k % 32 == 0` → `out`: `k/32 × 34` bytes.
/// Per block `d = amax/127`, `q = round(x/d)` (ties away from zero, C `roundf`).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK8_0).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(yb, 0, d);
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

/// `dequantize_row_q8_0`: `x`: `k/32 × 34` bytes → `out`: `[k]` f32.
pub fn dequantize_row_q8_0(x: &[u8], out: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK8_0)) {
        let d = f16_at(xb, 0);
        for (y, &q) in yb.iter_mut().zip(&xb[2..]) {
            *y = q as i8 as f32 * d;
        }
    }
}

// ------------------------------------------------------------------------------------ Q4_K

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K block.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// `quantize_row_q4_K_ref`: `x`: `[k]` f32 with `k % 256 == 0` → `out`: `k/256 × 144` bytes.
/// Each 32-element sub-block gets a `make_qkx2_quants` scale/min (weights `rms + |x|`), which are
/// themselves quantized to 6 bits against the super-block's `d`/`dmin`.
pub fn quantize_row_q4_k(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q4_K_BYTES)) {
        let mut l = [0u8; QK_K];
        let mut weights = [0.0f32; 32];
        let mut mins = [0.0f32; 8];
        let mut scales = [0.0f32; 8];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..8 {
            let xs = &xb[32 * j..32 * j + 32];
            let mut sum_x2 = 0.0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            let (s, m) = make_qkx2_quants(xs, &weights, 15, &mut l[32 * j..32 * j + 32], -1.0, 0.1, 20, false);
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let sc = &mut yb[4..16];
        sc.fill(0);
        for j in 0..8 {
            // C stores nearest_int's int into a uint8_t (mod 256) before MIN(63, ·).
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                sc[j] = ls;
                sc[j + 4] = lm;
            } else {
                sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
                sc[j - 4] |= (ls >> 4) << 6;
                sc[j] |= (lm >> 4) << 6;
            }
        }
        put_f16(yb, 0, max_scale / 63.0);
        put_f16(yb, 2, max_min / 63.0);
        let (d_all, dmin_all) = (f16_at(yb, 0), f16_at(yb, 2));
        for j in 0..8 {
            let (s, m) = scale_min_k4(j, &yb[4..16]);
            let d = d_all * s as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * m as f32;
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, 15) as u8;
            }
        }
        let qs = &mut yb[16..];
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                qs[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

/// `dequantize_row_q4_K`: `x`: `k/256 × 144` bytes → `out`: `[k]` f32.
pub fn dequantize_row_q4_k(x: &[u8], out: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(Q4_K_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_at(xb, 0), f16_at(xb, 2));
        let scales = &xb[4..16];
        for c in 0..4 {
            let q = &xb[16 + 32 * c..16 + 32 * c + 32];
            let (s1, m1) = scale_min_k4(2 * c, scales);
            let (s2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let y = &mut yb[64 * c..64 * c + 64];
            for l in 0..32 {
                y[l] = d1 * (q[l] & 0xF) as f32 - m1;
                y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

// ------------------------------------------------------------------------------------ Q6_K

/// Byte offsets inside a Q6_K block.
pub(crate) const Q6_QL: usize = 0;
pub(crate) const Q6_QH: usize = 128;
pub(crate) const Q6_SC: usize = 192;
pub(crate) const Q6_D: usize = 208;

/// `quantize_row_q6_K_ref`: `x`: `[k]` f32 with `k % 256 == 0` → `out`: `k/256 × 210` bytes.
/// Each 16-element group gets a `make_qx_quants(16, 32, ·, rmse_type = 1)` scale, quantized to
/// i8 against the super-block's `d`.
pub fn quantize_row_q6_k(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q6_K_BYTES)) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let s = make_qx_quants(&xb[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16], 1);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            yb.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(yb, Q6_D, 1.0 / iscale);
        for ib in 0..16 {
            yb[Q6_SC + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(yb, Q6_D);
        for j in 0..16 {
            let d = d_all * yb[Q6_SC + j] as i8 as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(xb[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (h, j) in (0..QK_K).step_by(128).enumerate() {
            for i in 0..32 {
                let q = |o: usize| l[j + i + o] as u8;
                yb[Q6_QL + 64 * h + i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
                yb[Q6_QL + 64 * h + i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
                yb[Q6_QH + 32 * h + i] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
            }
        }
    }
}

/// The 6-bit quant (0..64, before the −32 offset) of element `i` (0..256) of a Q6_K block.
#[inline(always)]
pub(crate) fn q6_level(b: &[u8], i: usize) -> u8 {
    let (h, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = b[Q6_QL + 64 * h + l + if quarter % 2 == 1 { 32 } else { 0 }];
    let lo = if quarter >= 2 { ql >> 4 } else { ql & 0xF };
    let hi = (b[Q6_QH + 32 * h + l] >> (2 * quarter)) & 3;
    lo | (hi << 4)
}

/// `dequantize_row_q6_K`: `x`: `k/256 × 210` bytes → `out`: `[k]` f32.
pub fn dequantize_row_q6_k(x: &[u8], out: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(Q6_K_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(xb, Q6_D);
        for (i, y) in yb.iter_mut().enumerate() {
            let sc = xb[Q6_SC + i / 16] as i8 as f32;
            *y = d * sc * (q6_level(xb, i) as i32 - 32) as f32;
        }
    }
}

// ------------------------------------------------------------------------------------ Q8_K

/// One Q8_K block: the activation side of the K-quant dot products (`block_q8_K`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale: `x ≈ d·q`.
    pub d: f32,
    /// Quants in −127..=127.
    pub qs: [i8; QK_K],
    /// `bsums[j] = Σ qs[16j..16j+16]`.
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

impl BlockQ8K {
    /// ggml's 292-byte little-endian layout.
    pub fn to_bytes(&self) -> [u8; Q8_K_BYTES] {
        let mut b = [0u8; Q8_K_BYTES];
        b[..4].copy_from_slice(&self.d.to_le_bytes());
        for (o, &q) in b[4..260].iter_mut().zip(&self.qs) {
            *o = q as u8;
        }
        for (j, s) in self.bsums.iter().enumerate() {
            b[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
        }
        b
    }

    /// Parses ggml's layout; `None` unless `b` is exactly [`Q8_K_BYTES`] long.
    pub fn from_bytes(b: &[u8]) -> Option<BlockQ8K> {
        if b.len() != Q8_K_BYTES {
            return None;
        }
        let mut blk = BlockQ8K { d: f32::from_le_bytes([b[0], b[1], b[2], b[3]]), ..Default::default() };
        for (q, &v) in blk.qs.iter_mut().zip(&b[4..260]) {
            *q = v as i8;
        }
        for (j, s) in blk.bsums.iter_mut().enumerate() {
            *s = i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]);
        }
        Some(blk)
    }
}

/// `quantize_row_q8_K_ref`: `x`: `[k]` f32 with `k % 256 == 0` → `out`: `k/256` blocks.
/// `d = max/−127` of the element with the largest |x| (sign kept), `q = min(127, nearest(x/d))`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (xb, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *y = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in y.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, s) in y.bsums.iter_mut().enumerate() {
            *s = y.qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        y.d = 1.0 / iscale;
    }
}

/// `dequantize_row_q8_K`: `k/256` blocks → `out`: `[k]` f32.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], out: &mut [f32]) {
    for (b, yb) in x.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (y, &q) in yb.iter_mut().zip(&b.qs) {
            *y = b.d * q as f32;
        }
    }
}
