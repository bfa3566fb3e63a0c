//! Decode-time MoE (a few tokens, `t ≤ GEMV_MAX_ROWS`): every active expert of the tokens and the
//! shared MLP in two streaming passes — gate + up of all of them in one [`gemv_batch`], then all
//! the down projections in a second — instead of three rayon passes per expert (16-bit weights
//! through `ops::gemm::gemv_batch`, quantised ones through `ops::quant::qgemv_batch`). Memory-bound:
//! each active weight row is read once, and the activation buffers are reused across calls
//! (per thread), so the steady state allocates only the small job lists.
//!
//! Same numbers as [`MoeBlock::forward`]'s grouped path up to f32 summation order inside the dot
//! products: slots are weighted and summed in slot order, then the shared MLP is added.

use std::cell::RefCell;

use super::experts::group_by_expert;
use super::router::Routing;
use super::MoeBlock;
use crate::nn::linear::add_bias;
use crate::nn::mlp::SwiGlu;
use crate::nn::linear::LinearWeight;
use crate::ops::gemm::{gemv_batch, GemvJob, Kernel, Precision, GEMV_MAX_ROWS};
use crate::ops::quant::{qgemv_batch, QGemvJob};
use crate::ops::silu_mul;
use crate::Result;

/// Reused activation buffers of [`forward_few`] (grown to the largest call, never shrunk).
#[derive(Default)]
struct Scratch {
    /// `[p, h]` the token row of every routed pair, grouped by expert.
    xs: Vec<f32>,
    /// `[p, i]` gate, up and silu(gate)·up of every pair.
    g: Vec<f32>,
    u: Vec<f32>,
    a: Vec<f32>,
    /// `[p, h]` every pair's expert output.
    y: Vec<f32>,
    /// `[t, i_s]` the shared MLP's gate, up, activation; `[t, h]` its output.
    sg: Vec<f32>,
    su: Vec<f32>,
    sa: Vec<f32>,
    sy: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// The gate, up and down weights of a SwiGLU.
fn weights3(m: &SwiGlu) -> [&LinearWeight; 3] {
    [&m.gate.weight, &m.up.weight, &m.down.weight]
}

/// The jobs of one pass, dense and quantised (each kind runs as one parallel pass).
#[derive(Default)]
struct Jobs<'a> {
    dense: Vec<GemvJob<'a>>,
    quant: Vec<QGemvJob<'a>>,
}

impl<'a> Jobs<'a> {
    /// `out[m, n] = x[m, k] · Wᵀ` for `w` `[n, k]`.
    fn push(&mut self, w: &'a LinearWeight, x: &'a [f32], m: usize, n: usize, k: usize, out: &'a mut [f32]) {
        match w {
            LinearWeight::Dense(t) => self.dense.push(GemvJob::new(crate::ops::gemm::WeightRef::of(t), x, m, n, k, out)),
            LinearWeight::Quant(q) => self.quant.push(QGemvJob::new(q, x, m, out)),
        }
    }

    fn run(&self) -> Result<()> {
        gemv_batch(&self.dense, Kernel::detect(Precision::Exact))?;
        qgemv_batch(&self.quant)
    }
}

/// The MoE output `[t, h]` for `x` `[t, h]` routed by `routing`, plus `shared` on every row, in
/// two passes (dense and quantised weights each as one parallel pass within them). `None` when
/// the fast path does not apply (more than `GEMV_MAX_ROWS` rows): the caller runs the grouped path.
///
/// Errors: as [`gemv_batch`] (shapes).
pub(super) fn forward_few(block: &MoeBlock, x: &[f32], routing: &Routing, shared: Option<&SwiGlu>) -> Result<Option<Vec<f32>>> {
    let h = block.hidden();
    let t = x.len() / h.max(1);
    let k = routing.top_k;
    if t == 0 || t > GEMV_MAX_ROWS || t * h != x.len() {
        return Ok(None);
    }
    let groups = group_by_expert(routing, block.experts.len()); // moe_align
    let mut active = Vec::with_capacity(t * k); // (expert, pairs)
    for (e, expert) in block.experts.iter().enumerate() {
        let pairs = &groups.pairs[groups.offsets[e]..groups.offsets[e + 1]];
        if !pairs.is_empty() {
            active.push((weights3(expert), expert, pairs));
        }
    }
    let shared = shared.map(|s| (weights3(s), s));
    let inter = block.experts.first().map_or(0, |e| e.inter);
    if active.iter().any(|(_, e, _)| e.inter != inter || e.hidden != h) {
        return Ok(None);
    }
    let p = t * k; // routed (token, slot) pairs, in expert order below
    let run = |s: &mut Scratch| -> Result<Vec<f32>> {
        let Scratch { xs, g, u, a, y, sg, su, sa, sy } = s;
        let xs = sized(xs, p * h);
        let mut row = 0;
        for (_, _, pairs) in &active {
            for &pr in pairs.iter() {
                let tok = pr as usize / k;
                xs[row * h..(row + 1) * h].copy_from_slice(&x[tok * h..(tok + 1) * h]);
                row += 1;
            }
        }
        let xs: &[f32] = xs;
        let (g, u, a, y) = (sized(g, p * inter), sized(u, p * inter), sized(a, p * inter), sized(y, p * h));
        let si = shared.map_or(0, |(_, s)| s.inter);
        let (sg, su, sa, sy) = (sized(sg, t * si), sized(su, t * si), sized(sa, t * si), sized(sy, t * h));
        // Pass 1: gate and up of every active expert and of the shared MLP.
        {
            let mut jobs = Jobs::default();
            let (mut gr, mut ur, mut xr) = (&mut *g, &mut *u, xs);
            for ([wg, wu, _], _, pairs) in &active {
                let m = pairs.len();
                let (gi, gn) = std::mem::take(&mut gr).split_at_mut(m * inter);
                let (ui, un) = std::mem::take(&mut ur).split_at_mut(m * inter);
                let (xi, xn) = xr.split_at(m * h);
                (gr, ur, xr) = (gn, un, xn);
                jobs.push(wg, xi, m, inter, h, gi);
                jobs.push(wu, xi, m, inter, h, ui);
            }
            if let Some(([wg, wu, _], s)) = shared {
                jobs.push(wg, x, t, s.inter, h, &mut *sg);
                jobs.push(wu, x, t, s.inter, h, &mut *su);
            }
            jobs.run()?;
        }
        let mut row = 0;
        for (_, e, pairs) in &active {
            let r = row * inter..(row + pairs.len()) * inter;
            add_bias(&mut g[r.clone()], e.gate.bias.as_deref());
            add_bias(&mut u[r.clone()], e.up.bias.as_deref());
            row += pairs.len();
        }
        silu_mul(g, u, a);
        if let Some((_, s)) = shared {
            add_bias(sg, s.gate.bias.as_deref());
            add_bias(su, s.up.bias.as_deref());
            silu_mul(sg, su, sa);
        }
        // Pass 2: every down projection.
        {
            let mut jobs = Jobs::default();
            let (mut yr, mut ar) = (&mut *y, &*a);
            for ([_, _, wd], _, pairs) in &active {
                let m = pairs.len();
                let (yi, yn) = std::mem::take(&mut yr).split_at_mut(m * h);
                let (ai, an) = ar.split_at(m * inter);
                (yr, ar) = (yn, an);
                jobs.push(wd, ai, m, h, inter, yi);
            }
            if let Some(([_, _, wd], s)) = shared {
                jobs.push(wd, &*sa, t, h, s.inter, &mut *sy);
            }
            jobs.run()?;
        }
        // moe_reduce, in slot order per token as the grouped path. `groups.pairs` lists the pairs
        // in expert order with no gaps, so the pair at position `r` there owns row `r` of `y`.
        let mut row = 0;
        for (_, e, pairs) in &active {
            add_bias(&mut y[row * h..(row + pairs.len()) * h], e.down.bias.as_deref());
            row += pairs.len();
        }
        let mut row_of = vec![0usize; p]; // [t, k]
        for (r, &pr) in groups.pairs.iter().enumerate() {
            row_of[pr as usize] = r;
        }
        let mut out = vec![0.0f32; t * h]; // [t, h]
        for (pr, &r) in row_of.iter().enumerate() {
            let (tok, wgt) = (pr / k, routing.weights[pr]);
            out[tok * h..(tok + 1) * h].iter_mut().zip(&y[r * h..(r + 1) * h]).for_each(|(o, v)| *o += v * wgt);
        }
        if let Some((_, s)) = shared {
            add_bias(sy, s.down.bias.as_deref());
            out.iter_mut().zip(sy.iter()).for_each(|(o, v)| *o += v);
        }
        Ok(out)
    };
    let out = SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => run(&mut s),
        Err(_) => run(&mut Scratch::default()), // re-entered on this thread: fresh buffers
    })?;
    Ok(Some(out))
}
