//! Rotary position embedding, interleaved ("GPT-J", llama.cpp `ROPE_TYPE_NORM`) pairing as ERNIE
//! uses it (spec §2.4): pair m rotates lanes (2m, 2m+1) by `pos * theta^(-2m/head_dim)`.
//! Using NeoX half-split pairing here is the classic silent bug; `tests/` has a test that fails
//! under it.

use crate::config::MropeSection;

/// Precomputed `cos`/`sin` for positions `0..max_pos`, `[max_pos, head_dim/2]` each, in f32
/// (spec §2.6: tables in f32; the angle `pos * inv_freq` is formed in f32 as transformers does).
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// ERNIE-4.5-VL 3-D RoPE: `(h/w pairs, t pairs)`; `None` for 1-D text RoPE.
    mrope: Option<MropeSection>,
    /// `[head_dim/2]` `theta^(−2m/head_dim)` in f32: the table's rows are `pos · inv_freq`, and
    /// real-valued positions ([`RopePositions::Real`]) form their angles from it the same way.
    inv_freq: Vec<f32>,
}

/// Positions of the rows of one forward pass.
#[derive(Clone, Copy, Debug)]
pub enum RopePositions<'a> {
    /// Row `i` is at position `start + i` on every axis (text; VL decode, where `start` already
    /// includes the rope delta).
    Sequential(usize),
    /// Row `i` is at `(t, h, w) = positions[i]` (ERNIE-4.5-VL prefill, spec §3.6).
    ThreeD(&'a [[u32; 3]]),
    /// Row `i` is at the real-valued `(t, h, w) = positions[i]` (ERNIE 5.0 visual slots,
    /// `ernie5-generation.md` §3.4): angles `coord · inv_freq` formed in f32 per row instead of
    /// read from the table; integer coordinates give the table's values bit for bit.
    Real(&'a [[f32; 3]]),
}

impl RopeTable {
    /// Tables for `head_dim` lanes and base `theta`, covering positions `0..max_pos`.
    pub fn new(head_dim: usize, theta: f32, max_pos: usize) -> RopeTable {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|m| 1.0 / theta.powf((2 * m) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        RopeTable { half, cos, sin, mrope: None, inv_freq }
    }

    /// [`RopeTable::new`] with ERNIE-4.5-VL's 3-D split (`section.hw_pairs + section.t_pairs`
    /// must equal `head_dim / 2`; the config loader checks it).
    pub fn with_mrope(head_dim: usize, theta: f32, max_pos: usize, section: MropeSection) -> RopeTable {
        RopeTable { mrope: Some(section), ..RopeTable::new(head_dim, theta, max_pos) }
    }

    /// The 3-D split, if any.
    pub fn mrope(&self) -> Option<MropeSection> {
        self.mrope
    }

    /// Number of positions covered.
    pub fn max_pos(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    fn row(&self, pos: usize) -> (&[f32], &[f32]) {
        let r = pos * self.half..(pos + 1) * self.half;
        (&self.cos[r.clone()], &self.sin[r])
    }
}

/// Rotates every head of each row in place. `x`: `[t, n_heads, head_dim]`; `positions`: `[t]`,
/// each `< table.max_pos()` (the caller sizes the table for its KV cache).
pub fn rope_interleaved(x: &mut [f32], n_heads: usize, positions: &[usize], table: &RopeTable) {
    let head_dim = 2 * table.half;
    for (row, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        let (cos, sin) = table.row(pos);
        for head in row.chunks_exact_mut(head_dim) {
            for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = b * c + a * s;
            }
        }
    }
}

/// Rotates `x` (`[t, n_heads, head_dim]`) for `positions`: 1-D RoPE for sequential rows, and
/// for 3-D rows pair `m` takes its angle from axis h (`m < hw`, even), w (`m < hw`, odd) or t
/// (`m >= hw`) of the row's `(t, h, w)` — spec §3.5. Every coordinate must be `< max_pos`.
///
/// Errors: [`crate::Error::Request`] when 3-D positions meet a table without a 3-D split, or a
/// position is outside the table.
pub fn rope_apply(x: &mut [f32], n_heads: usize, positions: RopePositions<'_>, table: &RopeTable) -> crate::Result<()> {
    let t = x.len() / (n_heads * 2 * table.half).max(1);
    let max_pos = table.max_pos();
    match positions {
        RopePositions::Sequential(start) => {
            if start + t > max_pos {
                return Err(crate::Error::Request(format!("position {} is outside the RoPE table of {max_pos}", start + t - 1)));
            }
            let pos: Vec<usize> = (start..start + t).collect();
            rope_interleaved(x, n_heads, &pos, table);
        }
        RopePositions::ThreeD(pos) => {
            let Some(section) = table.mrope else {
                return Err(crate::Error::Request("3-D positions need a model with 3-D RoPE (mrope_section)".into()));
            };
            if pos.len() != t {
                return Err(crate::Error::Request(format!("{} 3-D positions for {t} rows", pos.len())));
            }
            if let Some(p) = pos.iter().flatten().find(|&&p| p as usize >= max_pos) {
                return Err(crate::Error::Request(format!("position {p} is outside the RoPE table of {max_pos}")));
            }
            let head_dim = 2 * table.half;
            for (row, &[pt, ph, pw]) in x.chunks_exact_mut(n_heads * head_dim).zip(pos) {
                for head in row.chunks_exact_mut(head_dim) {
                    for (m, pair) in head.chunks_exact_mut(2).enumerate() {
                        let p = if m >= section.hw_pairs {
                            pt
                        } else if m % 2 == 0 {
                            ph
                        } else {
                            pw
                        } as usize;
                        let (c, s) = (table.cos[p * table.half + m], table.sin[p * table.half + m]);
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c - b * s;
                        pair[1] = b * c + a * s;
                    }
                }
            }
        }
        RopePositions::Real(pos) => {
            let Some(section) = table.mrope else {
                return Err(crate::Error::Request("real-valued positions need a model with 3-D RoPE (mrope_section)".into()));
            };
            if pos.len() != t {
                return Err(crate::Error::Request(format!("{} real positions for {t} rows", pos.len())));
            }
            if let Some(p) = pos.iter().flatten().find(|p| !(p.is_finite() && **p >= 0.0)) {
                return Err(crate::Error::Request(format!("position {p} is not a finite value >= 0")));
            }
            let head_dim = 2 * table.half;
            let (mut cos, mut sin) = (vec![0.0f32; table.half], vec![0.0f32; table.half]);
            for (row, &[pt, ph, pw]) in x.chunks_exact_mut(n_heads * head_dim).zip(pos) {
                for (m, &f) in table.inv_freq.iter().enumerate() {
                    let p = if m >= section.hw_pairs {
                        pt
                    } else if m % 2 == 0 {
                        ph
                    } else {
                        pw
                    };
                    let angle = p * f; // f32, as the table's `pos as f32 * f`
                    cos[m] = angle.cos();
                    sin[m] = angle.sin();
                }
                for head in row.chunks_exact_mut(head_dim) {
                    for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(&sin)) {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c - b * s;
                        pair[1] = b * c + a * s;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Slow twin of [`rope_apply`] for real-valued 3-D positions ([`RopePositions::Real`]): the
/// angle `coord(m) · theta^(−2m/head_dim)` from the formula per element, in f64.
pub fn rope_mrope_real_slow(x: &mut [f32], n_heads: usize, head_dim: usize, positions: &[[f32; 3]], theta: f32, section: MropeSection) {
    for (t, &[pt, ph, pw]) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for m in 0..head_dim / 2 {
                let coord = if m >= section.hw_pairs { pt } else if m % 2 == 0 { ph } else { pw };
                let angle = coord as f64 / (theta as f64).powf(2.0 * m as f64 / head_dim as f64);
                let (a, b) = (x[base + 2 * m] as f64, x[base + 2 * m + 1] as f64);
                x[base + 2 * m] = (a * angle.cos() - b * angle.sin()) as f32;
                x[base + 2 * m + 1] = (b * angle.cos() + a * angle.sin()) as f32;
            }
        }
    }
}

/// Slow twin of [`rope_apply`] for 3-D positions: the angle `coord(m) · theta^(−2m/head_dim)`
/// from the formula per element, in f64.
pub fn rope_mrope_slow(x: &mut [f32], n_heads: usize, head_dim: usize, positions: &[[u32; 3]], theta: f32, section: MropeSection) {
    for (t, &[pt, ph, pw]) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for m in 0..head_dim / 2 {
                let coord = if m >= section.hw_pairs { pt } else if m % 2 == 0 { ph } else { pw };
                let inv = 1.0 / (theta as f64).powf(2.0 * m as f64 / head_dim as f64);
                let angle = coord as f64 * inv;
                let (a, b) = (x[base + 2 * m] as f64, x[base + 2 * m + 1] as f64);
                x[base + 2 * m] = (a * angle.cos() - b * angle.sin()) as f32;
                x[base + 2 * m + 1] = (b * angle.cos() + a * angle.sin()) as f32;
            }
        }
    }
}

/// The vision tower's 2-D RoPE (spec §3.2; transformers `Ernie4_5_VLMoeVisionRotaryEmbedding`
/// and `apply_rotary_pos_emb_vision`), **half-split** (NeoX) pairing: lane `j` and `j + d/2`
/// rotate together. With `f_i = theta^(−2i/(d/2))`, `i < d/4`, lane `j < d/2` has angle `row·f_j` for
/// `j < d/4` and `col·f_(j−d/4)` after. `x`: `[t, n_heads, d]`; `rc`: `[t]` (row, col) per patch.
pub fn rope_vision(x: &mut [f32], n_heads: usize, head_dim: usize, rc: &[[u32; 2]], theta: f32) {
    let (half, quarter) = (head_dim / 2, head_dim / 4);
    let inv: Vec<f32> = (0..quarter).map(|i| 1.0 / theta.powf((2 * i) as f32 / half as f32)).collect();
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for (row, &[r, c]) in x.chunks_exact_mut(n_heads * head_dim).zip(rc) {
        for j in 0..half {
            // f32 angle, as transformers forms `position * inv_freq` in f32.
            let angle = if j < quarter { r as f32 * inv[j] } else { c as f32 * inv[j - quarter] };
            cos[j] = angle.cos();
            sin[j] = angle.sin();
        }
        for head in row.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for j in 0..half {
                let (a, b) = (lo[j], hi[j]);
                lo[j] = a * cos[j] - b * sin[j];
                hi[j] = b * cos[j] + a * sin[j];
            }
        }
    }
}

/// Slow twin of [`rope_vision`]: per element from the formula in f64.
pub fn rope_vision_slow(x: &mut [f32], n_heads: usize, head_dim: usize, rc: &[[u32; 2]], theta: f32) {
    let (half, quarter) = (head_dim / 2, head_dim / 4);
    for (t, &[r, c]) in rc.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for j in 0..half {
                let (pos, i) = if j < quarter { (r, j) } else { (c, j - quarter) };
                let angle = pos as f64 / (theta as f64).powf(2.0 * i as f64 / half as f64);
                let (a, b) = (x[base + j] as f64, x[base + half + j] as f64);
                x[base + j] = (a * angle.cos() - b * angle.sin()) as f32;
                x[base + half + j] = (b * angle.cos() + a * angle.sin()) as f32;
            }
        }
    }
}

/// Slow twin of [`rope_interleaved`]: the angle computed from the formula per element, in f64.
pub fn rope_interleaved_slow(x: &mut [f32], n_heads: usize, head_dim: usize, positions: &[usize], theta: f32) {
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for m in 0..head_dim / 2 {
                let inv = 1.0 / (theta as f64).powf(2.0 * m as f64 / head_dim as f64);
                let angle = pos as f64 * inv;
                let (a, b) = (x[base + 2 * m] as f64, x[base + 2 * m + 1] as f64);
                x[base + 2 * m] = (a * angle.cos() - b * angle.sin()) as f32;
                x[base + 2 * m + 1] = (b * angle.cos() + a * angle.sin()) as f32;
            }
        }
    }
}

#[cfg(test)]
mod real_position_tests {
    use super::*;

    const SECTION: MropeSection = MropeSection { hw_pairs: 4, t_pairs: 4 };

    fn input(t: usize) -> Vec<f32> {
        (0..t * 2 * 16).map(|i| ((i * 29 % 31) as f32 - 15.0) / 9.0).collect()
    }

    #[test]
    fn integer_real_positions_match_the_table_bit_for_bit() {
        let table = RopeTable::with_mrope(16, 1000.0, 64, SECTION);
        let ints: Vec<[u32; 3]> = vec![[0, 0, 0], [5, 7, 9], [17, 3, 40], [63, 62, 61]];
        let reals: Vec<[f32; 3]> = ints.iter().map(|p| p.map(|c| c as f32)).collect();
        let (mut a, mut b) = (input(4), input(4));
        rope_apply(&mut a, 2, RopePositions::ThreeD(&ints), &table).unwrap();
        rope_apply(&mut b, 2, RopePositions::Real(&reals), &table).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn real_positions_match_the_slow_twin() {
        // f32 angles and f32 cos/sin vs. f64 throughout: a few ulps at these angles.
        const TOL: f32 = 1e-5;
        let table = RopeTable::with_mrope(16, 1000.0, 8, SECTION);
        let reals = [[3.0f32, 3.5, 4.25], [3.0, 100.75, 0.5], [0.0, 0.0, 0.0]];
        let (mut a, mut b) = (input(3), input(3));
        rope_apply(&mut a, 2, RopePositions::Real(&reals), &table).unwrap();
        rope_mrope_real_slow(&mut b, 2, 16, &reals, 1000.0, SECTION);
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d < TOL, "max |Δ| {d}");
        // A half-cell shift changes the result (the positions are really used).
        let mut c = input(3);
        rope_apply(&mut c, 2, RopePositions::Real(&[[3.0, 3.0, 4.25], reals[1], reals[2]]), &table).unwrap();
        assert_ne!(a[..32], c[..32]);
    }

    #[test]
    fn bad_real_positions_are_errors() {
        let table = RopeTable::with_mrope(16, 1000.0, 8, SECTION);
        let mut x = input(1);
        assert!(rope_apply(&mut x, 2, RopePositions::Real(&[[f32::NAN, 0.0, 0.0]]), &table).is_err());
        assert!(rope_apply(&mut x, 2, RopePositions::Real(&[[0.0; 3], [0.0; 3]]), &table).is_err());
        let flat = RopeTable::new(16, 1000.0, 8);
        assert!(rope_apply(&mut x, 2, RopePositions::Real(&[[0.0; 3]]), &flat).is_err());
    }
}
