//! Deterministic inputs, plain-Rust references (written from spec §2.4 / §3.5, not from the
//! kernels) and comparison helpers for the host-emulation tests.

use half::bf16;

// ---- deterministic inputs ----

pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
    pub fn bf16s(&mut self, n: usize, scale: f32) -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f32(self.unit() * scale))
            .collect()
    }
}

/// One shape of the MoE pipeline tests (host emulation and GPU).
pub struct MoeCase {
    pub n_tokens: usize,
    pub top_k: usize,
    pub n_experts: usize,
    pub hidden: usize,
    pub inter: usize,
}

/// The random inputs of a MoE pipeline test; the host-emulation and GPU tests draw the same.
pub struct MoeInputs {
    /// `[T, E]` router logits.
    pub logits: Vec<f32>,
    /// `[E]` correction bias; expert 3 is pushed out so one expert receives no tokens.
    pub bias: Vec<f32>,
    /// `[T, H]`
    pub x: Vec<bf16>,
    /// `[E, 2I, H]`
    pub w_gate_up: Vec<bf16>,
    /// `[E, H, I]`
    pub w_down: Vec<bf16>,
    /// `[T, H]` shared-expert output added by the reduce.
    pub shared: Vec<bf16>,
}

impl MoeInputs {
    pub fn random(case: &MoeCase, seed: u64) -> MoeInputs {
        let MoeCase { n_tokens, n_experts, hidden, inter, .. } = *case;
        let mut rng = XorShift(seed);
        let logits = rng.vec(n_tokens * n_experts, 3.0);
        let mut bias = rng.vec(n_experts, 0.05);
        bias[3] = -1e30; // expert 3 receives no tokens
        let x = rng.bf16s(n_tokens * hidden, 1.0);
        let w_gate_up = rng.bf16s(n_experts * 2 * inter * hidden, 0.2);
        let w_down = rng.bf16s(n_experts * hidden * inter, 0.2);
        let shared = rng.bf16s(n_tokens * hidden, 0.5);
        MoeInputs { logits, bias, x, w_gate_up, w_down, shared }
    }
}

// ---- references ----

/// Reference router (spec §2.4): softmax over all experts, top-k by p + bias with ties to the
/// lower index, unbiased p renormalised by max(sum, norm_min). One function on purpose, so it can
/// be swapped for ernie_runtime's CPU router (same contract: ids [T,k] u32, weights [T,k] f32).
pub fn reference_route(
    logits: &[f32],
    bias: &[f32],
    n_experts: usize,
    top_k: usize,
    norm_min: f32,
) -> (Vec<u32>, Vec<f32>) {
    let (mut ids, mut weights) = (Vec::new(), Vec::new());
    for row in logits.chunks(n_experts) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let p: Vec<f32> = exps.iter().map(|&e| e / sum).collect();
        let score: Vec<f32> = p
            .iter()
            .zip(bias)
            .map(|(&p, &b)| {
                if (p + b).is_nan() {
                    f32::NEG_INFINITY
                } else {
                    p + b
                }
            })
            .collect();
        let mut taken = vec![false; n_experts];
        let mut picked = Vec::new();
        for _ in 0..top_k {
            let mut best: Option<usize> = None;
            for e in (0..n_experts).filter(|&e| !taken[e]) {
                // strict `>`: an equal score never displaces the lower index found first
                if best.is_none_or(|b| score[e] > score[b]) {
                    best = Some(e);
                }
            }
            let e = best.expect("top_k <= n_experts leaves an untaken expert");
            taken[e] = true;
            picked.push(e);
        }
        let denom = picked.iter().map(|&e| p[e]).sum::<f32>().max(norm_min);
        for e in picked {
            ids.push(e as u32);
            weights.push(p[e] / denom);
        }
    }
    (ids, weights)
}

/// Pair ids per expert, ascending.
pub fn pairs_by_expert(topk_ids: &[u32], n_experts: usize) -> Vec<Vec<u32>> {
    let mut groups = vec![Vec::new(); n_experts];
    for (pair, &e) in topk_ids.iter().enumerate() {
        groups[e as usize].push(pair as u32);
    }
    groups
}

/// Checks moe_align output against the per-expert pair sets; order inside an expert is free.
pub fn check_align_parts(
    topk_ids: &[u32],
    n_experts: usize,
    block_m: usize,
    sorted_ids: &[u32],
    expert_ids: &[u32],
    n_padded: u32,
) {
    let n_pairs = topk_ids.len() as u32;
    let groups = pairs_by_expert(topk_ids, n_experts);
    let mut offset = 0usize;
    let mut tiles = Vec::new();
    for (e, group) in groups.iter().enumerate() {
        let padded = group.len().div_ceil(block_m) * block_m;
        let slice = &sorted_ids[offset..offset + padded];
        let mut real: Vec<u32> = slice[..group.len()].to_vec();
        real.sort_unstable();
        assert_eq!(&real, group, "expert {e}: pair ids");
        assert!(
            slice[group.len()..].iter().all(|&s| s == n_pairs),
            "expert {e}: padding"
        );
        tiles.extend(std::iter::repeat_n(e as u32, padded / block_m));
        offset += padded;
    }
    assert_eq!(n_padded as usize, offset, "n_padded");
    assert!(
        sorted_ids[offset..].iter().all(|&s| s == n_pairs),
        "tail padding"
    );
    assert_eq!(&expert_ids[..tiles.len()], &tiles[..], "expert per tile");
    let unused = &expert_ids[tiles.len()..];
    assert!(
        unused.iter().all(|&e| e == n_experts as u32),
        "unused tiles"
    );
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn dot_bf16(a: &[bf16], b: &[bf16]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.to_f32() * y.to_f32()).sum()
}

/// act[p] = bf16(silu(x[t] . Wg[e]) * (x[t] . Wu[e])), W_gate_up [E, 2I, H] gate rows first.
pub fn reference_swiglu(
    x: &[bf16],
    w: &[bf16],
    ids: &[u32],
    top_k: usize,
    hidden: usize,
    inter: usize,
) -> Vec<bf16> {
    let mut act = Vec::with_capacity(ids.len() * inter);
    for (pair, &e) in ids.iter().enumerate() {
        let xr = &x[pair / top_k * hidden..][..hidden];
        let we = &w[e as usize * 2 * inter * hidden..][..2 * inter * hidden];
        for j in 0..inter {
            let g = dot_bf16(xr, &we[j * hidden..][..hidden]);
            let u = dot_bf16(xr, &we[(inter + j) * hidden..][..hidden]);
            act.push(bf16::from_f32(silu(g) * u));
        }
    }
    act
}

/// out[p] = bf16(w[p] * (act[p] . Wd[e])), W_down [E, H, I].
pub fn reference_down(
    act: &[bf16],
    w: &[bf16],
    ids: &[u32],
    weights: &[f32],
    hidden: usize,
    inter: usize,
) -> Vec<bf16> {
    let mut out = Vec::with_capacity(ids.len() * hidden);
    for (pair, &e) in ids.iter().enumerate() {
        let ar = &act[pair * inter..][..inter];
        for h in 0..hidden {
            let wr = &w[(e as usize * hidden + h) * inter..][..inter];
            out.push(bf16::from_f32(weights[pair] * dot_bf16(ar, wr)));
        }
    }
    out
}

/// out[t] = bf16(sum_j slot[t*k + j] (+ shared[t])), f32 sum in slot order.
pub fn reference_reduce(
    slot: &[bf16],
    shared: Option<&[bf16]>,
    n_tokens: usize,
    top_k: usize,
    hidden: usize,
) -> Vec<bf16> {
    let mut out = Vec::with_capacity(n_tokens * hidden);
    for t in 0..n_tokens {
        for h in 0..hidden {
            let mut acc = 0.0f32;
            for j in 0..top_k {
                acc += slot[(t * top_k + j) * hidden + h].to_f32();
            }
            if let Some(s) = shared {
                acc += s[t * hidden + h].to_f32();
            }
            out.push(bf16::from_f32(acc));
        }
    }
    out
}

pub fn assert_close(what: &str, got: &[bf16], want: &[bf16], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f32(), w.to_f32());
        assert!(
            (g - w).abs() <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

/// RMSNorm (spec §2.4): f32 statistics, round to bf16 before the weight multiply, round again.
pub fn reference_rms_norm(x: &[bf16], w: &[bf16], hidden: usize, eps: f32) -> Vec<bf16> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(hidden) {
        let sum_sq: f32 = row.iter().map(|v| v.to_f32() * v.to_f32()).sum();
        let r = 1.0 / (sum_sq / hidden as f32 + eps).sqrt();
        for (v, w) in row.iter().zip(w) {
            let normed = bf16::from_f32(v.to_f32() * r).to_f32();
            out.push(bf16::from_f32(normed * w.to_f32()));
        }
    }
    out
}

/// Interleaved RoPE (spec §2.4), in place; `thw` = None for 1-D positions `[T]`, or
/// Some(n_t_pairs) for ERNIE-VL 3-D positions `[T, 3]` = (t, h, w) (spec §3.5).
pub fn reference_rope(
    x: &mut [bf16],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    theta: f32,
    thw: Option<usize>,
) {
    let n_pairs = head_dim / 2;
    for (row, head) in x.chunks_mut(head_dim).enumerate() {
        let token = row / n_heads;
        for m in 0..n_pairs {
            let pos = match thw {
                None => positions[token],
                // the last n_t_pairs pairs use t; before them even pairs use h, odd pairs w
                Some(f) if m >= n_pairs - f => positions[token * 3],
                Some(_) if m % 2 == 0 => positions[token * 3 + 1],
                Some(_) => positions[token * 3 + 2],
            };
            let inv_freq = (theta as f64).powf(-2.0 * m as f64 / head_dim as f64);
            let (s, c) = (pos as f64 * inv_freq).sin_cos();
            let (s, c) = (s as f32, c as f32);
            let (x0, x1) = (head[2 * m].to_f32(), head[2 * m + 1].to_f32());
            head[2 * m] = bf16::from_f32(x0 * c - x1 * s);
            head[2 * m + 1] = bf16::from_f32(x1 * c + x0 * s);
        }
    }
}

/// Shape of a reference attention call (mirrors AttentionDims without depending on it).
pub struct AttnShape {
    pub n_queries: usize,
    pub kv_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

/// softmax(q k^T * scale + mask) v per head, f32, GQA head h -> kv head h / (n_heads / n_kv).
/// Query i sits at position kv_len - n_queries + i. Caches are `[.., n_kv_heads, head_dim]`.
pub fn reference_attention(
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    s: &AttnShape,
    scale: f32,
) -> Vec<bf16> {
    let d = s.head_dim;
    let mut out = Vec::with_capacity(q.len());
    for i in 0..s.n_queries {
        for h in 0..s.n_heads {
            let g = h / (s.n_heads / s.n_kv_heads);
            let qr = &q[(i * s.n_heads + h) * d..][..d];
            let last = if s.causal {
                s.kv_len - s.n_queries + i
            } else {
                s.kv_len - 1
            };
            let kv_row = |cache: &'_ [bf16], j: usize| -> Vec<f32> {
                cache[(j * s.n_kv_heads + g) * d..][..d]
                    .iter()
                    .map(|x| x.to_f32())
                    .collect()
            };
            let scores: Vec<f32> = (0..=last)
                .map(|j| {
                    scale
                        * qr.iter()
                            .zip(kv_row(k, j))
                            .map(|(a, b)| a.to_f32() * b)
                            .sum::<f32>()
                })
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let p: Vec<f32> = scores.iter().map(|&x| (x - max).exp()).collect();
            let l: f32 = p.iter().sum();
            let mut o = vec![0.0f32; d];
            for (j, pj) in p.iter().enumerate() {
                for (o, vv) in o.iter_mut().zip(kv_row(v, j)) {
                    *o += pj * vv;
                }
            }
            out.extend(o.iter().map(|x| bf16::from_f32(x / l)));
        }
    }
    out
}
