//! Rotary position embedding, interleaved ("GPT-J", llama.cpp `ROPE_TYPE_NORM`) pairing as ERNIE
//! uses it (spec §2.4): pair m rotates lanes (2m, 2m+1) by `pos * theta^(-2m/head_dim)`.
//! Using NeoX half-split pairing here is the classic silent bug; `tests/` has a test that fails
//! under it.

/// Precomputed `cos`/`sin` for positions `0..max_pos`, `[max_pos, head_dim/2]` each, in f32
/// (spec §2.6: tables in f32; the angle `pos * inv_freq` is formed in f32 as transformers does).
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
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
        RopeTable { half, cos, sin }
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
